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
AIIDA_TESTS ?= ../shared/aiida-tests
AIIDA_SUITE_OUT ?= $(CURDIR)/.aiida-suite
AIIDA_SUITE_PATHS ?= tests/orm tests/engine tests/tools/archive

#: a comma list of bench workloads (W1..W7, cold, rss), e.g. `make bench WORKLOADS=W4`; empty: all of them
WORKLOADS ?=

DEST ?=

.PHONY: help install test test-tools crashtest demo vendor bench bench-aiida bench-scale interop aiida-suite lint clean

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

crashtest: $(VENV)/.stamp ## power cuts at >= 200 seeded points under FUSE (installs fuse3; fails without FUSE)
	command -v fusermount3 >/dev/null || { apt-get update -qq && apt-get install -y -qq fuse3; }
	tmp=$$(mktemp -d) && echo "crashtest: cut states under $$tmp (removed when all pass)" && \
	SQLITEDOS_CRASH_FULL=1 $(VENV)/bin/python -m pytest -q -s -p no:cacheprovider --basetemp "$$tmp/t" \
	  tests/test_crash_consistency.py && rm -rf "$$tmp"

test-tools: ## install strace, which the fault-injection tests need (root, apt-get); they skip, saying so, without it
	command -v strace >/dev/null || (apt-get update -qq && apt-get install -y -qq strace)

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

$(VENV_AIIDA)/.stamp-suite: $(VENV_AIIDA)/.stamp
	$(VENV_AIIDA)/bin/pip install --quiet 'pytest==8.3.5' pytest-timeout pytest-regressions pytest-asyncio \
		pytest-datadir pytest-rerunfailures pgtest sphinx
	$(VENV_AIIDA)/bin/pip install --quiet --no-deps -e .
	touch $@

interop: $(VENV_AIIDA)/.stamp ## check compatibility with aiida-core both ways (installs it into .venv-aiida)
	$(VENV_AIIDA)/bin/python -m pytest -q tests/interop -p no:cacheprovider

aiida-suite: $(VENV_AIIDA)/.stamp-suite ## aiida-core's own tests on core.sqlite_dos and sqlitedos.dos, compared (AIIDA_TESTS=DIR)
	bash $(AIIDA_TESTS)/run.sh $(CURDIR)/$(VENV_AIIDA)/bin/python core.sqlite_dos $(AIIDA_SUITE_OUT)/core.sqlite_dos \
		$(AIIDA_SUITE_PATHS) || true
	bash $(AIIDA_TESTS)/run.sh $(CURDIR)/$(VENV_AIIDA)/bin/python sqlitedos.dos $(AIIDA_SUITE_OUT)/sqlitedos.dos \
		$(AIIDA_SUITE_PATHS) || true
	$(PYTHON) tests/aiida_suite/compare.py $(AIIDA_SUITE_OUT)/core.sqlite_dos/junit.xml \
		$(AIIDA_SUITE_OUT)/sqlitedos.dos/junit.xml tests/aiida_suite/expected_failures.txt


bench: $(VENV)/.stamp ## run the benchmarks against the raw sqlite3/disk-objectstore limits (WORKLOADS=W4 for one)
	$(VENV)/bin/python bench/run.py --n $(N) $(if $(WORKLOADS),--workloads $(WORKLOADS))

SCALE_N ?= 1000000

bench-scale: $(VENV)/.stamp ## sqlitedos at 1M nodes/links + 100k files beside the raw floor (N=... for fewer)
	$(VENV)/bin/python bench/scale.py --n $(if $(filter command line,$(origin N)),$(N),$(SCALE_N))

bench-aiida: $(VENV)/.stamp $(VENV_AIIDA)/.stamp ## the benchmarks with aiida-core side by side
	$(VENV)/bin/python bench/run.py --n $(N) --aiida-python $(VENV_AIIDA)/bin/python

lint: $(VENV)/.stamp ## check style with ruff and types with mypy (versions pinned in pyproject's lint extra)
	$(VENV)/bin/pip install --quiet -e '.[lint]'
	$(VENV)/bin/ruff check sqlitedos tests bench
	$(VENV)/bin/ruff format --check sqlitedos tests bench
	$(VENV)/bin/mypy

clean: ## remove the virtual environments and build output
	rm -rf $(VENV) $(VENV_AIIDA) $(AIIDA_SUITE_OUT) build dist .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
