# The two commands a new user types: `make run` and `make test`. Both set everything up first.
VENV := .venv
STAMP := $(VENV)/.voicebot-installed

.PHONY: setup run demo talk test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

# Talk to the bot: speaks a question to it and plays back its answer (writes demo-*.wav).
run: setup
	$(VENV)/bin/voicebot demo $(ARGS)

demo: run

# Talk to the bot through your microphone and speaker (Ctrl-C ends).
talk: setup
	$(VENV)/bin/voicebot run $(ARGS)

# Voice-to-voice latency by stage on the embedded models (prints a table).
bench: setup
	$(VENV)/bin/python benchmarks/latency.py $(ARGS)

test: setup
	$(VENV)/bin/python -m pytest $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
