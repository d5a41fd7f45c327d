# taskservice: `make run` serves the reference app in-process; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

# The shipped configuration: the reference app's tasks, data under ./data.
export TASK_MODULES ?= app.tasks
export APP_DATA_DIR ?= data

.PHONY: install run test test-fast lint format worker beat flower run-celery bench bench-smoke clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[celery,app,dev]"
	@command -v redis-server >/dev/null || echo "note: redis-server is not on PATH; Celery tests need it (apt-get install redis-server)"
	touch $(STAMP)

run: $(STAMP)  ## serve the reference app with the in-process backend (no Redis needed)
	TASK_BACKEND=fastapi $(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT)

test: $(STAMP)  ## every test: unit, contract (all backends), app, faults
	$(BIN)/pytest

test-fast: $(STAMP)  ## unit tests only, no real processes
	$(BIN)/pytest tests/unit -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# --- the distributed setup, without Docker: Redis from the system ----------------
worker: $(STAMP)  ## a Celery worker for TASK_MODULES: prefork pool for sync tasks, async pool for async ones
	TASK_BACKEND=celery exec $(BIN)/celery -A backends.celery_app worker --loglevel=INFO

beat: $(STAMP)  ## Celery beat: runs the periodic tasks declared in code
	TASK_BACKEND=celery exec $(BIN)/celery -A backends.celery_app beat --loglevel=INFO

flower: $(STAMP)  ## Flower on 127.0.0.1:5555, basic auth from FLOWER_BASIC_AUTH=user:password
	TASK_BACKEND=celery exec $(BIN)/celery -A backends.celery_app flower

run-celery: $(STAMP)  ## the API with the Celery backend (start Redis, `make worker`, `make beat` too)
	TASK_BACKEND=celery $(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT)

bench: $(STAMP)  ## the full benchmark; writes bench/RESULTS.md and bench/chart.png
	$(BIN)/python -m bench.run

bench-smoke: $(STAMP)  ## seconds-long run of every benchmark, to keep the scripts working
	$(BIN)/python -m bench.run --smoke

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
