# sqlitedos: everything a developer or CI runs. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules
.DEFAULT_GOAL := help

PYTHON ?= python3
# one venv per interpreter: `make test PYTHON=python3.10 VENV=.venv-py310`
VENV ?= .venv
VENV_AIIDA := .venv-aiida
AIIDA_VERSION := 2.9.4
DEMO_DIR ?= $(shell mktemp -d)/demo-storage
N ?= 10000
DEST ?=

.PHONY: help install test demo vendor bench bench-aiida interop lint clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.stamp ## create .venv with the package (editable) and its test extra

test: $(VENV)/.stamp ## run the test suite
	$(VENV)/bin/python -m pytest -q

demo: $(VENV)/.stamp ## initialise a storage folder and show what it is
	$(VENV)/bin/python -m sqlitedos demo $(DEMO_DIR)

vendor: ## copy the package (schema inside) to DEST/sqlitedos/, for use without pip: make vendor DEST=dir
	@test -n "$(DEST)" || { echo 'usage: make vendor DEST=dir' >&2; exit 2; }
	$(PYTHON) -m sqlitedos.vendor $(DEST)

$(VENV_AIIDA)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV_AIIDA)
	$(VENV_AIIDA)/bin/pip install --quiet --upgrade pip
	$(VENV_AIIDA)/bin/pip install --quiet 'aiida-core==$(AIIDA_VERSION)' pytest hypothesis
	$(VENV_AIIDA)/bin/pip install --quiet --no-deps -e .
	touch $@

interop: $(VENV_AIIDA)/.stamp ## check compatibility with aiida-core both ways (installs it into .venv-aiida)
	$(VENV_AIIDA)/bin/python -m pytest -q tests/interop -p no:cacheprovider

bench: $(VENV)/.stamp ## run the benchmarks against the raw sqlite3/disk-objectstore limits
	$(VENV)/bin/python bench/run.py --n $(N)

bench-aiida: $(VENV)/.stamp $(VENV_AIIDA)/.stamp ## the benchmarks with aiida-core side by side
	$(VENV)/bin/python bench/run.py --n $(N) --aiida-python $(VENV_AIIDA)/bin/python

lint: $(VENV)/.stamp ## check style with ruff
	$(VENV)/bin/pip install --quiet 'ruff==0.17.6'
	$(VENV)/bin/ruff check sqlitedos tests bench
	$(VENV)/bin/ruff format --check sqlitedos tests bench

clean: ## remove the virtual environments and build output
	rm -rf $(VENV) $(VENV_AIIDA) build dist .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
