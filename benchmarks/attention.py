"""Attention benchmark: when should the bot speak? Prints tables; nothing here is a unit test.

    .venv/bin/python benchmarks/attention.py [--hours 1.0] [--relevant] [--e2e]

1. **Cues on labelled streams** (detector level, faster than real time): alarms (smoke temporal-three, CO
   temporal-four, at several pitches, levels and noise), and an hour (``--hours``) of household noise, hum,
   music-like melodies, appliance beeps and speech that must raise nothing. Reports missed cues, detection
   delay from the alarm's onset, and false alerts per hour.
2. **Decisions on labelled utterances** (the attention gate on transcripts, as the pipeline feeds it):
   people talking among themselves (IGNORE), speech addressed to the bot by name (RESPOND), follow-ups right
   after the bot spoke (RESPOND), questions to the room and requests without the name (IGNORE for
   ``addressed``, RESPOND for ``relevant``, which must judge them itself). Reports accuracy and
   unwanted replies per 10 minutes of speech (utterances taken as 3 s each), for ``addressed`` and, with
   ``--relevant``, for ``relevant`` with the embedded LLM as judge.
3. ``--e2e``: one stream through ``voicebot run --input`` with ``attention.respond_to=addressed`` and the smoke
   cue: two people talk, a smoke alarm starts, then the bot is asked by name. Reports what was answered and
   the time from the alarm's onset to the first alert audio in reply.wav.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.attention.cues import RATE, CueDetector, alarm_pattern  # noqa: E402

rng = np.random.default_rng(2026)

CONVERSATION = [  # two people talking among themselves: the bot must stay silent
    "Did you remember to buy milk on the way home?", "No, I forgot, I'll go back after dinner.",
    "The train was late again this morning.", "We should leave earlier tomorrow then.",
    "What do you think about painting the kitchen green?", "I'd prefer something lighter, maybe yellow.",
    "Is your sister still coming on Saturday?", "Yes, she lands at noon, can you pick her up?",
    "I think the football starts at eight.", "Let's order pizza before it starts.",
    "Have you seen my glasses anywhere?", "They were on the table next to the window.",
]
ROOM_QUESTIONS = [  # to nobody in particular: addressed stays silent
    "Does anyone know where the remote is?", "What time is it?", "Who left the door open?",
]
ADDRESSED = [
    "Nova, what's the weather like tomorrow?", "Hey Nova, set a timer for ten minutes.",
    "What is the capital of Peru, Nova?", "Nova can you tell me a joke?", "Okay Nova, how far is the moon?",
]
FOLLOW_UPS = ["And what about the day after?", "Make it fifteen instead."]
UNNAMED_REQUESTS = [  # requests for the assistant without its name: relevant answers them, addressed does not
    "Could you set a timer for ten minutes please?", "Can you tell me how far away the moon is?",
    "Play some quiet music for the kids.",
]


def cue_table(hours: float) -> None:
    print("## Cues (detector on labelled streams)\n")
    rows = []
    for cue in ("smoke-alarm", "co-alarm"):
        delays, missed, runs = [], 0, 0
        for freq in (3100.0, 3400.0, 520.0):
            for level in (0.05, 0.3):
                for noise in (0.0, 0.01, 0.03):
                    runs += 1
                    audio = np.concatenate([np.zeros(3 * RATE, np.float32), alarm_pattern(cue, 12.0, freq=freq,
                                                                                             level=level)])
                    audio += rng.standard_normal(len(audio)).astype(np.float32) * noise
                    events = [e for e in _detect(audio) if e.cue == cue]
                    if not events:
                        missed += 1
                    else:
                        delays.append(events[0].t - 3.0)
        rows.append((cue, runs, missed, np.median(delays) if delays else None, max(delays) if delays else None))
    print("| cue | streams | missed | onset -> recognised p50 s | max s |\n| --- | --- | --- | --- | --- |")
    for cue, runs, missed, p50, mx in rows:
        print(f"| {cue} | {runs} | {missed} | {p50:.2f} | {mx:.2f} |" if p50 is not None else
              f"| {cue} | {runs} | {missed} | - | - |")
    secs = int(hours * 3600)
    t0 = time.perf_counter()
    false = _detect(_household(secs))
    cost = time.perf_counter() - t0
    print(f"\nhousehold noise, hum, melodies, appliance beeps and speech-like noise: {hours:g} h of audio -> "
          f"{len(false)} false alerts ({len(false) / hours:.1f} per hour); detector cost "
          f"{cost / secs * 1000:.2f} ms per second of audio")
    for e in false:
        print(f"  false alert: {e.cue} at {e.onset:.1f} s ({e.freq:.0f} Hz)")
    print()


def _detect(audio: np.ndarray):
    d = CueDetector(["smoke-alarm", "co-alarm"])
    out = []
    for i in range(0, len(audio), 16000):
        out += d.feed(audio[i:i + 16000])
    return out


def _household(secs: int, kinds: list[tuple[float, int]] | None = None) -> np.ndarray:
    parts, total = [], 0
    while total < secs * RATE:
        kind = rng.integers(0, 5)
        if kinds is not None:
            kinds.append((total / RATE, int(kind)))
        n = int(rng.uniform(5, 40) * RATE)
        t = np.arange(n) / RATE
        if kind == 0:  # broadband noise (fan, rain, traffic)
            x = rng.standard_normal(n) * rng.uniform(0.005, 0.1)
        elif kind == 1:  # mains hum with harmonics
            x = sum(0.05 / k * np.sin(2 * np.pi * 50 * k * t) for k in range(1, 6))
        elif kind == 2:  # a melody: notes of 0.1-0.75 s, some repeated, with gaps
            notes = []
            while sum(map(len, notes)) < n:
                f = rng.choice([262, 330, 392, 440, 523, 659, 784, 880, 1047, 1319, 1568, 2093, 3136])
                m = int(rng.choice([0.1, 0.25, 0.5, 0.5, 0.75]) * RATE)
                notes.append(0.15 * np.sin(2 * np.pi * f * np.arange(m) / RATE) * np.hanning(m))
                notes.append(np.zeros(int(rng.choice([0.0, 0.1, 0.5]) * RATE)))
            x = np.concatenate(notes)[:n]
        elif kind == 3:  # appliance beeps: microwave/washing machine, rhythms that are not the alarm's
            period = rng.choice([0.3, 0.8, 1.0])
            on = rng.choice([0.15, 0.25, 0.9])
            f = rng.choice([1000, 2000, 2700, 3100])
            x = np.where((t % period) < min(on, period * 0.8), 0.2 * np.sin(2 * np.pi * f * t), 0.0)
        else:  # speech-like: amplitude-modulated harmonic noise
            f0 = rng.uniform(90, 220)
            x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12)) * 0.05
            x *= (np.sin(2 * np.pi * 4 * t) > 0)
        parts.append(np.asarray(x, dtype=np.float32))
        total += n
    return np.concatenate(parts)[: secs * RATE]


def decision_table(relevant: bool) -> None:
    from bot.attention.gate import AttentionGate, AttentionState
    from bot.persona import load_persona

    persona = load_persona("default")
    policies = ["addressed"] + (["relevant"] if relevant else [])
    print("## Decisions (attention gate on labelled utterances)\n")
    print("| policy | utterances | correct | unwanted replies | missed | unwanted per 10 min of speech | "
          "decision p50 ms |\n| --- | --- | --- | --- | --- | --- | --- |")
    for policy in policies:
        # A question to the room is for the bot to answer only when it judges relevance itself.
        labelled = ([(t, False, None) for t in CONVERSATION] + [(t, policy == "relevant", None) for t in ROOM_QUESTIONS]
                    + [(t, policy == "relevant", None) for t in UNNAMED_REQUESTS]
                    + [(t, True, None) for t in ADDRESSED] + [(t, True, 2.0) for t in FOLLOW_UPS])
        judge = None
        if policy == "relevant":
            from bot.attention.gate import llm_judge
            from bot.config import load_settings
            from bot.services.llm import make_chat_client

            judge = llm_judge(make_chat_client(load_settings(None, {}).llm), persona.name)
        correct = unwanted = missed = 0
        costs = []
        for text, respond, since_bot in labelled:
            state = AttentionState(last_bot_speech=time.monotonic() - since_bot if since_bot else None)
            gate = AttentionGate(policy, [persona.name, *persona.wake_words], judge=judge, state=state,
                                 judge_timeout_secs=10.0)
            t0 = time.perf_counter()
            speak, _, _ = asyncio.run(gate.decide(text))
            costs.append((time.perf_counter() - t0) * 1000)
            correct += speak == respond
            unwanted += speak and not respond
            missed += respond and not speak
        minutes = len(labelled) * 3.0 / 60.0
        print(f"| {policy} | {len(labelled)} | {correct} | {unwanted} | {missed} | "
              f"{unwanted / minutes * 10:.1f} | {np.median(costs):.1f} |")
    print()


def e2e() -> None:
    import subprocess
    import tempfile

    import soundfile as sf

    from bot.audio import resample
    from bot.speech import synthesize

    tmp = Path(tempfile.mkdtemp(prefix="voicebot-attention-"))
    track = np.zeros(int(40 * RATE), np.float32)

    def put(at: float, text: str) -> None:
        audio, rate = synthesize(text, deterministic=True)
        audio = resample(audio, rate, RATE).astype(np.float32)
        track[int(at * RATE):int(at * RATE) + len(audio)] += audio

    put(0.5, CONVERSATION[0])
    put(4.0, CONVERSATION[1])
    alarm_at = 9.0
    alarm = alarm_pattern("smoke-alarm", 8.0, level=0.2)
    track[int(alarm_at * RATE):int(alarm_at * RATE) + len(alarm)] += alarm
    put(24.0, ADDRESSED[2])
    sf.write(tmp / "stream.wav", track, RATE)
    out = subprocess.run([sys.executable, "-m", "bot.cli", "run", "-i", str(tmp / "stream.wav"), "-o",
                          str(tmp / "reply.wav"), "--set", "attention.respond_to=addressed",
                          "--set", 'attention.cues=["smoke-alarm"]', "--set", f"audit.dir={tmp / 'audits'}"],
                         capture_output=True, text=True, cwd=REPO)
    print("## End to end (voicebot run --input)\n")
    print(out.stdout)
    reply, rate = sf.read(tmp / "reply.wav", dtype="float32")
    loud = np.flatnonzero(np.abs(reply) > 0.02)
    after = loud[loud > int(alarm_at * rate)]
    if len(after):
        print(f"alarm onset {alarm_at:.1f} s -> first bot audio {after[0] / rate:.2f} s: "
              f"{after[0] / rate - alarm_at:.2f} s")
    print(f"(files in {tmp})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--relevant", action="store_true")
    ap.add_argument("--e2e", action="store_true")
    args = ap.parse_args()
    cue_table(args.hours)
    decision_table(args.relevant)
    if args.e2e:
        e2e()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
