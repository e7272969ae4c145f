# The two commands a user needs: `make run` and `make test`. Each installs what it needs, no more.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test install run-deps deps lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

## Set up (Docker engine, base image, data dir, database, the main group), build the agent image
## when this code has none, print the URL and password, and start the host.
run: install run-deps
	BIN=$(BIN) bash scripts/run.sh

## Install the test tools (also Node/npm for the Codex CLI, Chromium) and run every test.
test: install deps
	$(BIN)/python -m pytest

## What running needs: a Docker engine (started) and the base image.
run-deps:
	bash scripts/install-run-deps.sh

## What the tests need on top: Node/npm (the pinned Codex CLI), Chromium and a font.
deps:
	bash scripts/install-test-deps.sh

lint: install
	$(BIN)/ruff check nanohost container tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench $(BENCH)

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
