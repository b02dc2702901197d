"""``mode = "realtime"``: an end-to-end speech model over the OpenAI Realtime API, with moderated hold-back.

* :mod:`bot.realtime.client` — the websocket connection (the ``openai`` package's realtime client) and the
  session configuration sent to the server.
* :mod:`bot.realtime.holdback` — the hold-back buffer: which model audio may be played, given the transcript
  checked so far (pure logic).
* :mod:`bot.realtime.playout` — what the speaker has actually played (for truncation and pacing).
* :mod:`bot.realtime.refusal` — the persona's refusal line, synthesized locally with Piper.
* :mod:`bot.realtime.service` — the pipecat processor that ties them together.

See ``docs/realtime.md``.
"""
