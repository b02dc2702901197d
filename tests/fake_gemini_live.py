"""A local stand-in for Gemini's Live API (``BidiGenerateContent`` over a websocket), for tests.

``FakeGeminiLive`` listens on 127.0.0.1 (random port) at
``wss://127.0.0.1:PORT/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent`` — what
``google-genai``'s ``client.aio.live.connect`` opens for ``http_options.base_url = https://127.0.0.1:PORT`` (the
SDK always uses TLS with an API key, so the fake serves a certificate it makes for itself; the client trusts it
through ``SSL_CERT_FILE``, which the SDK reads). It speaks the Live API's
JSON messages (camelCase, base64 audio) as read from python-genai's ``live.py`` and ``types.py``:

* the first client message must be ``setup``; it is answered with ``setupComplete``;
* ``realtimeInput.audio`` (16 kHz pcm16) goes through an energy-based **automatic activity detection**
  using the setup's ``silenceDurationMs``; at the end of the user's speech the scenario's transcript for
  that turn comes as ``serverContent.inputTranscription`` pieces, then the model turn: Piper speech of the
  reply as ``serverContent.modelTurn`` audio parts (24 kHz) and ``serverContent.outputTranscription``
  pieces — **deliberately not ordered with the audio** (``transcript="lag"``: each word's text comes
  ``lag_secs`` after its audio, as Gemini's transcription may), then ``generationComplete`` and
  ``turnComplete``;
* speech heard while the model answers interrupts it (``interrupted``, then ``turnComplete``);
* ``clientContent`` is recorded.

Every client message is validated with the SDK's own ``types.LiveClientMessage`` (unknown fields are errors
there) and every message the fake sends with ``types.LiveServerMessage``; problems go to ``problems``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.genai import types
from pydantic import ValidationError

from fake_realtime import _Audio, synthesize_reply

PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
IN_RATE = 16000
VAD_FRAME = 320  # 20 ms at 16 kHz


@dataclass
class GeminiReply:
    text: str
    speed: float = 3.0
    """Audio is streamed this many times faster than real time."""
    first_delta_secs: float = 0.2
    transcript: str = "lag"
    """lag: each word's transcript ``lag_secs`` after its audio; none: no output transcription at all."""
    lag_secs: float = 0.3


@dataclass
class GeminiScenario:
    transcripts: list[str] = field(default_factory=list)
    replies: list[GeminiReply] = field(default_factory=list)
    vad_threshold: float = 0.01


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert.pem, key.pem), made with ``cryptography``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def field_of(message: Any, *path: str) -> Any:
    """A field of a JSON message by its camelCase path; protobuf JSON (what the server parses) accepts the
    snake_case spelling too, and the SDK sends nested config that way."""
    import re

    for name in path:
        if not isinstance(message, dict):
            return None
        snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)
        message = message.get(name, message.get(snake))
    return message


class FakeGeminiLive:
    def __init__(self, scenario: GeminiScenario, certificate: tuple[Path, Path]) -> None:
        self.scenario = scenario
        self.certificate = certificate
        self.problems: list[str] = []
        self.setups: list[dict[str, Any]] = []
        self.client_content: list[types.LiveClientContent] = []
        self.audio_chunks = 0
        self.mime_types: set[str] = set()
        self.sent: list[dict[str, Any]] = []
        self.interrupted = 0
        self.base_url = ""
        self._audio: list[_Audio] = []
        self._turn = 0
        self._server = None

    async def __aenter__(self) -> FakeGeminiLive:
        from websockets.asyncio.server import serve

        self._audio = [await asyncio.to_thread(synthesize_reply, r.text) for r in self.scenario.replies]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*map(str, self.certificate))
        self._server = await serve(self._handle, "127.0.0.1", 0, max_size=None, ssl=context)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"https://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._server.close()
        await self._server.wait_closed()

    def reply_audio(self, n: int) -> _Audio:
        return self._audio[n]

    async def _handle(self, ws) -> None:
        await _Connection(self, ws).run()


class _Connection:
    def __init__(self, server: FakeGeminiLive, ws) -> None:
        self.server = server
        self.ws = ws
        self.setup: dict[str, Any] = {}
        self.buffer = bytearray()
        self.speaking = False
        self.voiced_ms = 0
        self.silence_ms = 0
        self.answer: asyncio.Task | None = None

    def problem(self, text: str) -> None:
        self.server.problems.append(text)

    async def send(self, message: dict[str, Any]) -> None:
        raw = json.dumps(message)
        try:
            types.LiveServerMessage.model_validate_json(raw)
        except ValidationError as exc:
            self.problem(f"fake sent an invalid message: {str(exc)[:300]}")
        self.server.sent.append(message)
        await self.ws.send(raw)

    async def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        if self.ws.request.path.split("?")[0] != PATH:
            self.problem(f"connected to {self.ws.request.path}, not {PATH}")
            await self.ws.close(1008, "not found")
            return
        try:
            async for raw in self.ws:
                await self.on_message(raw)
        except ConnectionClosed:
            pass
        finally:
            if self.answer is not None:
                self.answer.cancel()

    def validate(self, raw: str | bytes) -> Any:
        """The message as the SDK's ``LiveClientMessage``. The SDK sends ``setup.realtimeInputConfig`` (its
        converter copies ``LiveConnectConfig.realtime_input_config`` there) although its ``LiveClientSetup`` type
        lacks the field: that part is validated as ``types.RealtimeInputConfig`` instead."""
        data = json.loads(raw)
        setup = data.get("setup")
        if isinstance(setup, dict) and "realtimeInputConfig" in setup:
            rest = {**data, "setup": {k: v for k, v in setup.items() if k != "realtimeInputConfig"}}
            types.RealtimeInputConfig.model_validate(setup["realtimeInputConfig"])
            return types.LiveClientMessage.model_validate_json(json.dumps(rest))
        return types.LiveClientMessage.model_validate_json(raw)

    async def on_message(self, raw: str | bytes) -> None:
        try:
            message = self.validate(raw)
        except ValidationError as exc:
            self.problem(f"invalid client message: {str(exc)[:300]}")
            return
        data = json.loads(raw)
        if message.setup is not None:
            if self.setup:
                self.problem("setup sent twice")
            self.setup = data["setup"]
            self.server.setups.append(self.setup)
            await self.send({"setupComplete": {}})
            return
        if not self.setup:
            self.problem(f"message before setup: {sorted(data)}")
            return
        if message.realtime_input is not None and message.realtime_input.audio is not None:
            blob = message.realtime_input.audio
            self.server.mime_types.add(blob.mime_type or "")
            self.server.audio_chunks += 1
            if len(blob.data or b"") % 2:
                self.problem("odd number of audio bytes")
            await self.vad(blob.data or b"")
        elif message.client_content is not None:
            self.server.client_content.append(message.client_content)
        else:
            self.problem(f"unexpected client message {sorted(data)}")

    # -- automatic activity detection --

    async def vad(self, pcm: bytes) -> None:
        self.buffer += pcm
        detection = field_of(self.setup, "realtimeInputConfig", "automaticActivityDetection") or {}
        silence_limit = field_of(detection, "silenceDurationMs") or 500
        while len(self.buffer) >= VAD_FRAME * 2:
            frame = np.frombuffer(bytes(self.buffer[:VAD_FRAME * 2]), dtype="<i2").astype(np.float32) / 32768
            del self.buffer[:VAD_FRAME * 2]
            voiced = float(np.sqrt(np.mean(frame ** 2))) > self.server.scenario.vad_threshold
            if not self.speaking:
                self.voiced_ms = self.voiced_ms + 20 if voiced else 0
                if self.voiced_ms >= 60:
                    self.speaking = True
                    self.silence_ms = 0
                    if self.answer is not None and not self.answer.done():  # the user talks over the model
                        self.answer.cancel()
                        self.server.interrupted += 1
                        await self.send({"serverContent": {"interrupted": True}})
                        await self.send({"serverContent": {"turnComplete": True}})
                continue
            self.silence_ms = 0 if voiced else self.silence_ms + 20
            if self.silence_ms >= silence_limit:
                self.speaking = False
                self.voiced_ms = 0
                self.answer = asyncio.create_task(self.respond())

    async def respond(self) -> None:
        n = self.server._turn
        self.server._turn += 1
        scenario = self.server.scenario
        heard = scenario.transcripts[n] if n < len(scenario.transcripts) else ""
        for i, word in enumerate(heard.split()):
            await self.send({"serverContent": {"inputTranscription": {"text": word if i == 0 else " " + word}}})
        if n >= len(scenario.replies):
            await self.send({"serverContent": {"turnComplete": True}})
            return
        reply, audio = scenario.replies[n], self.server.reply_audio(n)
        await asyncio.sleep(reply.first_delta_secs)
        pending: list[asyncio.Task] = []
        for delta, pcm in audio.words:
            for i in range(0, len(pcm), 4800):
                await self.send({"serverContent": {"modelTurn": {"parts": [{"inlineData": {
                    "mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(pcm[i:i + 4800]).decode()}}]}}})
            if reply.transcript == "lag":
                pending.append(asyncio.create_task(self._later(reply.lag_secs, delta)))
            await asyncio.sleep(len(pcm) / 2 / 24000 / reply.speed)
        await self.send({"serverContent": {"generationComplete": True}})
        if pending:
            await asyncio.gather(*pending)
        await self.send({"serverContent": {"turnComplete": True}})

    async def _later(self, secs: float, text: str) -> None:
        await asyncio.sleep(secs)
        await self.send({"serverContent": {"outputTranscription": {"text": text}}})
