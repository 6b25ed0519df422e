# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit notebooks bench env clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## Run the quickstart notebook on the embedded local backend and print its results.
demo: env
	$(BIN)/python scripts/run_notebook.py notebooks/01_quickstart.ipynb

## Lint, type-check and run every test suite.
test: env lint unit

lint: env
	$(BIN)/ruff check dask_flyte_jupyter tests bench scripts
	$(BIN)/ruff format --check dask_flyte_jupyter tests bench scripts
	$(BIN)/mypy dask_flyte_jupyter

unit: env
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: env
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info
