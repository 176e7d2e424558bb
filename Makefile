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

LOCK := requirements/lock.txt
DEPS := $(shell command -v python3.11 || command -v python3) tools/deps.py

# Exactly the lock, hashes checked: pip, then torch (the CPU build from local disk), then the rest,
# then the package itself (editable). A lock that no longer matches pyproject.toml stops it first.
$(STAMP): pyproject.toml $(wildcard requirements/*) tools/deps.py
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(DEPS) install --venv $(VENV)
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install everything, exactly as requirements/lock.txt says

lock: ## Re-resolve requirements/lock.txt from pyproject.toml and requirements/*.in (keeps other pins)
	@test -x $(VENV)/bin/uv || $(DEPS) bootstrap-uv --venv $(VENV)
	$(DEPS) lock --venv $(VENV)

upgrade: ## Re-resolve to the newest allowed versions, then lint and test (leaves the lock for review)
	@test -x $(VENV)/bin/uv || $(DEPS) bootstrap-uv --venv $(VENV)
	$(DEPS) lock --upgrade --venv $(VENV)
	$(MAKE) lint test
	@git diff --stat -- $(LOCK); echo "make upgrade: review 'git diff $(LOCK)' and commit it"

system-deps: ## Debian packages used by the tests (PostgreSQL, Chromium)
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! test -x /usr/bin/chromium || ! test -d /usr/share/fonts/opentype/noto; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql chromium chromium-driver fonts-noto-cjk >/dev/null; \
	fi

demo: $(STAMP) ## The main job, offline, on the embedded student
	$(VENV)/bin/distillery demo

demo-rft: $(STAMP) ## The main job with a reinforcement stage after the supervised student
	$(VENV)/bin/distillery demo --rft

# promptfoo drives distillery in tests/evals/test_promptfoo.py: npm ci from its package-lock.json
PROMPTFOO := examples/promptfoo/node_modules/.installed
$(PROMPTFOO): examples/promptfoo/package-lock.json
	@if command -v npm >/dev/null; then \
		cd examples/promptfoo && npm ci --omit=optional --no-audit --no-fund --loglevel=error \
		&& touch node_modules/.installed; \
	else echo "npm not found: tests/evals/test_promptfoo.py will skip (and fail under CI)"; fi

test: $(STAMP) system-deps $(PROMPTFOO) ## Run the test suite (SQLite and PostgreSQL, Chromium, a tiny training run)
	$(PY) -m pytest -q

lint: $(STAMP) ## ruff, mypy, import contracts
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/ruff format --check src tests benchmarks tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

fmt: $(STAMP) ## Format and autofix
	$(VENV)/bin/ruff format src tests benchmarks tools
	$(VENV)/bin/ruff check --fix src tests benchmarks tools

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

.PHONY: help install lock upgrade system-deps demo demo-rft test lint fmt bench serve db-upgrade docs
