"""``voicebot compare``: the same audio through several modes/configurations, side by side, in one report.

* :mod:`bot.compare.variants` — what runs (modes, config files, ``--set`` variants)
* :mod:`bot.compare.inputs` — what it runs on (recordings, folders, audit sessions)
* :mod:`bot.compare.runner` — running each variant into its own audit sessions
* :mod:`bot.compare.results` — outcomes read back from the audit logs, aggregates, agreement
* :mod:`bot.compare.report` — terminal table, JSON and the HTML page
"""
