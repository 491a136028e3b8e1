# postroom: the front door. `make dev` runs everything, `make test` tests everything.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PYTHONPATH := $(CURDIR)
# API, workers and beat on this host share one prometheus-client multiprocess directory, so the
# API's GET /metrics sums every process's counters (docs/operations.md).
METRICS_DIR ?= $(or $(TMPDIR),/tmp)/postroom-metrics
api worker worker-short worker-bulk worker-periodic beat deliver dev: export PROMETHEUS_MULTIPROC_DIR ?= $(METRICS_DIR)
# make dev: the API where the README says (honcho would hand it PORT=5000), and readable log
# lines for a person at a terminal (JSON stays the default everywhere else).
dev: export API_PORT ?= $(PORT)
dev: export POSTROOM_LOG_JSON ?= false

.PHONY: install migrate check-services api worker worker-short worker-bulk worker-periodic beat flower \
	      dev test test-all fuzz lint format bench up down clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,train,bench]'
	@touch $@

.env:
	@$(PY) scripts/make_env.py > .env
	@echo "wrote .env with a fresh POSTROOM_CREDENTIAL_KEYS, a local webhook secret and an ops token"

# A .env written before the ops token existed gets one (Compose runs with
# POSTROOM_ENVIRONMENT=production, where /metrics and /health/detailed need it).
.PHONY: ops-token
ops-token: .env
	@grep -q '^POSTROOM_OPS_TOKEN=' .env || { python3 scripts/make_env.py --ops-token >> .env && \
	  echo "added POSTROOM_OPS_TOKEN to .env"; }

# make dev installs once up front; the processes it starts (make api, make worker-short...) skip
# the check with SKIP_INSTALL=1, which also lets a test run make dev without touching .venv.
ifeq ($(SKIP_INSTALL),)
install: $(VENV)/.installed .env ops-token ## create .venv and install postroom with its test extras
else
install:
endif

check-services: install
	@$(PY) scripts/check_services.py

migrate: check-services ## create the database if missing, then alembic upgrade head
	@$(PY) scripts/createdb.py
	$(VENV)/bin/alembic upgrade head

api: install ## serve the API on $PORT (uvloop + httptools, 2 workers)
	$(VENV)/bin/uvicorn api.main:app --host $${HOST:-0.0.0.0} --port $(PORT) \
	  --loop uvloop --http httptools --workers $${WEB_CONCURRENCY:-2} --no-access-log

# The -Q list of a latency class: its lanes, as worker/config.py names them.
queues = $$($(PY) -m worker.config $(1))

# Three Celery workers, because Celery cannot reserve slots per queue inside one: short work
# (webhooks, user jobs, classify, send) never waits for a slot that a sync holds, and beat's
# ticks (the outbox sweeper, which re-publishes a dead worker's claims) never wait behind either.
worker: install ## short, bulk and periodic workers side by side (docs/operations.md "Worker layout")
	@$(MAKE) -j3 --no-print-directory SKIP_INSTALL=1 worker-short worker-bulk worker-periodic

worker-short: install ## webhooks, user jobs, classify, rules, send, small deletes
	$(VENV)/bin/celery -A worker.app worker -Q $(call queues,short) -l INFO \
	  -n short@%h --concurrency $${SHORT_CONCURRENCY:-2}

worker-bulk: install ## syncs (in bounded parts), mass deletes, reconcile
	$(VENV)/bin/celery -A worker.app worker -Q $(call queues,bulk) -l INFO \
	  -n bulk@%h --concurrency $${BULK_CONCURRENCY:-2}

worker-periodic: install ## beat's ticks: outbox sweeper, periodic sync, cleanup (one slot)
	$(VENV)/bin/celery -A worker.app worker -Q $(call queues,periodic) -l INFO \
	  -n periodic@%h --concurrency 1

beat: install ## the scheduler; a second one waits on standby (docs/operations.md)
	$(VENV)/bin/celery -A worker.app beat -l INFO --schedule $${TMPDIR:-/tmp}/postroom-beat-schedule

.PHONY: watch
watch: install ## the IMAP push listener: IDLE per active IMAP account (docs/operations.md "Push")
	$(PY) -m worker.listener

.PHONY: deliver
deliver: install ## outbound events: the asyncio delivery process (docs/webhooks.md); run several if needed
	$(PY) -m worker.deliverer

flower: install ## Flower on 5555 (login: POSTROOM_FLOWER_BASIC_AUTH, else 127.0.0.1); history: POSTROOM_FLOWER_DB
	@$(PY) scripts/flower.py

dev: migrate ## API :8000, workers per queue group, beat and Flower in the foreground; Ctrl-C stops all
	@mkdir -p "$$PROMETHEUS_MULTIPROC_DIR" && find "$$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -delete
	SKIP_INSTALL=1 $(VENV)/bin/honcho -f Procfile start

# pytest-xdist: TEST_PROCESSES suite processes, each with its own database, Redis, workers and
# mail peers (tests/conftest.py); a file's tests stay in one process (its module fixtures).
TEST_PROCESSES ?= 2
PYTEST_PARALLEL = -n $(TEST_PROCESSES) --dist loadfile

test: migrate ## the suite a user needs to trust postroom (README: how long it takes)
	$(PY) scripts/setup_peers.py
	@$(PY) scripts/corpus.py > /dev/null
	$(VENV)/bin/pytest -q $(PYTEST_PARALLEL)

test-all: migrate ## everything, including slow fault-injection tests
	$(PY) scripts/setup_peers.py
	@$(PY) scripts/corpus.py > /dev/null
	$(VENV)/bin/pytest -q $(PYTEST_PARALLEL) -m ''

FUZZ_SECONDS ?= 240
fuzz: install ## property tests over every parser of outside input, for FUZZ_SECONDS in all
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-500} $(VENV)/bin/pytest -q tests/fuzz \
	  -p no:cacheprovider --timeout $$(( $(FUZZ_SECONDS) + 300 ))

# The import rules between layers (services -> api, api -> worker.app, cycles): scripts/check_imports.py.
lint: install
	$(VENV)/bin/ruff check api worker database services tests bench scripts settings.py
	$(VENV)/bin/ruff format --check api worker database services settings.py
	$(VENV)/bin/mypy api worker database services settings.py
	$(PY) scripts/check_imports.py

format: install
	$(VENV)/bin/ruff format api worker database services tests bench scripts settings.py
	$(VENV)/bin/ruff check --fix api worker database services tests bench scripts settings.py

bench: migrate ## throughput and latency figures, side by side with a floor; PNG plots into docs/
	$(PY) -m bench $(BENCH)

.PHONY: train eval
train: install ## fit the spam model on the corpus TRAINING folders -> services/classify/spam_model.npz
	$(PY) scripts/train_classifier.py

eval: install ## classifier vs SpamAssassin on the HELD-OUT folders, the extra corpora and the unseen source, out of the box and after 100/500 labels
	$(PY) scripts/eval_classifier.py

up: ops-token ## the whole stack in Docker (needs a Docker engine)
	docker compose -f docker/compose.yml up -d --build

down:
	docker compose -f docker/compose.yml down
