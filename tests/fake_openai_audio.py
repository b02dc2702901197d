"""A local stand-in for an OpenAI-compatible speech server (speaches, Kokoro-FastAPI, vLLM, OpenAI):
``POST /v1/audio/transcriptions``, ``POST /v1/audio/speech`` and ``GET /v1/models``.

It does the real work with the embedded models (Whisper tiny.en transcribes the uploaded WAV, Piper speaks
the input as 24 kHz PCM), and every request is validated against the ``openai`` package's own parameter
types (``TranscriptionCreateParamsNonStreaming``, ``SpeechCreateParams``); responses are built from its
response models (``Transcription``, ``TranscriptionVerbose``, ``Model``). Requests that do not validate are
answered 400 and kept in ``errors`` so tests fail on them.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import threading
import typing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import soundfile as sf
import soxr
from openai.types import Model
from openai.types.audio import Transcription, TranscriptionVerbose, speech_create_params, transcription_create_params
from pydantic import TypeAdapter, ValidationError

SPEECH_PARAMS = TypeAdapter(speech_create_params.SpeechCreateParams)


def _field_adapters(typed_dict) -> dict[str, TypeAdapter]:
    out = {}
    for name, hint in typing.get_type_hints(typed_dict, include_extras=True).items():
        while typing.get_origin(hint) in (typing.Required, typing.NotRequired, typing.Annotated):
            hint = typing.get_args(hint)[0]
        out[name] = TypeAdapter(hint) if name != "file" else None
    return out


TRANSCRIPTION_FIELDS = _field_adapters(transcription_create_params.TranscriptionCreateParamsNonStreaming)
REQUIRED_TRANSCRIPTION = {"file", "model"}


class FakeOpenAIAudio:
    def __init__(self, transcribe, synthesize, *, api_key: str | None = None) -> None:
        self.transcribe = transcribe   # (float32 16 kHz samples) -> text
        self.synthesize = synthesize   # text -> (float32 samples, rate)
        self.api_key = api_key
        self.transcriptions: list[dict] = []
        self.speeches: list[dict] = []
        self.errors: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if fake.api_key is None or self.headers.get("Authorization") == f"Bearer {fake.api_key}":
                    return True
                self._json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                           "code": "invalid_api_key"}})
                return False

            def _bad(self, message: str) -> None:
                fake.errors.append(message)
                self._json(400, {"error": {"message": message, "type": "invalid_request_error"}})

            def do_GET(self) -> None:
                if not self._authorized():
                    return
                if self.path.rstrip("/") == "/v1/models":
                    models = [Model(id=m, created=0, object="model", owned_by="local").model_dump()
                              for m in ("whisper-1", "gpt-4o-mini-tts")]
                    self._json(200, {"object": "list", "data": models})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                if not self._authorized():
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/audio/transcriptions":
                    self._transcription(body)
                elif self.path == "/v1/audio/speech":
                    self._speech(body)
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def _transcription(self, body: bytes) -> None:
                ctype = self.headers.get("Content-Type", "")
                if not ctype.startswith("multipart/form-data"):
                    return self._bad(f"transcriptions need multipart/form-data, got {ctype!r}")
                msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    f"Content-Type: {ctype}\r\n\r\n".encode() + body)
                fields: dict[str, typing.Any] = {}
                for part in msg.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    payload = part.get_payload(decode=True)
                    if name == "file":
                        fields["file"] = payload
                    elif name.endswith("[]"):
                        fields.setdefault(name[:-2], []).append(payload.decode())
                    else:
                        fields[name] = payload.decode()
                missing = REQUIRED_TRANSCRIPTION - set(fields)
                if missing:
                    return self._bad(f"missing {sorted(missing)}")
                for name, value in fields.items():
                    if name not in TRANSCRIPTION_FIELDS:
                        return self._bad(f"unknown parameter {name!r}")
                    if TRANSCRIPTION_FIELDS[name] is not None:
                        try:
                            TRANSCRIPTION_FIELDS[name].validate_python(value)
                        except ValidationError as exc:
                            return self._bad(f"{name}: {exc.errors()[0]['msg']}")
                try:
                    audio, rate = sf.read(io.BytesIO(fields["file"]), dtype="float32", always_2d=True)
                except Exception as exc:  # noqa: BLE001 - answer like a server would
                    return self._bad(f"file is not audio: {exc}")
                mono = audio.mean(axis=1)
                if rate != 16000:
                    mono = soxr.resample(mono, rate, 16000)
                text = fake.transcribe(mono.astype(np.float32))
                fake.transcriptions.append({**{k: v for k, v in fields.items() if k != "file"},
                                            "rate": rate, "channels": audio.shape[1], "secs": len(audio) / rate,
                                            "text": text})
                fmt = fields.get("response_format", "json")
                if fmt == "verbose_json":
                    out = TranscriptionVerbose(duration=len(mono) / 16000, language="english", text=text)
                else:
                    out = Transcription(text=text)
                self._json(200, out.model_dump(exclude_none=True))

            def _speech(self, body: bytes) -> None:
                try:
                    params = SPEECH_PARAMS.validate_python(json.loads(body))
                except (ValidationError, json.JSONDecodeError) as exc:
                    return self._bad(f"speech request invalid: {exc}")
                if params.get("response_format") != "pcm":
                    return self._bad("this stand-in only streams pcm")
                fake.speeches.append(dict(params))
                samples, rate = fake.synthesize(params["input"])
                pcm = (np.clip(soxr.resample(samples, rate, 24000), -1, 1) * 32767).astype("<i2").tobytes()
                self.send_response(200)
                self.send_header("Content-Type", "audio/pcm")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                step = 24000 * 2 // 10  # 100 ms per chunk, as a streaming server sends it
                for i in range(0, len(pcm), step):
                    chunk = pcm[i:i + step]
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAIAudio:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
