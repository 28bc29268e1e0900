# Two entry points for a fresh clone (see README): `make run` and `make test`.
# Both create .venv with Python 3.11 and install the project first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: setup data run test test-fast lint ui

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev,dask]'
	touch $@

setup: $(STAMP)

# The versioned dataset: from the DVC remote if it has it, else rebuilt byte-for-byte from its source.
data: setup
	@dvc pull -q data.dvc 2>/dev/null || vaeops data fetch
	@dvc status data.dvc

run: data
	dvc repro
	@vaeops where

test: setup
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not integration and not bench and not faults"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Prints the link that opens the study's runs table (MLflow 3 opens on a GenAI overview otherwise).
ui: setup
	@vaeops where | tail -n 1
	mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000
