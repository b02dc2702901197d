"""``voicebot discord``: a thin Discord voice transport (py-cord) in front of the usual session.

* :mod:`bot.discord.audio` — the audio adapters, pure numpy/soxr: Discord's 48 kHz stereo 20 ms frames per
  user in, 16 kHz mono on real time out (:class:`UserStream`); bot audio in, 3840-byte frames out
  (:class:`FrameSlicer`, :class:`PlaybackQueue`).
* :mod:`bot.discord.floor` — who is heard: one speaker holds the floor at a time.
* :mod:`bot.discord.policy` — who is answered and who is listened to: addressed matching, the reply gate,
  allow-lists, speaker labels.
* :mod:`bot.discord.forget` — ``/forget``: delete a speaker's audio from the audit log, verifiably.
* :mod:`bot.discord.pycord` — the only module that touches py-cord's voice classes: the receive sink and
  the playback source.
* :mod:`bot.discord.commands` / :mod:`bot.discord.app` — slash commands and the running bot.

The pipecat transport itself is :mod:`bot.transports.discord`. Nothing outside these modules knows Discord.
"""
