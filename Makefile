# The two commands a user needs: `make run` and `make test`. Both install what they need.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test install deps lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

## Set up (Docker engine, agent image, data dir, database, the main group) and start the host.
run: install deps
	$(BIN)/nanohost setup
	$(BIN)/nanohost image build --if-missing
	$(BIN)/nanohost serve

## Install the test tools (Docker engine, debootstrap, Node/npm, Codex CLI) and run every test.
test: install deps
	$(BIN)/python -m pytest

## System packages the host and tests drive: Docker engine (started), debootstrap + base image, npm.
deps:
	bash scripts/install-test-deps.sh

lint: install
	$(BIN)/ruff check nanohost container tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/latency.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
