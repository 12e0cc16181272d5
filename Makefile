# Streambridge — `make run` starts the embedded demo, `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8080

.PHONY: run test coverage lint typecheck services kafka-early bytecode unit e2e bench screenshots clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed")'
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed; installing python3-venv"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }

# uv installs the project and its dependencies into the venv in seconds; pip took about a
# minute of every clean `make test`. Same resolution (PyPI, the newest versions allowed).
$(BIN)/uv: | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check uv

$(VENV)/.installed: pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	@touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/streambridge serve --port $(PORT)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy bridge pipelines connectors gateway worker

# Real services the tests use, installed when missing and started when not listening,
# on loopback only; the official AsyncAPI parser (npm) the export tests feed; and Debian's
# chromium, which the browser tests drive through Playwright.
services:
	bash scripts/services.sh
	bash scripts/npm-deps.sh
	bash scripts/browser.sh

# The venv's and the sources' bytecode, compiled once while the services start (uv
# installs without it): the pytest-xdist workers, collecting at the same moment, each
# compiled every module they import, and the first gateways did again (a cold collection
# took 22 CPU s a worker, a warm one 7; compiling everything takes ~24 CPU s once).
bytecode: $(VENV)/.installed-dev
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib bridge connectors gateway pipelines worker tests > /dev/null

# Apache Kafka's JVM takes longest to start: `make test` launches it before lint and
# typecheck, and `services` waits for it after the others are up.
kafka-early:
	bash scripts/service-kafka.sh --no-wait

# The suite runs in TEST_WORKERS pytest-xdist processes (most tests wait on sockets and
# subprocesses, not the CPU), a file's tests on one worker (its module fixtures are built
# once). Bytecode is cached (__pycache__, git-ignored) even where the environment sets
# PYTHONDONTWRITEBYTECODE: every worker and gateway process would compile the sources and
# rewrite the test modules again.
# `make test` runs without coverage: tracing every gateway process nearly doubled the
# suite on 2 cores (two e2e files: 101 s plain, 188 s traced), past the 10-minute budget.
# `make coverage` runs the same suite traced, the gateway and worker processes the tests
# start included ([tool.coverage.run] in pyproject.toml), combines their data files,
# shows the 15 least covered files and the total, and fails under fail_under.
TEST_WORKERS ?= 4
PYTEST_SUITE = -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15
# The checks and the services start side by side: mypy works while the brokers boot.
test: kafka-early
	$(MAKE) --no-print-directory -j3 lint typecheck services bytecode
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python $(PYTEST_SUITE)

coverage: kafka-early
	$(MAKE) --no-print-directory -j3 lint typecheck services bytecode
	$(BIN)/coverage erase
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/coverage run $(PYTEST_SUITE)
	$(BIN)/coverage combine -q
	@$(BIN)/coverage report --skip-covered --sort=cover > $(VENV)/coverage.txt; \
	  status=$$?; head -n 17 $(VENV)/coverage.txt; tail -n 5 $(VENV)/coverage.txt; exit $$status

# Without any broker: the pure core and the connector contract bound to the memory
# connector (the real-broker bindings are marked `broker`; `make test` runs them).
unit: $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests/unit tests/contract -m "not broker"

e2e: $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests/e2e

# The README's pictures of the portal, taken by the browser tests from the embedded demo.
screenshots: $(VENV)/.installed-dev
	bash scripts/browser.sh
	STREAMBRIDGE_SCREENSHOTS=docs/img $(BIN)/python -m pytest tests/browser/test_portal.py \
	  -k "catalogue or newcomer or publisher_console"

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/fanout.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* .state
