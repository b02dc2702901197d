"""RSS of a long session, played faster than real time: does memory stay flat over an hour of talk?

Builds an input of ``--minutes`` of session time with a spoken question every ``--every`` seconds (Piper
voice), and runs it through the real cascade (Silero VAD, Whisper, moderation, Piper; scripted LLM replies
so that issue 17's context limit is not what is measured) at ``--speed`` times real time: the paced input
and the virtual speaker follow :attr:`bot.transports.file.SessionClock.speed`. The process's RSS is sampled
every few seconds; the slope is fitted over the second half (after start-up and the first turns) and given
in MB per hour of session. The virtual speaker's blocks are discarded as they are played (``run --input``
keeps them to write reply.wav: 48 kB per second of bot speech, by design; a live session keeps none).

    .venv/bin/python benchmarks/soak.py --minutes 60 --speed 8
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUESTIONS = ["What is the capital of France?", "How far away is the moon?", "Why is the sky blue?",
             "What do bees make?", "Tell me something about the sea."]
REPLIES = ["Paris is the capital of France.", "About three hundred and eighty thousand kilometres.",
           "Sunlight scatters in the air, and blue scatters most.", "Bees make honey and wax.",
           "The sea covers most of the planet."]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_input(minutes: float, every: float, rate: int) -> np.ndarray:
    from bot.audio import resample
    from bot.speech import synthesize

    clips = []
    for q in QUESTIONS:
        audio, r = synthesize(q)
        clips.append(resample(audio, r, rate).astype(np.float32))
    track = np.zeros(int(minutes * 60 * rate), dtype=np.float32)
    for k, start in enumerate(np.arange(1.0, minutes * 60 - every, every)):
        clip = clips[k % len(clips)]
        i = int(start * rate)
        track[i:i + len(clip)] = clip[: len(track) - i]
    return track


async def soak(args: argparse.Namespace) -> tuple[list[tuple[float, float]], int, float]:
    from bot.config import load_settings
    from bot.persona import load_persona
    from bot.session import Session, until_file_done
    from bot.transports.file import FileTransport

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(None, {"audit.dir": tmp, "llm.provider": "scripted", "llm.script": REPLIES,
                                        "transport.max_reply_secs": 5})
        samples = build_input(args.minutes, args.every, settings.transport.sample_rate)
        transport = FileTransport(samples, in_rate=settings.transport.sample_rate,
                                  out_rate=settings.transport.output_sample_rate)
        transport.clock.speed = args.speed
        session = Session(settings, load_persona("default"), transport)
        samples_rss: list[tuple[float, float]] = []
        stop = threading.Event()
        output = transport.output()

        def sample() -> None:
            while not stop.wait(args.sample_secs):
                output.blocks.clear()  # see the module docstring
                t0 = transport.clock.t0  # loop.time() is time.monotonic() here
                if t0 is not None:
                    samples_rss.append(((time.monotonic() - t0) * args.speed, rss_mb()))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        result = await session.run(until_file_done(transport.input().input_done, 5))
        stop.set()
        answered = sum(1 for t in result.turns if t.spoken_text)
        return samples_rss, answered, time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="session time to play")
    parser.add_argument("--speed", type=float, default=8.0, help="times real time")
    parser.add_argument("--every", type=float, default=12.0, help="a question every this many session seconds")
    parser.add_argument("--sample-secs", type=float, default=2.0, help="RSS sample period (wall clock)")
    args = parser.parse_args()
    samples, answered, wall = asyncio.run(soak(args))
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    x = np.array([s[0] for s in half]) / 3600.0
    y = np.array([s[1] for s in half])
    slope = float(np.polyfit(x, y, 1)[0]) if len(half) >= 3 else float("nan")
    turns = int(args.minutes * 60 / args.every)
    print(f"{args.minutes:.0f} min of session in {wall / 60:.1f} min wall ({args.speed:g}x), {turns} questions, "
          f"{answered} answered")
    print("| session min | RSS MB |")
    print("| --- | --- |")
    step = max(1, len(samples) // 12)
    for t, r in samples[::step] + samples[-1:]:
        print(f"| {t / 60:.1f} | {r:.1f} |")
    print(f"\nRSS slope over the second half: {slope:+.1f} MB per hour of session "
          f"({y[0]:.1f} -> {y[-1]:.1f} MB)")


if __name__ == "__main__":
    main()
