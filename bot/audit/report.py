"""A self-contained HTML report of one audit session (``voicebot audit report DIR -o report.html``).

One file, no external resources: inline CSS, one small inline script (guarded by a Content-Security-
Policy hash, so nothing else can run even if a transcript tried to), and every audio clip embedded
as a base64 ``data:`` URI in an ``<audio>`` player (FLAC, as stored; Chromium and Firefox play it).

It shows what ``show`` shows, for a reviewer with a browser: the header (persona, mode, models,
config hash) with the chain status from :func:`bot.audit.verify.verify` (a red banner when
verification failed: the page is still rendered so the damage can be looked at), a session
timeline, then per turn the user/bot audio players, what was heard/generated/spoken, moderation
verdicts (blocked text visible and marked), barge-in/refusal markers, stage-latency bars and
errors. All log content is escaped: it is user and model text.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bot.audit.chain import sha256_bytes
from bot.audit.read import STAGED, Session, TurnView, blocked, ms_text, num, read_session, verdict_summary
from bot.audit.verify import VerifyResult, verify
from bot.redact import redact_text

LATENCY_BARS = (("stt_ms", "STT"), ("moderation_input_ms", "input moderation"), ("llm_ttft_ms", "LLM first token"),
                ("moderation_output_ms", "output moderation"), ("tts_ttfa_ms", "TTS first audio"),
                ("v2v_ms", "voice-to-voice"))
"""Stage latencies drawn as bars (``timings`` keys); moderation bars only when the log has them."""
MODEL_ORDER = ("vad", "stt", "llm", "tts", "moderation")
MAX_EMBED_BYTES = 64 * 1024 * 1024
"""Audio files larger than this are not embedded (the page would not open); the file name is shown."""
MIME = {".flac": "audio/flac", ".wav": "audio/wav", ".ogg": "audio/ogg", ".mp3": "audio/mpeg", ".opus": "audio/ogg"}

SCRIPT = """'use strict';
document.querySelectorAll('audio[data-clip]').forEach(function (a) {
  var label = a.parentElement.querySelector('.clip-state');
  function ok() {
    a.dataset.state = 'ok';
    if (label) { label.textContent = isFinite(a.duration) ? a.duration.toFixed(2) + ' s' : 'ready'; }
  }
  function bad() {
    a.dataset.state = 'error';
    if (label) { label.textContent = 'this browser cannot play this clip'; label.classList.add('bad'); }
  }
  a.addEventListener('loadedmetadata', ok);
  a.addEventListener('error', bad);
  if (a.readyState >= 1) { ok(); }
});
document.documentElement.dataset.ready = 'yes';
"""
SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
CSP = ("default-src 'none'; style-src 'unsafe-inline'; media-src data:; img-src data:; "
       f"script-src 'sha256-{SCRIPT_HASH}'")

CSS = """
:root { --fg:#1d2330; --muted:#5f6b7a; --line:#d9dee5; --bg:#f6f7f9; --card:#fff; --user:#2f6fd6;
        --bot:#1f9d63; --bad:#c62828; --warn:#b26a00; --okbg:#e7f6ee; --badbg:#fdecec; --warnbg:#fff4e0; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg); background:var(--bg); }
main { max-width:1180px; margin:0 auto; padding:20px 24px 60px; }
h1 { font-size:20px; margin:0 0 4px; } h2 { font-size:16px; margin:28px 0 10px; }
code, .mono { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12.5px; }
.muted { color:var(--muted); }
.banner { border-radius:8px; padding:12px 16px; margin:14px 0; font-weight:600; border:1px solid; }
.banner ul { margin:6px 0 0 18px; padding:0; font-weight:400; }
.banner.ok { background:var(--okbg); border-color:#9fd5b8; color:#145c39; }
.banner.warn { background:var(--warnbg); border-color:#f0c27a; color:#7a4a00; }
.banner.fail { background:var(--bad); border-color:#8e1c1c; color:#fff; font-size:16px; }
table.meta { border-collapse:collapse; background:var(--card); border:1px solid var(--line); border-radius:8px; width:100%; }
table.meta th { text-align:left; width:150px; color:var(--muted); font-weight:500; vertical-align:top; }
table.meta th, table.meta td { padding:5px 12px; border-bottom:1px solid var(--line); }
table.meta tr:last-child th, table.meta tr:last-child td { border-bottom:0; }
details { margin:8px 0; } summary { cursor:pointer; color:var(--muted); }
pre { background:#0f1420; color:#e6edf3; padding:10px 12px; border-radius:6px; overflow:auto; max-height:420px; white-space:pre-wrap; word-break:break-word; }
.stats span { margin-right:14px; }
.timeline { position:relative; height:46px; background:var(--card); border:1px solid var(--line); border-radius:8px; overflow:hidden; }
.timeline .lane { position:absolute; left:0; right:0; height:16px; }
.timeline .lane.u { top:6px; } .timeline .lane.b { top:25px; }
.seg { position:absolute; height:14px; border-radius:3px; min-width:2px; color:#fff; font-size:10px; line-height:14px; padding-left:3px; overflow:hidden; text-decoration:none; }
.seg.user { background:var(--user); } .seg.bot { background:var(--bot); } .seg.flag { outline:2px solid var(--bad); }
.legend { font-size:12px; color:var(--muted); margin:4px 0 0; }
.legend i { display:inline-block; width:10px; height:10px; border-radius:2px; margin:0 4px 0 10px; vertical-align:-1px; }
.turn { background:var(--card); border:1px solid var(--line); border-radius:10px; margin:14px 0; padding:12px 16px 14px; }
.turn.flagged { border-left:5px solid var(--bad); }
.turn.incomplete { border-style:dashed; }
.turn h3 { margin:0 0 8px; font-size:15px; display:flex; flex-wrap:wrap; gap:6px; align-items:center; }
.badge { display:inline-block; font-size:11px; font-weight:700; letter-spacing:.02em; padding:2px 7px; border-radius:10px; text-transform:uppercase; }
.badge.blocked, .badge.refused, .badge.errors { background:var(--bad); color:#fff; }
.badge.interrupted, .badge.incomplete { background:var(--warn); color:#fff; }
.badge.bot-initiated, .badge.speaker, .badge.modality { background:#e3e8ef; color:var(--fg); }
.row { display:grid; grid-template-columns:120px 1fr; gap:4px 12px; margin:5px 0; }
.row > .k { color:var(--muted); }
.said { white-space:pre-wrap; word-break:break-word; }
ol.gen { margin:0; padding-left:20px; }
ol.gen li.blocked { background:var(--badbg); border-left:4px solid var(--bad); padding:2px 6px; margin:2px 0; list-style-position:inside; }
.flag-label { color:var(--bad); font-weight:700; font-size:12px; margin-left:6px; }
.verdict.blocked { color:var(--bad); font-weight:600; }
.players { display:flex; flex-wrap:wrap; gap:14px; margin:8px 0; }
.player { border:1px solid var(--line); border-radius:8px; padding:6px 10px; min-width:300px; }
.player .who { font-weight:600; font-size:12px; } .player .who.user { color:var(--user); } .player .who.bot { color:var(--bot); }
.player audio { display:block; width:100%; height:34px; margin-top:4px; }
.clip-state { font-size:11px; color:var(--muted); } .clip-state.bad, .warn-text { color:var(--bad); font-weight:600; }
.mini { position:relative; height:28px; background:#f0f2f5; border-radius:6px; margin:6px 0; }
.mini .seg { top:7px; }
.bars { display:grid; grid-template-columns:150px 1fr 80px; gap:3px 10px; align-items:center; max-width:720px; margin:6px 0; }
.bar { height:12px; background:#eef1f5; border-radius:3px; overflow:hidden; }
.bar > div { height:100%; border-radius:3px; background:#6b7fd7; }
.bar.v2v > div { background:#a45bd1; }
.bars .v { text-align:right; font-variant-numeric:tabular-nums; }
ul.errors { margin:4px 0; padding-left:18px; color:var(--bad); }
table.events { border-collapse:collapse; width:100%; font-size:12.5px; }
table.events td { border-top:1px solid var(--line); padding:3px 6px; vertical-align:top; }
footer { margin-top:36px; color:var(--muted); font-size:12px; }
"""


class _AudioBudget:
    """How many more bytes of audio the page may embed (None: no limit but :data:`MAX_EMBED_BYTES` a file)."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit

    def take(self, size: int) -> bool:
        if self.left is None:
            return True
        if size > self.left:
            self.left = 0  # later (smaller) clips are left out too: the page embeds a prefix of the session
            return False
        self.left -= size
        return True


def report_html(session_dir: str | Path, *, audio: bool = True, max_audio_bytes: int | None = None) -> str:
    """The report as one HTML string. ``audio=False`` leaves the clips out (players are not shown);
    ``max_audio_bytes`` bounds the audio embedded in all (later clips are named, not embedded), so the page
    and the time to build it stay bounded however long the session was."""
    session = read_session(session_dir)
    result = verify(session_dir)
    views = session.views()
    body: list[str] = []
    _header(body, session, result, views)
    _session_timeline(body, views)
    scale = max([v for view in views for k, _ in LATENCY_BARS if (v := num(view.timings.get(k))) is not None]
                + [1.0])
    body.append('<h2>Turns</h2>' if views else '<h2>Turns</h2><p class="muted">No turns were logged.</p>')
    budget = _AudioBudget(max_audio_bytes) if audio else None
    for view in views:
        _turn(body, session, view, scale, budget)
    _session_events(body, session)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    body.append(f'<footer>Generated by voicebot from <code>{_e(session.dir.name)}/events.jsonl</code> at '
                f'{_e(generated)}. Transcripts and audio in this page are personal data: share it like '
                f'the audit log itself.</footer>')
    title = f"voicebot audit report · {session.dir.name}"
    head = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>")
    tail = f"</main>\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    # One join: the page can be tens of MB (embedded audio) and every concatenation copies all of it
    # (holding the GIL: /report builds it in a worker thread next to the live sessions' event loop).
    return "\n".join([head, *body, tail])


def write_report(session_dir: str | Path, output: str | Path, *, audio: bool = True) -> Path:
    """Write the report to ``output`` (mode 0600: it holds transcripts and audio). Returns the path."""
    text = report_html(session_dir, audio=audio)
    out = Path(output)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(out, 0o600)
    return out


# --------------------------------------------------------------------------- header


def _header(out: list[str], s: Session, result: VerifyResult, views: list[TurnView]) -> None:
    h = s.header
    out.append(f"<h1>Audit session <span class=\"mono\">{_e(s.dir.name)}</span></h1>")
    out.append(_chain_banner(result))
    rows: list[tuple[str, str]] = []
    start = s.records[0] if s.records and s.records[0].get("type") == "session.start" else None
    if start:
        rows.append(("started", _e(start.get("time", "?"))))
    if s.end is not None:
        rows.append(("ended", _e(f"{s.end.get('reason', '?')} · {s.end.get('turns', '?')} turns · "
                                 f"{s.end.get('errors', '?')} errors")))
    else:
        rows.append(("ended", '<span class="warn-text">NOT ENDED (the session was killed or crashed)</span>'))
    persona = h.get("persona")
    if isinstance(persona, dict):
        text = _e(persona.get("name", "?"))
        if persona.get("sha256"):
            text += f' <span class="muted mono">sha256 {_e(str(persona["sha256"])[:16])}</span>'
        if persona.get("source"):
            text += f' <span class="muted">({_e(persona["source"])})</span>'
        rows.append(("persona", text))
    elif persona:
        rows.append(("persona", _e(persona)))
    rows.append(("mode", _e(h.get("mode", "?"))))
    models = h.get("models")
    if isinstance(models, dict) and models:
        keys = [k for k in MODEL_ORDER if k in models] + [k for k in models if k not in MODEL_ORDER]
        rows.append(("models", "<br>".join(f"<b>{_e(k)}</b>: {_e(_plain(models[k]))}" for k in keys)))
    elif models:
        rows.append(("models", _e(_plain(models))))
    if h.get("config_hash"):
        rows.append(("config hash", f'<span class="mono">{_e(h["config_hash"])}</span>'))
    if h.get("replay_of"):
        origin = _e(h.get("replay_of_dir") or h["replay_of"])
        if h.get("replay_of_head"):
            origin += f' <span class="muted mono">head {_e(str(h["replay_of_head"])[:16])}</span>'
        if h.get("replay_of_verified") is False:
            origin += ' <span class="warn-text">the original FAILED verification (replayed with --force)</span>'
        rows.append(("replay of", origin))
    version = h.get("voicebot_version") or h.get("version")
    rows.append(("versions", _e(f"voicebot {version or '?'} · schema {h.get('schema_version', '?')}")))
    rows.append(("audio", "stored" if h.get("store_audio", True) else "not stored (store_audio = false)"))
    if result.head:
        rows.append(("head hash", f'<span class="mono">{_e(result.head)}</span> '
                                  '<span class="muted">(keep it elsewhere to detect later truncation)</span>'))
    if s.bad_lines:
        rows.append(("unreadable", '<span class="warn-text">lines ' + _e(", ".join(map(str, s.bad_lines[:20])))
                     + "</span>"))
    out.append('<table class="meta">' + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>")
    config = h.get("config")
    if config is not None:
        out.append("<details><summary>effective configuration (secrets masked)</summary><pre>"
                   + _e(json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True)) + "</pre></details>")

    counts = {
        "turns": len(views),
        "interrupted": sum(v.interrupted for v in views),
        "refused": sum(v.refused for v in views),
        "blocked": sum(v.input_blocked or v.output_blocked for v in views),
        "with errors": sum(bool(v.errors) for v in views),
        "incomplete": sum(not v.complete for v in views),
    }
    out.append('<p class="stats" id="stats">' + "".join(f'<span data-count="{_e(k)}"><b>{n}</b> {_e(k)}</span>'
                                                        for k, n in counts.items()) + "</p>")


def _chain_banner(result: VerifyResult) -> str:
    if not result.ok:
        items = "".join(f"<li>{_e(p)}</li>" for p in result.problems[:10])
        more = f"<li>… {len(result.problems) - 10} more</li>" if len(result.problems) > 10 else ""
        return ('<div class="banner fail" id="chain" data-chain="failed" role="alert">VERIFICATION FAILED: this '
                "audit log was modified or damaged after it was written. Do not trust what follows; it is "
                f"shown so the damage can be inspected.<ul>{items}{more}</ul></div>")
    counts = f"{result.records} records, {result.turns} turns, {result.audio_files} audio files verified"
    if result.warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in result.warnings)
        return (f'<div class="banner warn" id="chain" data-chain="ok">Chain OK: {_e(counts)}, with warnings:'
                f"<ul>{items}</ul></div>")
    return f'<div class="banner ok" id="chain" data-chain="ok">Chain OK: {_e(counts)}.</div>'


# --------------------------------------------------------------------------- timelines


def _spans(v: TurnView) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    user = (v.start_s, v.end_s) if v.start_s is not None and v.end_s is not None else None
    b0, b1 = v.bot_span
    bot = (b0, b1 if b1 is not None else b0) if b0 is not None else None
    return user, bot


def _flagged(v: TurnView) -> bool:
    return v.input_blocked or v.output_blocked or v.refused or bool(v.errors)


def _session_timeline(out: list[str], views: list[TurnView]) -> None:
    spans = [(v, *_spans(v)) for v in views]
    end = max([x for _, u, b in spans for span in (u, b) if span for x in span] + [0.0])
    if end <= 0:
        return
    lanes = {"u": [], "b": []}
    for v, user, bot in spans:
        for lane, span, cls in (("u", user, "user"), ("b", bot, "bot")):
            if span is None:
                continue
            left, width = 100 * span[0] / end, max(100 * (span[1] - span[0]) / end, 0.3)
            flag = " flag" if _flagged(v) else ""
            lanes[lane].append(f'<a class="seg {cls}{flag}" href="#turn-{v.number}" style="left:{left:.3f}%;'
                               f'width:{width:.3f}%" title="turn {v.number} {cls}: {span[0]:.2f}–{span[1]:.2f} s">'
                               f"{v.number}</a>")
    out.append("<h2>Session timeline</h2>")
    out.append('<div class="timeline" id="timeline"><div class="lane u">' + "".join(lanes["u"])
               + '</div><div class="lane b">' + "".join(lanes["b"]) + "</div></div>")
    out.append(f'<p class="legend"><i style="background:var(--user)"></i>user speaking<i '
               f'style="background:var(--bot)"></i>bot speaking<i style="outline:2px solid var(--bad)"></i>'
               f"blocked, refused or errors · 0 – {end:.1f} s on the session clock</p>")


def _mini_timeline(v: TurnView) -> str:
    user, bot = _spans(v)
    points = [x for span in (user, bot) if span for x in span]
    if not points:
        return ""
    lo, hi = min(points), max(points)
    width = max(hi - lo, 0.001)
    segs = []
    for span, cls, label in ((user, "user", "user"), (bot, "bot", "bot")):
        if span:
            left, w = 100 * (span[0] - lo) / width, max(100 * (span[1] - span[0]) / width, 0.5)
            segs.append(f'<div class="seg {cls}" style="left:{left:.2f}%;width:{w:.2f}%" '
                        f'title="{label} {span[0]:.2f}–{span[1]:.2f} s">{label} {span[0]:.2f}–{span[1]:.2f} s</div>')
    return f'<div class="mini" title="{lo:.2f}–{hi:.2f} s on the session clock">' + "".join(segs) + "</div>"


# --------------------------------------------------------------------------- turns


def _turn(out: list[str], s: Session, v: TurnView, scale: float, audio: _AudioBudget | None) -> None:
    classes = ["turn"] + (["flagged"] if _flagged(v) else []) + ([] if v.complete else ["incomplete"])
    badges = []
    if v.speaker:
        badges.append(("speaker", v.speaker))
    if not v.bot_initiated and v.complete:
        badges.append(("modality", v.modality))
    if v.bot_initiated:
        badges.append(("bot-initiated", "bot-initiated"))
    if not v.complete:
        badges.append(("incomplete", "incomplete: the session stopped during this turn"))
    if v.input_blocked:
        badges.append(("blocked", "input blocked"))
    if v.output_blocked:
        badges.append(("blocked", "output blocked"))
    if v.refused:
        badges.append(("refused", "refused"))
    if v.interrupted:
        badges.append(("interrupted", "cut at barge-in"))
    if v.errors:
        badges.append(("errors", f"{len(v.errors)} error" + ("s" if len(v.errors) > 1 else "")))
    when = f" · {v.start_s:.2f} – {v.end_s:.2f} s" if v.start_s is not None and v.end_s is not None else ""
    flags = " ".join(c for c, _ in badges if c not in ("speaker", "modality"))
    out.append(f'<section class="{" ".join(classes)}" id="turn-{v.number}" data-turn="{v.number}" '
               f'data-flags="{_e(flags)}">')
    out.append(f"<h3>Turn {v.number}<span class=\"muted\">{_e(when)}</span> "
               + " ".join(f'<span class="badge {c}">{_e(t)}</span>' for c, t in badges) + "</h3>")
    out.append(_mini_timeline(v))

    if audio is not None:
        players = []
        for who, ref in (("user", v.user_audio), ("bot", v.bot_audio)):
            if ref is not None:
                players.append(_player(s, who, ref, audio))
        if players:
            out.append('<div class="players">' + "".join(players) + "</div>")

    rows: list[tuple[str, str]] = []
    if v.heard is not None or v.user is not None or not v.complete:
        heard = _said(v.heard, "heard")
        if v.input_blocked:
            heard += '<span class="flag-label">BLOCKED by input moderation</span>'
        rows.append(("heard", heard))
        rows.append(("input check", _verdict(v.input_verdict)))
    blocked_texts = v.blocked_texts
    if v.generated:
        items = []
        for g in v.generated:
            if g in blocked_texts:
                items.append(f'<li class="blocked"><span class="said">{_e(g)}</span>'
                             '<span class="flag-label">BLOCKED by output moderation: not spoken</span></li>')
            else:
                items.append(f'<li><span class="said">{_e(g)}</span></li>')
        rows.append(("generated", '<ol class="gen">' + "".join(items) + "</ol>"))
    else:
        rows.append(("generated", '<span class="muted">(nothing)</span>'))
    if v.output_verdicts:
        vs = []
        for i, (text, verdict) in enumerate(zip(v.verdict_texts, v.output_verdicts), 1):
            on = f' on <q class="said">{_e(text)}</q>' if text and blocked(verdict) else ""
            vs.append(f"<li>{_verdict(verdict)}{on}</li>")
        rows.append(("output checks", '<ol class="gen">' + "".join(vs) + "</ol>"))
    else:
        rows.append(("output checks", '<span class="muted">not checked</span>'))
    spoken = (_said(v.spoken, "spoken") if v.spoken is not None
              else '<span class="muted">(unknown: the turn did not finish)</span>')
    if v.interrupted:
        spoken += '<span class="flag-label">cut at barge-in</span>'
    rows.append(("spoken", spoken))
    if v.refused:
        rows.append(("refused", '<span class="warn-text">yes: the persona\'s refusal was spoken instead</span>'))
    out.append("".join(f'<div class="row"><div class="k">{k}</div><div>{val}</div></div>' for k, val in rows))

    bars = []
    for key, label in LATENCY_BARS:
        if key not in v.timings and key.startswith("moderation"):
            continue
        value = num(v.timings.get(key))
        cls = "bar v2v" if key == "v2v_ms" else "bar"
        fill = f'<div style="width:{min(100.0, 100 * value / scale):.2f}%"></div>' if value is not None else ""
        text = _ms(value) if value is not None else "—"
        bars.append(f'<div>{_e(label)}</div><div class="{cls}" data-timing="{_e(key)}">{fill}</div>'
                    f'<div class="v">{_e(text)}</div>')
    out.append('<div class="bars">' + "".join(bars) + "</div>")
    others = {k: val for k, val in v.timings.items() if k not in dict(LATENCY_BARS)}
    if others:
        out.append('<div class="muted">' + _e(" · ".join(
            f"{k[:-3] if k.endswith('_ms') else k} {_ms(x) if k.endswith('_ms') and num(x) is not None else x}"
            for k, x in others.items())) + "</div>")
    if v.errors:
        out.append('<ul class="errors">' + "".join(f"<li>{_e(err)}</li>" for err in v.errors) + "</ul>")
    extra = v.extra_events
    if extra:
        out.append('<div class="row"><div class="k">other records</div><div>' + _events_table(extra) + "</div></div>")
    staged = [r for r in v.events if r.get("type") in STAGED]
    if staged:
        out.append(f"<details><summary>{len(staged)} staged events</summary>{_events_table(staged)}</details>")
    out.append("</section>")


def _player(s: Session, who: str, ref: dict[str, Any], budget: _AudioBudget) -> str:
    name = str(ref.get("file", "?"))
    head = f'<div class="who {who}">{who} audio <span class="muted mono">{_e(name)}</span></div>'
    root = s.dir.resolve()
    try:
        path = (s.dir / name).resolve()
        inside = path.is_relative_to(root)
    except (OSError, ValueError):
        inside = False
    if not inside:
        return f'<div class="player">{head}<span class="warn-text">refers outside the session folder: not embedded</span></div>'
    if not path.is_file():
        if name in s.forgotten_audio():
            return f'<div class="player">{head}<span class="muted">deleted on request (privacy.forget)</span></div>'
        return f'<div class="player">{head}<span class="warn-text">file missing</span></div>'
    size = path.stat().st_size
    if size > MAX_EMBED_BYTES:
        return f'<div class="player">{head}<span class="muted">{size // 1048576} MB: too large to embed</span></div>'
    if not budget.take(size):
        return (f'<div class="player">{head}<span class="muted">not embedded: this page\'s audio limit is used up '
                f'(<code>voicebot audit report</code> writes the whole report)</span></div>')
    blob = path.read_bytes()
    note = ""
    if ref.get("sha256") != sha256_bytes(blob):
        note = '<div class="warn-text">this file does NOT match the SHA-256 in the log</div>'
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    src = f"data:{mime};base64,{base64.b64encode(blob).decode('ascii')}"
    return (f'<div class="player">{head}<audio controls preload="metadata" data-clip="{who}" src="{src}"></audio>'
            f'<span class="clip-state">loading…</span>{note}</div>')


# --------------------------------------------------------------------------- session-level records


def _session_events(out: list[str], s: Session) -> None:
    errors = [r for r in s.other if r.get("type") == "error"]
    rest = [r for r in s.other if r.get("type") not in STAGED and r.get("type") != "error"]
    if errors:
        out.append("<h2>Session errors</h2>")
        out.append('<ul class="errors" id="session-errors">' + "".join(
            f"<li>{_e(r['data'].get('stage', '?'))}: {_e(r['data'].get('message', ''))}</li>" for r in errors)
            + "</ul>")
    if rest:
        out.append("<h2>Other session records</h2>")
        out.append(_events_table(rest))


def _events_table(records: list[dict[str, Any]]) -> str:
    rows = []
    for r in records:
        t = num(r.get("t"))
        rows.append(f'<tr><td class="mono">{"+%.3fs" % t if t is not None else "+?"}</td>'
                    f'<td class="mono">{_e(r.get("type"))}</td>'
                    f'<td class="mono">{_e(json.dumps(r.get("data"), ensure_ascii=False, sort_keys=True))}</td></tr>')
    return '<table class="events">' + "".join(rows) + "</table>"


# --------------------------------------------------------------------------- formatting


def _e(value: Any) -> str:
    """Escaped for HTML, secrets masked (a log written before masking covered it still shows none)."""
    return html.escape(redact_text(str(value)), quote=True)


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _said(text: Any, what: str) -> str:
    if text is None:
        return '<span class="muted">(none)</span>'
    if text == "":
        return f'<span class="muted">(nothing {what})</span>'
    return f'<q class="said">{_e(text)}</q>'


_ms = ms_text


def _verdict(v: Any) -> str:
    if not isinstance(v, dict):
        return '<span class="muted">not checked</span>'
    head, parts = verdict_summary(v, _plain)
    cls = "verdict blocked" if v.get("allowed") is False else "verdict"
    return f'<span class="{cls}">{_e(head)}</span>' + (f" ({_e(', '.join(parts))})" if parts else "")
