# taskservice. `make` (or `make help`) lists the targets. Every variable below can be set by you:
# `PORT=9000 make run`, `TASK_BACKEND=celery make run`; nothing here overrides what you set.
.DEFAULT_GOAL := help
SHELL := /bin/sh

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APP_STAMP := $(VENV)/.installed-app
HOST ?= 127.0.0.1
PORT ?= 8000

# The shipped configuration of the reference app (the library's own defaults are in the README):
# its tasks, its data under ./data, durable task records next to it. Copy .env.example to .env
# to keep your own values; variables set in the environment win over both.
export TASK_MODULES ?= app.tasks
export APP_DATA_DIR ?= data
# Given to the servers only (make run), not exported to the tests.
TASK_STORE_URL ?= sqlite:///$(APP_DATA_DIR)/tasks.sqlite3

.PHONY: help install run test test-fast lint format worker beat flower run-celery bench bench-smoke clean

help:  ## list the targets
	@echo "taskservice: make TARGET (variables such as PORT=9000 or TASK_BACKEND=celery are respected)"
	@sed -n 's/^\([a-z-]*\):.*## \(.*\)$$/\1|\2/p' $(MAKEFILE_LIST) | awk -F'|' '{printf "  %-13s %s\n", $$1, $$2}'

install: $(STAMP)  ## the full development setup in .venv (Celery, Flower, the app, linters, test tools)

# Everything: Celery, Flower, the reference app, the test and lint tools.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[celery,flower,app,dev]"
	@command -v redis-server >/dev/null || echo "note: redis-server is not on PATH; Celery tests need it (apt-get install redis-server)"
	touch $(STAMP) $(APP_STAMP)

# Only what the in-process reference app needs: no Celery, no Flower, no linters.
$(APP_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[app]"
	touch $(APP_STAMP)

# `exec`: the server replaces the shell, so a SIGTERM or Ctrl-C sent to make reaches it.
run: $(APP_STAMP)  ## serve the reference app on HOST:PORT (127.0.0.1:8000); in-process unless TASK_BACKEND says otherwise
	exec env TASK_STORE_URL='$(TASK_STORE_URL)' $(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT)

run-celery: $(STAMP)  ## the API with the Celery backend (start Redis, `make worker`, `make beat` too)
	exec env TASK_BACKEND=celery $(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT)

test: $(STAMP)  ## every test: unit, contract (all backends), app, faults
	$(BIN)/pytest

test-fast: $(STAMP)  ## unit tests only, no real processes
	$(BIN)/pytest tests/unit -m "not slow"

lint: $(STAMP)  ## ruff check, ruff format --check, mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)  ## ruff format and ruff check --fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# --- the distributed setup, without Docker: Redis from the system ----------------
worker: $(STAMP)  ## a Celery worker for TASK_MODULES: prefork pool for sync tasks, async pool for async ones
	TASK_BACKEND=celery exec $(BIN)/celery -A backends.celery_app worker --loglevel=INFO

beat: $(STAMP)  ## Celery beat: runs the periodic tasks declared in code
	TASK_BACKEND=celery exec $(BIN)/celery -A backends.celery_app beat --loglevel=INFO

flower: $(STAMP)  ## Flower on 127.0.0.1:5555, basic auth from FLOWER_BASIC_AUTH=user:password
	TASK_BACKEND=celery exec $(BIN)/celery -A backends.celery_app flower

bench: $(STAMP)  ## the full benchmark; writes bench/RESULTS.md and bench/chart.png
	$(BIN)/python -m bench.run

bench-smoke: $(STAMP)  ## seconds-long run of every benchmark, to keep the scripts working
	$(BIN)/python -m bench.run --smoke

clean:  ## remove .venv and the caches (./data stays)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
