# Two entry points that work on a fresh machine with only Python, pip and apt:
#   make demo   - set up, then run the main job on the built-in sample archive
#   make test   - set up (system packages + virtualenv), then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup system-deps demo test test-assets lint typecheck bench docs notebooks clean

$(VENV)/.installed: pyproject.toml setup.py dicomflow/dicom/_cheader.c
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "dicomflow needs Python 3.11 or newer: set PYTHON=python3.11 (or later)" >&2; exit 1; }
	@# Debian's own Python has no venv/ensurepip until python3-venv is installed
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || bash scripts/system-deps.sh python3-venv
	@# the compiled scanner core needs a C compiler and this Python's headers (without them the
	@# install still works, in pure Python, but the CI tests of the core then fail with the reason)
	@command -v gcc >/dev/null || bash scripts/system-deps.sh gcc
	@$(PYTHON) -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	  || bash scripts/system-deps.sh python3-dev
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,docs]'
	touch $@

setup: $(VENV)/.installed

system-deps:
	bash scripts/system-deps.sh

demo: setup
	$(VENV)/bin/dicomflow demo demo-out

test: system-deps setup typecheck test-assets
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

# what the browser tests open: OHIF's published build, pinned and checked (into .cache/)
test-assets: setup
	$(PY) scripts/fetch_ohif.py

typecheck: setup
	$(VENV)/bin/mypy

lint: setup
	$(VENV)/bin/ruff check dicomflow tests benchmarks
	$(VENV)/bin/ruff format --check dicomflow tests benchmarks
	$(VENV)/bin/lint-imports

# The documentation site, into site/ (open site/index.html); warnings are errors (mkdocs.yml).
# The notebooks are rendered from their committed outputs: `make notebooks` refreshes those.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	@echo 'built site/: open site/index.html'

notebooks: setup
	$(PY) scripts/run_notebooks.py

# every benchmark, one after another, then one table of ratios (.bench/summary.md);
# `make bench QUICK=1` for small sizes (about 20 min), BENCH_ONLY=scan,deid for some
bench: setup
	$(PY) benchmarks/run_all.py $(if $(QUICK),--quick) $(if $(BENCH_ONLY),--only $(BENCH_ONLY))

clean:
	rm -rf demo-out .bench .pytest_cache site
