# leadscore: `make run` (set-up + the whole job on the embedded default) and `make test`
# (set-up + lint + type check + tests) both work from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_WAIT_POLICY ?= passive
export GX_ANALYTICS_ENABLED ?= false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR ?= false

.PHONY: install run test lint typecheck pytest clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/leadscore run-all

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy leadscore pipelines training serving features

pytest: install
	$(BIN)/pytest -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) data mlflow/mlflow.db mlflow/artifacts .mypy_cache .ruff_cache .pytest_cache
