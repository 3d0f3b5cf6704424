# The two commands of the README, and what they need. Everything installs into
# .venv (and, for the tests against third-party model servers, .venv-kserve
# and .venv-mlserver) inside this folder; nothing is installed system-wide.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed

.PHONY: up test unit lint peers clean

up: $(STAMP)
	$(VENV)/bin/streamapp up

test: $(STAMP) peers
	$(VENV)/bin/ruff check streamapp tests tools
	$(VENV)/bin/python -m pytest

# the quick tier: no servers, under a minute
unit: $(STAMP)
	$(VENV)/bin/ruff check streamapp tests tools
	$(VENV)/bin/python -m pytest -m "not integration and not peers"

lint: $(STAMP)
	$(VENV)/bin/ruff check streamapp tests tools

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

peers: $(STAMP)
	bash tests/serving/peers/setup_peers.sh

clean:
	rm -rf $(VENV) .venv-kserve .venv-mlserver .data .cache .pytest_cache .ruff_cache
