"""End of turn on speech with pauses: premature replies per minute, turns merged, voice-to-voice.

Each item is one or more *thoughts* (what a listener would answer once) spoken with pauses inside them.
Two sets:

* synthesized (always): questions spoken by Piper and espeak-ng with 0.6-1.2 s pauses inserted
  mid-clause ("I was wondering if, [0.8 s] maybe, [0.6 s] you could tell me ..."), plus two items of two
  separate questions 2.5 s apart, which must stay two turns;
* real (``--real FILE``, repeatable): recordings of one thought with natural pauses, e.g. a speech.

Each item runs through the file transport on the configured models; measured on the audio of reply.wav
(same timeline as the input):

* **premature turn end**: the bot decided a turn was over inside a thought: the user turns beyond one per
  thought, plus the answers withdrawn because the user went on (each was a turn end). Per minute of paused
  speech (the voiced span of the thoughts).
* **premature reply**: such an answer was heard: its audio started before the thought was over (on a
  loaded CPU a premature answer can come so late that the user is already talking and it is never heard).
* **turns merged correctly**: the session has exactly as many user turns as the item has thoughts.
* **voice-to-voice**: last voiced sample of a thought -> the bot's voice starts after it.
* **withdrawn**: answers started and then withdrawn because the user went on after a turn end (audited as
  ``answer.withdrawn``); ``heard`` = those of which some audio had played.

The opposite mistake, a finished question made to wait, is counted with ``--finished N``: the first N
questions of ``make bench`` (benchmarks/latency.py) are transcribed by the configured Whisper and judged
(bot/turn_completion.py), and with ``--set vad.acoustic_check=smart-turn`` also given to Smart-Turn v3; each
one judged unfinished would wait ``vad.unfinished_wait_secs`` more.

    .venv/bin/python benchmarks/endpointing.py --real ../shared/speech/jfk.flac
    .venv/bin/python benchmarks/endpointing.py --set vad.unfinished_wait_secs=0 --set vad.resume_secs=0  # before
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.audio import float_to_int16, resample, to_mono, to_pcm  # noqa: E402
from bot.config import load_settings, parse_overrides  # noqa: E402
from bot.persona import load_persona  # noqa: E402
from bot.session import run_file  # noqa: E402
from bot.speech import synthesize  # noqa: E402

def _latency_module():
    """benchmarks/latency.py, for its silence threshold and percentiles (not on sys.path: benchmarks/
    holds a moderation.py that would shadow the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("latency_bench", Path(__file__).with_name("latency.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_latency = _latency_module()
SILENCE_DBFS, pct = _latency.SILENCE_DBFS, _latency.pct

RATE = 16000
GAP_SECS = 0.6
"""Silences shorter than this inside the bot's voice belong to the same reply (sentence breaks)."""


@dataclass
class Item:
    label: str
    thoughts: list[list[tuple[str, float]]]
    """Each thought: its parts as (text, pause after it in seconds); the last part's pause separates it
    from the next thought."""
    engine: str = "piper"


PAUSED = [
    Item("wondering", [[("I was wondering if,", 0.8), ("maybe,", 0.6), ("you could tell me the capital of France?", 0)]]),
    Item("history", [[("Can you tell me about the", 0.9), ("history of the Roman empire?", 0)]], "espeak"),
    Item("sister", [[("My sister loves gardening and", 1.0), ("old movies, so what should I get her?", 0)]]),
    Item("moon", [[("I would like to know, um,", 1.2), ("how far away the moon is.", 0)]], "espeak"),
    Item("cook", [[("What should I cook tonight, because", 1.0), ("I only have eggs and rice?", 0)]]),
    Item("book", [[("So the thing is,", 1.1), ("I need a good book for a long train ride.", 0)]], "espeak"),
    Item("run", [[("Is it better to run in the", 0.8), ("morning or in the evening?", 0)]]),
    Item("sky", [[("Tell me, if you can,", 0.9), ("why the sky is blue.", 0)]], "espeak"),
    Item("trip", [[("We are going to Spain in April and", 0.7), ("I wonder what the weather is like,", 0.9),
                   ("is it warm?", 0)]]),
    Item("spider", [[("How many legs", 0.6), ("does a spider have?", 0)]], "espeak"),
    Item("two questions", [[("What is two plus two?", 2.5)], [("Where do penguins live?", 0)]]),
    Item("two questions, espeak", [[("Who wrote Romeo and Juliet?", 2.5)], [("What time zone is Tokyo in?", 0)]],
         "espeak"),
]


def speak(text: str, engine: str) -> np.ndarray:
    if engine == "espeak" and shutil.which("espeak-ng"):
        wav = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "--stdout", text], check=True,
                             capture_output=True).stdout
        with tempfile.NamedTemporaryFile(suffix=".wav") as f:
            f.write(wav)
            f.flush()
            audio, rate = sf.read(f.name, dtype="float32")
    else:
        audio, rate = synthesize(text)
    return resample(audio, rate, RATE).astype(np.float32, copy=False)


def voiced_spans(samples: np.ndarray, rate: int) -> tuple[float, float] | None:
    frame = rate // 100
    n = len(samples) // frame
    if n == 0:
        return None
    energy = 20 * np.log10(np.sqrt(np.mean(samples[: n * frame].reshape(n, frame) ** 2, axis=1)) + 1e-12)
    voiced = np.flatnonzero(energy > SILENCE_DBFS)
    return (voiced[0] * frame / rate, (voiced[-1] + 1) * frame / rate) if len(voiced) else None


def build(item: Item, path: Path) -> list[tuple[float, float]]:
    """Write the item's audio; return each thought's voiced (start, end) on its timeline."""
    track = [np.zeros(int(0.4 * RATE), np.float32)]
    spans = []
    t = 0.4
    for thought in item.thoughts:
        start = None
        for text, pause in thought:
            audio = speak(text, item.engine)
            span = voiced_spans(audio, RATE) or (0.0, len(audio) / RATE)
            start = t + span[0] if start is None else start
            end = t + span[1]
            track += [audio, np.zeros(int(pause * RATE), np.float32)]
            t += len(audio) / RATE + pause
        spans.append((start, end))
    track.append(np.zeros(int(0.6 * RATE), np.float32))
    sf.write(str(path), np.concatenate(track), RATE)
    return spans


def bot_onsets(samples: np.ndarray, rate: int) -> list[float]:
    """Where the bot's voice starts after a silence of at least GAP_SECS."""
    loud = np.flatnonzero(np.abs(samples) > 10 ** (SILENCE_DBFS / 20))
    if not len(loud):
        return []
    starts = [loud[0]] + [b for a, b in zip(loud[:-1], loud[1:]) if b - a > GAP_SECS * rate]
    return [s / rate for s in starts]


def measure(label: str, path: Path, spans: list[tuple[float, float]], settings, persona, tmp: Path) -> dict:
    reply = tmp / f"reply-{path.stem}.wav"
    started = time.monotonic()
    result = asyncio.run(run_file(settings, persona, path, reply))
    audio, rate = sf.read(str(reply), dtype="float32", always_2d=True)
    onsets = bot_onsets(to_mono(audio), rate)
    v2v = []
    for _, end in spans:
        after = [o for o in onsets if o >= end]
        v2v.append(round(float(after[0] - end) * 1000, 1) if after else None)
    withdrawn = [w for turn in result.turns for w in turn.withdrawn]
    # Turns that ended inside a thought: every turn of a thought but its last (by where its speech ends).
    early = [(t, e) for s, e in spans
             for t in sorted((x for x in result.turns if x.speech_end is not None and s - 0.3 <= x.speech_end <= e + 1.0),
                             key=lambda x: x.speech_end)[:-1]]
    premature = [round(t.t_bot_start, 2) for t, e in early if t.t_bot_start is not None and t.t_bot_start < e]
    return {
        "item": label,
        "thoughts": len(spans),
        "speech_s": round(sum(e - s for s, e in spans), 2),
        "turns": len(result.turns),
        "merged_ok": len(result.turns) == len(spans),
        "premature": len(premature) + sum(w["heard"] for w in withdrawn),
        "premature_at_s": premature,
        "premature_ends": len(early) + len(withdrawn),
        "v2v_ms": v2v,
        "withdrawn": len(withdrawn),
        "withdrawn_heard": sum(w["heard"] for w in withdrawn),
        "heard": [t.transcript for t in result.turns],
        "negative_timings": [k for t in result.turns for k, v in t.timings().items() if v is not None and v < 0],
        "wall_s": round(time.monotonic() - started, 1),
    }


def table(name: str, rows: list[dict]) -> None:
    minutes = sum(r["speech_s"] for r in rows) / 60
    premature = sum(r["premature"] for r in rows)
    ends = sum(r["premature_ends"] for r in rows)
    v2v = [v for r in rows for v in r["v2v_ms"] if v is not None]
    unanswered = sum(v is None for r in rows for v in r["v2v_ms"])
    print(f"{name:<12} {len(rows):>5} {minutes * 60:>9.1f} {premature:>9} {premature / minutes if minutes else 0:>9.2f} "
          f"{ends:>6} {ends / minutes if minutes else 0:>9.2f} "
          f"{sum(r['merged_ok'] for r in rows):>4}/{len(rows):<3} {sum(r['withdrawn'] for r in rows):>5}"
          f"({sum(r['withdrawn_heard'] for r in rows)}) {pct(v2v, .5):>7.0f} {pct(v2v, .95):>7.0f} {unanswered:>4}")


async def smart_turn(analyzer, audio: np.ndarray) -> str:
    """Feed a question to Smart-Turn as the pipeline does (20 ms blocks, speech flagged by energy, then the
    VAD's 0.2 s of silence) and return its verdict."""
    from pipecat.audio.turn.base_turn_analyzer import EndOfTurnState

    analyzer.clear()
    end = voiced_spans(audio, RATE)[1]
    pcm = float_to_int16(audio[: int((end + 0.2) * RATE)])
    block = RATE // 50
    for i in range(0, len(pcm), block):
        chunk = pcm[i:i + block]
        analyzer.append_audio(chunk.tobytes(), is_speech=i / RATE < end and float(np.abs(chunk).max()) > 300)
    state, _ = await analyzer.analyze_end_of_turn()
    return "complete" if state == EndOfTurnState.COMPLETE else "unfinished"


def judge_finished(n: int, settings) -> None:
    from bot.services.stt import make_stt
    from bot.turn_completion import judge

    stt, desc = make_stt(settings.stt)
    acoustic = None
    if settings.vad.acoustic_check == "smart-turn":
        from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
        from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

        acoustic = LocalSmartTurnAnalyzerV3(params=SmartTurnParams(stop_secs=60.0))
        acoustic.set_sample_rate(RATE)
    held = 0
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in _latency.make_questions(n, Path(tmp), None):
            audio, rate = sf.read(str(path), dtype="float32")
            text = stt.transcribe_pcm(to_pcm(resample(audio, rate, RATE)))
            judgement = judge(text)
            verdict, reason = judgement.completion.value, judgement.reason
            if acoustic is not None and not judgement.unfinished:
                verdict, reason = asyncio.run(smart_turn(acoustic, audio)), "smart-turn"
            held += verdict == "unfinished"
            print(f"{verdict:<10} {reason:<12} {text!r:<70} <- {label}")
    print(f"\n{held}/{n} finished questions judged unfinished ({desc}): each would wait "
          f"{settings.vad.unfinished_wait_secs} s more")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, action="append", default=[],
                    help="a recording of one thought with pauses (repeatable)")
    ap.add_argument("--no-synth", action="store_true", help="skip the synthesized set")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (as the CLI)")
    ap.add_argument("--json", type=Path, help="also write per-item results to this file")
    ap.add_argument("--finished", type=int, default=0, metavar="N",
                    help="only judge the transcripts of make bench's first N finished questions, and stop")
    args = ap.parse_args()

    overrides = {**{"audit.enabled": False, "llm.max_tokens": 40}, **parse_overrides(args.set)}
    settings = load_settings(None, overrides)
    persona = load_persona(settings.persona)
    if args.finished:
        judge_finished(args.finished, settings)
        return
    sets: dict[str, list[dict]] = {"synthesized": [], "real": []}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        jobs = []
        if not args.no_synth:
            for i, item in enumerate(PAUSED):
                path = tmp / f"p{i:02d}.wav"
                jobs.append(("synthesized", f"{item.label} ({item.engine})", path, build(item, path)))
        for i, path in enumerate(args.real):
            audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
            span = voiced_spans(to_mono(audio), rate)
            jobs.append(("real", path.name, path, [span] if span else []))
        for n, (kind, label, path, spans) in enumerate(jobs):
            row = measure(label, path, spans, settings, persona, tmp)
            sets[kind].append(row)
            print(f"[{n + 1:2d}/{len(jobs)}] {label}: turns {row['turns']}/{row['thoughts']}, premature "
                  f"{row['premature']} {row['premature_at_s']}, early ends {row['premature_ends']}, withdrawn {row['withdrawn']}, v2v {row['v2v_ms']} | "
                  f"heard {row['heard']}", flush=True)

    v = settings.vad
    print()
    print(f"voicebot end-of-turn benchmark: llm={settings.llm.provider}, vad stop {v.stop_secs}s + turn "
          f"{v.turn} {v.turn_timeout_secs}s, unfinished +{v.unfinished_wait_secs}s, resume {v.resume_secs}s, "
          f"speculate {v.speculate}")
    print(f"{'set':<12} {'items':>5} {'speech s':>9} {'replies':>9} {'per min':>9} {'ends':>6} {'per min':>9} "
          f"{'merged':>8} "
          f"{'withdrawn(heard)':>8} {'v2v p50':>7} {'p95':>7} {'unanswered':>4}")
    for name, rows in sets.items():
        if rows:
            table(name, rows)
    negative = [(r["item"], r["negative_timings"]) for rows in sets.values() for r in rows if r["negative_timings"]]
    print(f"negative stage timings: {negative or 'none'}")
    if args.json:
        args.json.write_text(json.dumps(sets, indent=2))


if __name__ == "__main__":
    main()
