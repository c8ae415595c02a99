# BotFlow warehouse. Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install, run `botflow demo` (embedded PostgreSQL unless URLs are set)
#   make test   - create/update .venv, run ruff and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install install-spark system-tools demo test lint ui live bench bench-scheduled bench-live clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,simulate]"
	touch $(STAMP)

install: $(STAMP)

# the Spark engine's packages (pyspark carries Spark's runtime, ~500 MB): for the tests and `botflow spark`
SPARK_STAMP := $(VENV)/.spark-stamp
$(SPARK_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,simulate,spark]"
	touch $(SPARK_STAMP)

install-spark: $(SPARK_STAMP)

demo: install
	$(BIN)/botflow demo

lint: install
	$(BIN)/ruff check .

system-tools:   # pdftoppm and chromium, which the tests drive (installs them as root, else names them)
	@scripts/system-tools

# two workers, a whole test file each at a time (module fixtures build their warehouses once); TEST_WORKERS=0: one process
TEST_WORKERS ?= 2
test: install install-spark lint system-tools
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

ui: install
	$(BIN)/botflow ui

live: install
	$(BIN)/botflow live

SCALE ?= small
ENGINE ?= postgres
# make bench SCALE=small (~1M messages, minutes) | SCALE=full (~10M messages)
# make bench ENGINE=spark: both engines side by side, Spark on 1 and 2 workers (bench/engines.py)
bench: install
	@if [ "$(ENGINE)" = spark ]; then $(MAKE) --no-print-directory install-spark && \
	  $(BIN)/python bench/engines.py --scale $(SCALE); else $(BIN)/python bench/backfill.py --scale $(SCALE); fi

bench-scheduled: install   # a scheduled hourly run from its tick to done: new process per run vs warm worker
	$(BIN)/python bench/scheduled_run.py

bench-live: install
	$(BIN)/python bench/live_lag.py --minutes 3 --rate 2

clean:
	rm -rf dbt/target dbt/logs .pytest_cache .ruff_cache

# Containers (docker/): PostgreSQL, a code server per code location, the Dagster webserver and daemon, Superset.
# Settings in the environment or docker/.env (docker/env.example). Without an image registry, build local base
# images first (docker/local/build-base-images) and pass BASE_IMAGE / POSTGRES_IMAGE; without a bridge
# network, BOTFLOW_COMPOSE_HOST_NETWORK=1.
COMPOSE_FILES := -f docker/compose.yaml -f docker/compose.$(if $(filter 1,$(BOTFLOW_COMPOSE_HOST_NETWORK)),host,bridge).yaml
COMPOSE = $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose) \
	--env-file docker/.env -p botflow $(COMPOSE_FILES)
.PHONY: up down compose-check
docker/.env:
	@echo "copy docker/env.example to docker/.env and fill in its secrets" >&2; exit 1
up: docker/.env
	$(COMPOSE) build
	$(COMPOSE) up -d
down: docker/.env
	$(COMPOSE) down
compose-check: install   # up, one partition through the code server, a mart row, GraphQL, Superset, down
	$(BIN)/python docker/compose_check.py
