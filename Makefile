# CTAFleet: `make demo` runs the whole system locally; `make test` runs every check CI runs.
SHELL := /bin/bash
# A failing command in a pipeline fails the recipe (pip's progress is filtered through grep).
.SHELLFLAGS := -o pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

# Local services the tests use for real; override or unset to skip (CI sets
# CTAFLEET_REQUIRE_SERVICES=1 so a missing service fails instead).
export CTAFLEET_TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
export CTAFLEET_TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
export CTAFLEET_TEST_MQTT_URL ?= mqtt://127.0.0.1:1883
PYTEST_ARGS ?= -n auto --dist loadgroup
# `make demo PORT=8080 HOST=0.0.0.0`
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: demo simulate bench-tools test lint types pytest install install-dev tools docs clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "CTAFleet needs Python 3.11 or newer")'
	@echo "==> creating the virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-main: $(BIN)/python requirements/main.lock pyproject.toml
	@echo "==> installing CTAFleet and its dependencies (the first time: a minute or two)"
	$(BIN)/pip install --progress-bar off -r requirements/main.lock \
		| { grep --line-buffered -E '^(Collecting|Successfully)' || true; }
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-main requirements/dev.lock
	$(BIN)/pip install --quiet -r requirements/dev.lock
	@touch $@

install: $(VENV)/.installed-main
install-dev: $(VENV)/.installed-dev

demo: install
	@echo "==> starting the demo on http://$(HOST):$(PORT) (stop with Ctrl-C)"
	$(BIN)/ctafleet demo --host $(HOST) --port $(PORT)

# A second simulated fleet against a running demo (`make demo` drives one already).
simulate: install
	$(BIN)/ctafleet simulate --url http://$(HOST):$(PORT)

# wrk and py-spy for bench/ (not needed by the tests).
bench-tools: install-dev
	scripts/install-bench-tools.sh

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: install-dev
	$(BIN)/mypy

# Servers and tools the tests start themselves (Prometheus, syslog-ng, Azurite, pgBackRest...).
tools:
	scripts/install-test-deps.sh

pytest: install-dev tools
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint types pytest

docs: install
	$(BIN)/ctafleet config docs
	$(BIN)/ctafleet permissions docs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
