"""The server's Prometheus metrics (``GET /metrics``), one registry per server."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

V2V_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions = Gauge("voicebot_sessions", "Voice sessions running now.", registry=r)
        self.sessions_total = Counter("voicebot_sessions_started", "Voice sessions started.", registry=r)
        self.refusals = Counter("voicebot_refusals", "Connections refused, by reason.", ["reason"], registry=r)
        self.session_ends = Counter("voicebot_session_ends", "Sessions ended, by close code.", ["code"], registry=r)
        self.turns = Counter("voicebot_turns", "User turns finished.", registry=r)
        self.v2v = Histogram("voicebot_voice_to_voice_seconds",
                             "Last voiced user sample to first bot audio sent, per answered turn.",
                             buckets=V2V_BUCKETS, registry=r)
        self.moderation_blocks = Counter("voicebot_moderation_blocks", "Texts moderation blocked, by stage.",
                                         ["stage"], registry=r)
        self.refused_turns = Counter("voicebot_refused_turns", "Turns answered with the persona's refusal.",
                                     registry=r)
        self.dropped_audio = Counter("voicebot_dropped_audio_seconds",
                                     "Received user audio dropped because its session fell behind.", registry=r)
        self.draining = Gauge("voicebot_draining", "1 while the server drains (SIGTERM): new sessions refused.",
                              registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
