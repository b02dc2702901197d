"""CPU cost of each stage of a voice turn on the embedded models: the capacity model's inputs.

Measures CPU time (user + system of the whole process, all threads), not wall time, so the figures hold
when other processes share the cores: what one turn of one session costs, stage by stage.

* VAD: Silero on 1 s of 16 kHz audio (it runs on every frame a session receives, speech or not)
* STT: Whisper tiny.en on one spoken question (the bot's own short-window decode)
* LLM: SmolLM2-135M answering one question (prompt + up to llm.max_tokens tokens)
* TTS: Piper per second of speech it produces
* moderation: the configured output stack on one sentence

    .venv/bin/python benchmarks/stage_cpu.py            # prints a table
"""

from __future__ import annotations

import asyncio
import resource
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTIONS = ["What is the capital of France?", "How far away is the moon?", "Tell me a fun fact about octopuses.",
             "Why is the sky blue?", "Where do penguins live?"]


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(fn, *args) -> tuple[float, object]:
    t = cpu()
    out = fn(*args)
    return cpu() - t, out


def main() -> None:
    from loguru import logger

    logger.remove()
    from bot.audio import resample, to_pcm
    from bot.config import load_settings
    from bot.persona import load_persona
    from bot.speech import synthesize

    settings = load_settings(None, {"audit.enabled": False})
    persona = load_persona("default")
    speech = []
    for q in QUESTIONS:
        audio, rate = synthesize(q)
        speech.append(resample(audio, rate, 16000).astype(np.float32))
    rows = []

    # VAD
    from pipecat.audio.vad.silero import SileroVADAnalyzer

    vad = SileroVADAnalyzer(sample_rate=16000)
    vad.set_sample_rate(16000)  # the analyzer runs at no rate until told (pipecat does it at StartFrame)
    pcm = to_pcm(np.concatenate(speech))
    chunk = vad.num_frames_required() * 2
    secs = len(pcm) / 32000
    spent, _ = measure(lambda: [vad.voice_confidence(pcm[i:i + chunk]) for i in range(0, len(pcm) - chunk, chunk)])
    rows.append(("VAD (Silero), per second of input audio", spent / secs * 1000, "ms CPU"))

    # STT
    from bot.services.stt import make_stt

    stt, _ = make_stt(settings.stt)
    stt._load()
    stt.transcribe_pcm(to_pcm(speech[0]))  # warm
    costs = [measure(stt.transcribe_pcm, to_pcm(s))[0] for s in speech]
    rows.append((f"STT (Whisper tiny.en), per question ({np.mean([len(s) for s in speech]) / 16000:.1f} s)",
                 float(np.mean(costs)) * 1000, "ms CPU"))

    # LLM
    from bot.services.llm import make_chat_client

    chat = make_chat_client(settings.llm)

    async def answer(q: str) -> str:
        stream = await chat.client.chat.completions.create(
            model=chat.model, stream=True, max_tokens=settings.llm.max_tokens, temperature=settings.llm.temperature,
            messages=[{"role": "system", "content": persona.system_prompt}, {"role": "user", "content": q}])
        text = ""
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        return text

    asyncio.run(answer("Hi"))  # warm
    llm_costs, words = [], []
    for q in QUESTIONS:
        spent, text = measure(lambda: asyncio.run(answer(q)))
        llm_costs.append(spent)
        words.append(len(str(text).split()))
    rows.append((f"LLM (SmolLM2-135M), per answer (~{np.mean(words):.0f} words)", float(np.mean(llm_costs)) * 1000,
                 "ms CPU"))

    # TTS
    from bot.services import models

    folder, voice_id = models.resolve_piper_voice("", "")
    voice = models.load_piper_voice(str(folder / f"{voice_id}.onnx"))
    text = "Paris is the capital of France. It is a lovely city on the river Seine, with many museums."
    list(voice.synthesize(text))  # warm
    spent, chunks = measure(lambda: list(voice.synthesize(text)))
    audio_secs = sum(len(c.audio_int16_bytes) for c in chunks) / 2 / voice.config.sample_rate
    rows.append(("TTS (Piper joe-medium), per second of speech", spent / audio_secs * 1000, "ms CPU"))

    # moderation
    from moderation import build_moderator

    mod = settings.moderation
    moderator = build_moderator(mod.output, mod, name="output")

    async def check() -> None:
        await moderator.warmup()
        for _ in range(50):
            await moderator.check("It is a lovely city on the river Seine.", role="assistant", persona=persona)

    asyncio.run(moderator.warmup())
    spent, _ = measure(lambda: asyncio.run(check()))
    rows.append((f"moderation ({'+'.join(mod.output.backends)}), per sentence", spent / 50 * 1000, "ms CPU"))

    print("| stage | CPU | unit |")
    print("| --- | --- | --- |")
    for name, value, unit in rows:
        print(f"| {name} | {value:.1f} | {unit} |")


if __name__ == "__main__":
    main()
