# The two commands a new user types: `make run` and `make test`. Both set everything up first.
VENV := .venv
STAMP := $(VENV)/.voicebot-installed

.PHONY: setup run demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

# Talk to the bot: speaks a question to it and plays back its answer (writes demo-*.wav).
run: setup
	$(VENV)/bin/voicebot demo $(ARGS)

demo: run

test: setup
	$(VENV)/bin/python -m pytest $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
