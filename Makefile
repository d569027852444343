# One entry point for set-up, running and checking. Every target makes its own venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= config

.PHONY: run poll check test lint format bench clean

$(VENV)/.run-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed  ## the service on the example config, SQLite in ./data
	$(PY) -m monitor --config $(CONFIG) run

poll: $(VENV)/.run-installed  ## one pass over every feed
	$(PY) -m monitor --config $(CONFIG) poll

check: $(VENV)/.run-installed
	$(PY) -m monitor --config $(CONFIG) check

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check monitor tests bench
	$(VENV)/bin/ruff format --check monitor tests bench
	$(VENV)/bin/mypy

format: $(VENV)/.test-installed
	$(VENV)/bin/ruff format monitor tests bench
	$(VENV)/bin/ruff check --fix monitor tests bench

test: lint
	$(PY) -m pytest

bench: $(VENV)/.test-installed  ## every benchmark, then one table of their ratios
	$(PY) bench/table.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
