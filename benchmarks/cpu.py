"""LLM first-token latency with 1, 2 and 4 concurrent sessions: the CPU budget of bot/cpu.py, before and after.

Each simulated session repeats what a voice turn costs the CPU, on the embedded models: transcribe a
2-second question (faster-whisper tiny.en, CTranslate2), ask the LLM (SmolLM2-135M, llama.cpp; first token
timed), synthesize the first sentence of the reply (Piper, onnxruntime). Sessions start a little apart so
their turns overlap the way independent users' do.

Policies:

* ``before`` -- what voicebot did before bot/cpu.py's plan and scheduler: every runtime on its library
  default threads (llama.cpp: half the cores; CTranslate2 and onnxruntime: all of them), one llama.cpp
  context behind a plain lock for all sessions of a process, no scheduler.
* ``after`` -- ``bot.cpu.set_sessions(N)``: threads from :func:`bot.cpu.thread_plan`, the real
  ``LlamaChatClient`` (context pool, each token a job on the fair scheduler, speech first) and STT decodes as
  scheduler jobs, exactly as ``bot/services`` run them.

``--mode processes`` runs each session in its own process (what issue 11 measured: N ``voicebot run`` at
once); ``--mode threads`` runs them in one process (``voicebot serve``). Prints one table row per
(policy, sessions)::

    .venv/bin/python benchmarks/cpu.py --sessions 1 2 4 --rounds 3 --mode threads
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUESTIONS = ["What is the capital of France?", "How far away is the moon?", "Why is the sky blue?",
             "What do bees make?"]
MAX_TOKENS = 24


class Models:
    """The three runtimes as one policy loads them (shared by the sessions of one process)."""

    def __init__(self, policy: str, sessions: int) -> None:
        from faster_whisper import WhisperModel

        from bot.services import models

        self.policy = policy
        if policy == "after":
            from bot.cpu import set_sessions, thread_plan
            from bot.services.local_chat import LlamaChatClient

            set_sessions(sessions)
            plan = thread_plan()
            self.plan = plan.describe()
            self.client = LlamaChatClient(str(models.smollm2_gguf().path), n_ctx=1024)
            self.whisper = WhisperModel(str(models.whisper_tiny_en().path), device="cpu", compute_type="int8",
                                        cpu_threads=plan.stt)
        else:
            from llama_cpp import Llama

            self.llama = Llama(model_path=str(models.smollm2_gguf().path), n_ctx=1024, verbose=False)
            self.lock = threading.Lock()
            self.whisper = WhisperModel(str(models.whisper_tiny_en().path), device="cpu", compute_type="int8")
            self.plan = f"library defaults (llama.cpp {self.llama.n_threads} threads, one context)"
        folder, voice_id = models.resolve_piper_voice("", "")
        onnx = str(folder / f"{voice_id}.onnx")
        if policy == "after":
            self.voice = models.load_piper_voice(onnx)  # onnxruntime threads from the plan
        else:
            from piper import PiperVoice

            self.voice = PiperVoice.load(onnx)  # onnxruntime's default: every core

    def transcribe(self, audio: np.ndarray) -> str:
        def run() -> str:
            segments, _ = self.whisper.transcribe(audio, beam_size=1, language="en", without_timestamps=True)
            return " ".join(s.text for s in segments)

        if self.policy == "after":
            from bot.cpu import SCHEDULER, Work

            with SCHEDULER.job(Work.STT):
                return run()
        return run()

    def first_token(self, question: str) -> tuple[float, str]:
        messages = [{"role": "system", "content": "Answer in one short sentence."},
                    {"role": "user", "content": question}]
        t0 = time.perf_counter()
        if self.policy == "after":
            async def ask() -> tuple[float, str]:
                stream = await self.client.chat.completions.create(messages=messages, max_tokens=MAX_TOKENS,
                                                                   temperature=0.0)
                first, text = None, ""
                async for chunk in stream:
                    delta = chunk.choices[0].delta.content if chunk.choices else None
                    if delta:
                        first = first or time.perf_counter() - t0
                        text += delta
                return first or time.perf_counter() - t0, text

            return asyncio.run(ask())
        from bot.cpu import SPEECH_FIRST

        first, text = None, ""
        with self.lock:  # the old code: one context, one plain lock
            for raw in self.llama.create_chat_completion(messages=messages, max_tokens=MAX_TOKENS,
                                                         temperature=0.0, stream=True):
                SPEECH_FIRST.wait_turn()
                delta = raw["choices"][0]["delta"].get("content")
                if delta:
                    first = first or time.perf_counter() - t0
                    text += delta
        return first or time.perf_counter() - t0, text

    def speak(self, text: str) -> None:
        from bot.cpu import SPEECH_FIRST

        sentence = (text.split(".")[0] or "Okay") + "."
        with SPEECH_FIRST.speaking():
            for _ in self.voice.synthesize(sentence):
                pass


def session(models: Models, index: int, rounds: int, clips: list[np.ndarray], out: list[float]) -> None:
    from bot.cpu import session_scope

    time.sleep(0.15 * index)  # users do not all start at the same instant
    with session_scope(f"s{index}"):
        for r in range(rounds):
            q = (index + r) % len(QUESTIONS)
            models.transcribe(clips[q])
            ttft, text = models.first_token(QUESTIONS[q])
            out.append(ttft)
            models.speak(text)


def questions() -> list[np.ndarray]:
    from bot.audio import resample
    from bot.speech import synthesize

    clips = []
    for q in QUESTIONS:
        audio, rate = synthesize(q)
        clips.append(resample(audio, rate, 16000).astype(np.float32))
    return clips


def run_threads(policy: str, sessions: int, rounds: int) -> tuple[list[float], str]:
    models = Models(policy, sessions)
    clips = questions()
    models.first_token("Hello.")  # warm up (first call allocates)
    out: list[float] = []
    threads = [threading.Thread(target=session, args=(models, i, rounds, clips, out)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, models.plan


def _process_main(policy: str, index: int, rounds: int, start_at: float, result_path: str) -> None:
    models = Models(policy, 1)
    clips = questions()
    models.first_token("Hello.")
    time.sleep(max(0.0, start_at - time.time()))
    out: list[float] = []
    session(models, index, rounds, clips, out)
    Path(result_path).write_text(json.dumps({"ttft": out, "plan": models.plan}))


def run_processes(policy: str, sessions: int, rounds: int) -> tuple[list[float], str]:
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 25 + 8 * sessions  # every process has loaded its models by then
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(Path(tmp) / f"{i}.json") for i in range(sessions)]
        procs = [ctx.Process(target=_process_main, args=(policy, i, rounds, start_at, paths[i]))
                 for i in range(sessions)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        results = [json.loads(Path(p).read_text()) for p in paths if Path(p).is_file()]
    return [t for r in results for t in r["ttft"]], (results[0]["plan"] if results else "?")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=3, help="turns per session")
    parser.add_argument("--mode", choices=["threads", "processes"], default="threads")
    parser.add_argument("--policy", choices=["before", "after", "both"], default="both")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: "policy,sessions" in a fresh process
    args = parser.parse_args()
    if args.one:  # one measurement per process: models and thread pools start fresh
        policy, n = args.one.split(",")
        run = run_threads if args.mode == "threads" else run_processes
        ttft, plan = run(policy, int(n), args.rounds)
        print(json.dumps({"ttft": ttft, "plan": plan}))
        return
    policies = ["before", "after"] if args.policy == "both" else [args.policy]
    print(f"LLM first token with N concurrent sessions ({args.mode}, {args.rounds} turns each; "
          "STT + LLM + TTS per turn)\n")
    print("| policy | sessions | threads | first token p50 ms | p95 ms | max ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for policy in policies:
        for n in args.sessions:
            done = subprocess.run([sys.executable, __file__, "--one", f"{policy},{n}", "--mode", args.mode,
                                   "--rounds", str(args.rounds)], capture_output=True, text=True, cwd=REPO)
            try:
                data = json.loads(done.stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                print(f"| {policy} | {n} | failed: {done.stderr.strip().splitlines()[-1:]} | | | |")
                continue
            ms = [t * 1000 for t in data["ttft"]]
            print(f"| {policy} | {n} | {data['plan']} | {statistics.median(ms):.0f} | {pct(ms, 0.95):.0f} | "
                  f"{max(ms):.0f} |", flush=True)


if __name__ == "__main__":
    main()
