"""``voicebot eval SUITE``: scenarios of spoken turns (synthesized here or recorded) with checks on what the bot
did, run across variants like ``voicebot compare``.

* :mod:`bot.evals.suite` — the YAML suite format
* :mod:`bot.evals.synth` — a scenario's audio (voices, tempo, pitch, noise, a second speaker)
* :mod:`bot.evals.checks` — checks on what was played, refused, blocked, how fast
* :mod:`bot.evals.judge` — the optional LLM judge for open questions
* :mod:`bot.evals.runner` — running a suite and the pass rates
"""
