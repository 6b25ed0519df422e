# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The JupyterLab sidebar (labextension/): built by `pip install -e` through hatch-jupyter-builder,
# rebuilt by `make labextension` when its sources change.
LABEXT := labextension
JLPM := PATH="$(CURDIR)/$(BIN):$$PATH" $(CURDIR)/$(BIN)/jlpm
LABEXT_NODE := $(LABEXT)/node_modules/.yarn-state.yml
LABEXT_SRC := $(wildcard $(LABEXT)/src/*.ts $(LABEXT)/src/*.tsx $(LABEXT)/src/*.json \
	$(LABEXT)/src/components/*.tsx $(LABEXT)/style/* $(LABEXT)/schema/*) $(LABEXT)/package.json
LABEXT_INSTALLED := $(VENV)/share/jupyter/labextensions/dask-flyte-jupyter
# jlpm (yarn) fetches from the registry npm is configured with here, read at run time.
NPM_REGISTRY := $(shell npm config get registry 2>/dev/null)
ifneq ($(NPM_REGISTRY),)
export YARN_NPM_REGISTRY_SERVER ?= $(NPM_REGISTRY)
endif

.PHONY: demo test lint unit notebooks bench env clean jest labextension chromium browser rules

env: $(STAMP)

$(STAMP): pyproject.toml $(LABEXT)/package.json $(LABEXT)/yarn.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## Run the quickstart notebook on the embedded local backend and print its results.
demo: env
	$(BIN)/python scripts/run_notebook.py notebooks/01_quickstart.ipynb

## Lint, type-check and run every test suite.
test: env lint jest unit browser

lint: env $(LABEXT_NODE)
	$(BIN)/ruff check dask_flyte_jupyter tests bench scripts
	$(BIN)/ruff format --check dask_flyte_jupyter tests bench scripts
	$(BIN)/mypy dask_flyte_jupyter
	cd $(LABEXT) && $(JLPM) lint:check

unit: env
	$(BIN)/python -m pytest -q -p no:cacheprovider --ignore=tests/test_labextension.py \
		--ignore=tests/test_lab_ui.py

## The sidebar's unit tests (parser, writer and validation against the shared vectors).
jest: $(LABEXT_NODE)
	cd $(LABEXT) && $(JLPM) test

$(LABEXT_NODE): $(LABEXT)/package.json $(LABEXT)/yarn.lock | $(STAMP)
	cd $(LABEXT) && $(JLPM) install
	touch $@

## Rebuild the sidebar and put it where the venv's JupyterLab loads it from.
labextension: $(LABEXT_INSTALLED)/package.json

$(LABEXT_INSTALLED)/package.json: $(LABEXT_SRC) | $(LABEXT_NODE)
	cd $(LABEXT) && $(JLPM) build
	rm -rf $(LABEXT_INSTALLED)/static $(LABEXT_INSTALLED)/schemas
	mkdir -p $(LABEXT_INSTALLED)
	cp -R dask_flyte_jupyter/labextension/. $(LABEXT_INSTALLED)/
	cp $(LABEXT)/install.json $(LABEXT_INSTALLED)/

## Debian's Chromium for the browser tests (CI starts without it).
chromium:
	@test -x /usr/bin/chromium || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

## The wheel check and the sidebar in a real JupyterLab, in headless Chromium. The README's
## screenshots are refreshed with `FLYTE_DASK_SCREENSHOTS=docs make browser`.
browser: env labextension chromium
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_labextension.py tests/test_lab_ui.py

## Regenerate the rules the sidebar validates with (a test fails when they are stale).
rules: env
	$(BIN)/python -m dask_flyte_jupyter.schema > $(LABEXT)/src/rules.json

bench: env
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info
	rm -rf $(LABEXT)/node_modules $(LABEXT)/lib $(LABEXT)/.yarn dask_flyte_jupyter/labextension
