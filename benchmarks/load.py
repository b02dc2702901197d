"""Load benchmark for ``voicebot serve``: N concurrent voice sessions over the real socket.

Starts the real server (``python -m bot.cli serve``, its own process, embedded models unless --set says
otherwise) and, for each N, connects N clients (bot/server/client.py: pipecat's ProtobufFrameSerializer)
at once. Each client streams microphone-like audio in real time: silence, then at a random moment a
synthesized question, waits for the answer to finish, pauses a random while, asks again. Per N it prints:

* voice-to-voice p50/p95: from the last voiced sample of a question leaving the client to the first bot
  audio frame arriving (the client's 100 ms jitter buffer comes on top)
* underruns: gaps inside a bot reply, as a client playing the audio would hear them
* refusals (connections over ``server.max_sessions``), errors (sessions that ended abnormally, questions
  with no answer), the server's peak RSS and its CPU use (% of one core) while the N clients ran, and
  CPU seconds per answer (the capacity model's unit: all the server's CPU over the answers it gave)

    .venv/bin/python benchmarks/load.py                        # N = 1 2 3 4 5, max_sessions 4, 3 questions each
    .venv/bin/python benchmarks/load.py -n 1 4 --questions 4 --set llm.provider=ollama ...
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.audio import resample  # noqa: E402
from bot.server.client import VoiceClient  # noqa: E402
from bot.speech import synthesize  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "How far away is the moon?",
    "Tell me a fun fact about octopuses.",
    "How do I boil an egg?",
    "Why is the sky blue?",
    "Who wrote Romeo and Juliet?",
    "Where do penguins live?",
    "What should I name my new puppy?",
]
FIRST_AUDIO_TIMEOUT_SECS = 30.0
"""A question whose answer has not started within this long counts as an error."""
REPLY_TIMEOUT_SECS = 60.0
"""How long a client lets a started answer play before it asks its next question anyway."""


def speech(text: str) -> np.ndarray:
    audio, rate = synthesize(text)
    audio = resample(audio, rate, 16000).astype(np.float32)
    # Up to the last voiced sample (-45 dBFS in 10 ms frames): voice-to-voice starts there.
    frames = len(audio) // 160
    energy = [float(np.sqrt(np.mean(audio[i * 160:(i + 1) * 160] ** 2)) + 1e-9) for i in range(frames)]
    voiced = [i for i, e in enumerate(energy) if 20 * np.log10(e) > -45]
    return audio[: (voiced[-1] + 1) * 160] if voiced else audio


@dataclass
class ClientResult:
    v2v: list[float] = field(default_factory=list)
    underruns: int = 0
    refused: bool = False
    errors: list[str] = field(default_factory=list)


async def one_client(url: str, questions: list[np.ndarray], rng: random.Random) -> ClientResult:
    result = ClientResult()
    client = VoiceClient(url)
    try:
        await client.connect()
        await client.wait_session(120)
    except RuntimeError as exc:
        result.refused = "1013" in str(exc)
        if not result.refused:
            result.errors.append(str(exc))
        await client.close()
        return result
    try:
        await client.send_silence(rng.uniform(0.5, 3.0))
        for q in questions:
            n = len(client.log.turns())
            await client.send_audio(q)
            spoke_at = client.now()
            deadline = time.monotonic() + FIRST_AUDIO_TIMEOUT_SECS
            while client.log.first_audio_after(spoke_at) is None and time.monotonic() < deadline \
                    and not client.closed.is_set():
                await client.send_silence(0.1)
            first = client.log.first_audio_after(spoke_at)
            if first is None:
                kinds = [m.get("kind") for m in client.log.of_type("event")][-6:]
                result.errors.append(f"no answer within {FIRST_AUDIO_TIMEOUT_SECS:g} s (last events: {kinds})"
                                     if not client.closed.is_set() else
                                     f"closed {client.log.close_code} {client.log.close_reason}")
                break
            result.v2v.append(first - spoke_at)
            deadline = time.monotonic() + REPLY_TIMEOUT_SECS  # let the answer finish (its turn message)
            while len(client.log.turns()) == n and time.monotonic() < deadline and not client.closed.is_set():
                await client.send_silence(0.1)
            turns = client.log.turns()[n:]
            if any(t.get("errors") for t in turns):
                result.errors.append("; ".join(e for t in turns for e in t.get("errors", [])))
            await client.send_silence(rng.uniform(1.0, 3.0))
    finally:
        await client.close()
        result.underruns = len(client.log.underruns)
        if client.log.close_code not in (1000, 1001, None):
            result.errors.append(f"closed {client.log.close_code} {client.log.close_reason}")
    return result


class ServerProcess:
    def __init__(self, max_sessions: int, sets: list[str], audit_dir: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOT_")}
        cmd = [sys.executable, "-m", "bot.cli", "serve", "--port", "0", "--max-sessions", str(max_sessions),
               "--set", f"audit.dir={audit_dir}", "--set", "server.drain_secs=2"]
        for s in sets:
            cmd += ["--set", s]
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.port = 0
        for line in self.proc.stdout:
            m = re.search(r"listening on http://[^:]+:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                break
        if not self.port:
            self.log.seek(0)
            raise SystemExit(f"server did not start: {self.log.read()[-2000:]}")
        self.clk = os.sysconf("SC_CLK_TCK")

    def cpu_secs(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.clk  # utime + stime

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def sessions(self) -> int:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            m = re.search(r"^voicebot_sessions (\S+)$", r.read().decode(), re.M)
        return int(float(m.group(1))) if m else -1

    def wait_idle(self, timeout: float = 60.0) -> float:
        """Sessions of the previous level close in the background: wait for none to run. Returns the wait."""
        t0 = time.monotonic()
        while self.sessions() > 0 and time.monotonic() - t0 < timeout:
            time.sleep(0.2)
        return time.monotonic() - t0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(values, q))


async def run_level(server: ServerProcess, n: int, questions: list[np.ndarray], per_client: int,
                    seed: int) -> dict:
    url = f"ws://127.0.0.1:{server.port}/ws"
    rss_peak = server.rss_mb()
    stop = asyncio.Event()

    async def sample_rss() -> None:
        nonlocal rss_peak
        while not stop.is_set():
            rss_peak = max(rss_peak, server.rss_mb())
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample_rss())
    cpu0, t0 = server.cpu_secs(), time.monotonic()
    jobs = []
    for i in range(n):
        rng = random.Random(seed * 100 + i)
        qs = [questions[rng.randrange(len(questions))] for _ in range(per_client)]
        jobs.append(one_client(url, qs, rng))
    results = await asyncio.gather(*jobs)
    wall = time.monotonic() - t0
    cpu_used = server.cpu_secs() - cpu0
    cpu = cpu_used / wall * 100
    stop.set()
    await sampler
    v2v = [v for r in results for v in r.v2v]
    return {"n": n, "answers": len(v2v), "p50": pct(v2v, 50), "p95": pct(v2v, 95),
            "underruns": sum(r.underruns for r in results), "refusals": sum(r.refused for r in results),
            "errors": sum(len(r.errors) for r in results), "rss": rss_peak, "cpu": cpu, "wall": wall,
            "cpu_per_answer": cpu_used / max(1, len(v2v)),
            "why": sorted({e for r in results for e in r.errors})[:3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, nargs="+", default=[1, 2, 3, 4, 5], help="concurrent sessions to try")
    ap.add_argument("--max-sessions", type=int, default=4)
    ap.add_argument("--questions", type=int, default=3, help="questions per client")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override for the server")
    args = ap.parse_args()
    from loguru import logger

    logger.remove()  # pipecat's serializer logs every message at DEBUG
    logger.add(sys.stderr, level="ERROR")

    print(f"synthesizing {len(QUESTIONS)} questions...", file=sys.stderr)
    questions = [speech(q) for q in QUESTIONS]
    with tempfile.TemporaryDirectory(prefix="voicebot-load-") as audits:
        server = ServerProcess(args.max_sessions, args.sets, audits)
        try:
            print(f"server on port {server.port}, max_sessions={args.max_sessions}, "
                  f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} before the run", file=sys.stderr)
            rows = []
            for n in args.n:
                waited = server.wait_idle()
                if server.sessions() > 0:
                    print(f"N={n}: {server.sessions()} sessions of the previous level still running after "
                          f"{waited:.0f} s", file=sys.stderr)
                row = asyncio.run(run_level(server, n, questions, args.questions, args.seed))
                rows.append(row)
                print(f"N={n} done: {row}", file=sys.stderr)
        finally:
            server.stop()
    base = rows[0]["p50"] if rows else float("nan")
    print("| sessions | answers | v2v p50 ms | v2v p95 ms | p50 / 1 session | underruns | refusals | errors "
          "| server RSS MB | server CPU % | CPU s / answer |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['n']} | {r['answers']} | {r['p50'] * 1000:.0f} | {r['p95'] * 1000:.0f} | "
              f"{r['p50'] / base:.2f}x | {r['underruns']} | {r['refusals']} | {r['errors']} | {r['rss']:.0f} | "
              f"{r['cpu']:.0f} | {r['cpu_per_answer']:.1f} |")
    for r in rows:
        if r["why"]:
            print(f"N={r['n']} errors: {'; '.join(r['why'])}")
    print(f"load average after the run: {os.getloadavg()[0]:.1f} (other processes share these cores)")


if __name__ == "__main__":
    main()
