# One entry point for set-up, running and checking. Every target makes its own venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= config

.PHONY: run poll check test test-fast lint format bench bytecode clean

# The inner loop leaves out the costly tiers (markers in pyproject.toml).
FAST := not slow and not postgres and not corpus
# Coverage of monitor/ by the whole suite must not fall below this (per cent): a little
# below what a whole `make test` on a fresh clone reported (89.0% on 2026-12-07).
COV_FLOOR ?= 87

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

# Bytecode for our own modules, written even where PYTHONDONTWRITEBYTECODE is set (as in
# many containers and CI machines): an editable install is never compiled by pip, so every
# `monitor` process, pass worker and test subprocess would compile the package again
# (0.2 s of a 1.4 s `monitor poll` with nothing new, measured). Up-to-date files are skipped.
bytecode:
	$(PY) -m compileall -q monitor

run: $(VENV)/.run-installed bytecode  ## the service on the example config, SQLite in $(CONFIG)/data
	$(PY) -m monitor --config $(CONFIG) run

poll: $(VENV)/.run-installed bytecode  ## one pass over every feed
	$(PY) -m monitor --config $(CONFIG) poll

check: $(VENV)/.run-installed bytecode
	$(PY) -m monitor --config $(CONFIG) check

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check monitor tests bench
	$(VENV)/bin/ruff format --check monitor tests bench
	$(VENV)/bin/mypy

format: $(VENV)/.test-installed
	$(VENV)/bin/ruff format monitor tests bench
	$(VENV)/bin/ruff check --fix monitor tests bench

# Both tiers run on two processes (pytest-xdist). The costly tiers spend most of their
# time waiting (backoffs, leases, restarts of killed processes: 8 minutes of CPU in 18 of
# wall when run one at a time), so two at once take about 10 minutes, not 18; their
# deadlines are set for a loaded machine (tests that fail under load are bugs).
test: lint bytecode  ## every test, with coverage; CI runs this (.ci/run)
	$(PY) -m pytest -n 2 -m "$(FAST)" --cov=monitor --cov-report=
	$(PY) -m pytest -n 2 -m "not ($(FAST))" --cov=monitor --cov-append \
		--cov-report=term:skip-covered --cov-fail-under=$(COV_FLOOR)

test-fast: $(VENV)/.test-installed bytecode  ## no slow, PostgreSQL or corpus tests: the inner loop
	$(PY) -m pytest -n 2 -m "$(FAST)"

bench: $(VENV)/.test-installed bytecode  ## every benchmark, then one table of their ratios
	$(PY) bench/table.py

clean:
	rm -rf $(VENV) data $(CONFIG)/data .pytest_cache .mypy_cache .ruff_cache
