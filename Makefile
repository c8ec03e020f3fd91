# One entry point for people and CI. `make run` and `make test` work on a fresh clone: they create
# the virtualenv and install the JS client themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
JS := tests/js
PYTEST_ARGS ?=

.PHONY: run test lint typecheck unit bench soak clean help

help:
	@echo "make run    - run the service locally (dev auth, local RabbitMQ) and print tokens"
	@echo "make test   - lint, type-check and run every test (needs RabbitMQ, Node.js, Chromium)"
	@echo "make unit   - the tests that need no RabbitMQ, Node.js, browser, nginx or docker-compose"
	@echo "make bench  - fan-out benchmark against python-socketio and a raw aiohttp floor (BENCH_ARGS=--quick)"
	@echo "make soak   - 30 minutes of mixed clients, events and broker/service restarts (SOAK_ARGS=--duration 300)"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

$(JS)/node_modules/.installed: $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: $(VENV)/.installed
	$(PY) -m devkit.run

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(VENV)/.installed
	$(PY) -m mypy

test: $(VENV)/.installed $(JS)/node_modules/.installed lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

# Every test that needs no RabbitMQ, Node.js, browser or system tool (markers: tests/support/markers.py).
unit: $(VENV)/.installed
	$(PY) -m pytest -m "not broker and not node and not browser and not tools" $(PYTEST_ARGS)

# The issue-12 shapes and the scaling table are flags (bench/NOTES.md): BENCH_ARGS="--connections 2000 --find-max".
BENCH_ARGS ?=
bench: $(VENV)/.installed
	$(PY) -m bench $(BENCH_ARGS)

# Not in CI: a private RabbitMQ node, two instances, clients on every transport, restarts (bench/soak.py).
SOAK_ARGS ?=
soak: $(VENV)/.installed
	$(PY) -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(JS)/node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis
