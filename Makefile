# The index of commands: `make help` lists them. Every target sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv demo test test-fast lint format bench docs clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install neoq with its dev tools

demo: $(STAMP) ## run a worker on the in-memory backend and print what it does
	$(PY) examples/demo.py

test: $(STAMP) ## run the whole test suite (PostgreSQL included) with coverage
	$(PY) -m pytest --cov=neoq --cov-report=term --cov-fail-under=90 $(PYTEST_ARGS)

test-fast: $(STAMP) ## run the tests that need no PostgreSQL
	$(PY) -m pytest -m "not postgres and not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff and mypy (strict on neoq/)
	$(VENV)/bin/ruff check neoq tests examples
	$(VENV)/bin/ruff format --check neoq
	$(VENV)/bin/mypy neoq

format: $(STAMP) ## format the code with ruff
	$(VENV)/bin/ruff format neoq
	$(VENV)/bin/ruff check --fix neoq tests examples

$(VENV)/.docs-installed: $(STAMP) setup.cfg
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $@

docs: $(VENV)/.docs-installed ## build the HTML documentation into site/ (mkdocs, warnings are errors)
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean: ## remove the virtualenv and build leftovers
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
