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

.PHONY: install browser run test test-long bench lint typecheck pytest clean example-bank

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[dev]"
	$(MAKE) --no-print-directory browser
	touch $(STAMP)

# Headless Chromium and its driver for the report-page tests (Debian packages).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

install: $(STAMP)

run: install
	$(BIN)/leadscore run-all

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy leadscore pipelines training serving features reports

pytest: install
	$(BIN)/pytest -q

test: lint typecheck pytest

# Long reliability tests (minutes each): not part of make test.
test-long: install
	$(BIN)/pytest -q -m long

# The benchmark harness: every figure the README quotes, as JSON and a Markdown table.
bench: install
	$(BIN)/python -m bench.run

# The UCI bank-marketing export (../shared/data/) through its mapping file: see the README.
BANK := $(BIN)/leadscore --env-file examples/bank-marketing/leadscore.env
example-bank: install
	$(BANK) ingest --mapping examples/bank-marketing/mapping.yaml
	$(BANK) features build
	$(BANK) features apply
	$(BANK) train
	$(BANK) score-batch --include-closed --output examples/bank-marketing/work/scores.csv

clean:
	rm -rf $(VENV) data examples/*/work mlflow/mlflow.db mlflow/artifacts .mypy_cache .ruff_cache .pytest_cache
