# The index of commands: `make help` lists them. Every target sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CORE_STAMP := $(VENV)/.core-installed

.DEFAULT_GOAL := help
.PHONY: help venv demo test test-fast test-django-suite chaos soak lint format bench bench-ab bench-peers bench-glimit bench-lease bench-scale bench-dashboard browser dashboard-screenshots docs tox tox-extra dist smoke clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# The demo needs neoq alone (quick on a fresh machine); tests and lint add the dev tools.
$(CORE_STAMP): setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $(CORE_STAMP)

$(STAMP): $(CORE_STAMP)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install neoq with its dev tools

demo: $(CORE_STAMP) ## run a worker on the in-memory backend and print what it does, then on a SQLite file
	$(PY) examples/demo.py

# The dashboard's browser tests drive Debian's headless Chromium; installed here when missing (root only).
browser: ## install Chromium and its driver for the dashboard's browser tests (apt-get, when missing)
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
		{ [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } || \
		echo "make browser: install chromium and chromium-driver to run the dashboard's browser tests"

test: $(STAMP) browser ## run the whole test suite (PostgreSQL included) with coverage
	$(PY) -m pytest --cov=neoq --cov-report=term --cov-fail-under=90 $(PYTEST_ARGS)

test-fast: $(STAMP) ## run the tests that need no server (PostgreSQL, MySQL, Redis)
	$(PY) -m pytest -m "not postgres and not mysql and not redis and not slow" $(PYTEST_ARGS)

test-django-suite: $(STAMP) ## Django's own tests/tasks suite on neoq's django.tasks backend (memory, PostgreSQL)
	$(PY) tools/django_suite.py $(SUITE_ARGS)

chaos: $(STAMP) ## the fault suite at full size: SIGKILLed workers, database restarts, lost wake-ups, poison jobs
	NEOQ_CHAOS=full $(PY) -m pytest -s tests/chaos --ignore=tests/chaos/test_chaos_soak.py $(PYTEST_ARGS)

SOAK_SECONDS ?= 600
soak: $(STAMP) ## a mixed load for SOAK_SECONDS (default 600) checking threads, files, connections, memory stay flat
	SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest -s tests/chaos/test_chaos_soak.py $(PYTEST_ARGS)

lint: $(STAMP) ## ruff and mypy (strict on neoq/); bash -n on the CI script
	bash -n .ci/run
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

# tox looks for python3.X on PATH; pyenv's shims answer only for its global version, so put every
# installed 3.x interpreter on PATH for tox.
PYENV_ROOT ?= $(HOME)/.pyenv
empty :=
space := $(empty) $(empty)
TOX_PATH := $(subst $(space),:,$(strip $(wildcard $(PYENV_ROOT)/versions/3.1[0-9]*/bin) $(PATH)))
TOX := PATH="$(TOX_PATH)" $(VENV)/bin/tox

$(VENV)/.tox-installed: $(STAMP)
	$(PY) -m pip install --quiet 'tox>=4.11' 'build>=1.2'
	touch $@

tox: $(VENV)/.tox-installed ## the matrix: Python 3.10-3.13, PostgreSQL 14-18, lint, type, docs (TOX_ARGS=...)
	$(TOX) $(TOX_ARGS)

# CI's extra leg stays short: the backend behaviour suite and the framework integrations.
TOX_EXTRA_TESTS ?= tests/test_postgres_suite.py tests/test_postgres_fork.py tests/test_django.py tests/test_flask.py \
	tests/test_django_contract.py tests/test_flask_cron.py

tox-extra: $(VENV)/.tox-installed ## CI's extra leg: PostgreSQL suite + Flask/Django on Python 3.12 and PostgreSQL 16
	$(TOX) -e py312-pg16 --skip-missing-interpreters false -- -q -m "postgres and not slow" $(TOX_EXTRA_TESTS)

dist: $(VENV)/.tox-installed ## build the wheel and the sdist into dist/
	rm -rf dist
	$(PY) -m build --outdir dist .

smoke: dist ## install the wheel and the sdist in clean virtualenvs and check they work
	$(PY) tools/smoke_dist.py dist

bench: $(STAMP) ## benchmark neoq (memory, PostgreSQL) beside minimal loops; BENCH_ARGS=--quick, BENCH_ROUNDS=n
	$(PY) -m benchmarks.run $(BENCH_ARGS)

BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.installed: setup.cfg benchmarks/requirements-peers.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[postgres,mysql,redis]' -r benchmarks/requirements-peers.txt
	touch $@

AB_REF ?= HEAD
bench-ab: $(STAMP) ## make bench with neoq at AB_REF (default HEAD) run beside this checkout, interleaved
	$(PY) -m benchmarks.run --ab $(AB_REF) $(BENCH_ARGS)

bench-peers: $(BENCH_VENV)/.installed ## the same beside huey, procrastinate, pgqueuer, rq, Celery (own virtualenv .venv-bench)
	$(BENCH_VENV)/bin/python -m benchmarks.run --peers $(BENCH_ARGS)

bench-glimit: $(STAMP) ## a queue with global_limit=10 beside the same queue without, concurrency 10 (PostgreSQL, both modes)
	$(PY) -m benchmarks.glimit $(BENCH_ARGS)

bench-lease: $(BENCH_VENV)/.installed ## lease mode beside transaction mode and pgqueuer: 10,000 queued no-op jobs, concurrency 10
	$(BENCH_VENV)/bin/python -m benchmarks.lease $(BENCH_ARGS)

bench-scale: $(STAMP) ## neoq on PostgreSQL with 100,000 jobs queued and 1,000,000 processed kept
	$(PY) -m benchmarks.scale $(BENCH_ARGS)

bench-dashboard: $(STAMP) ## dashboard page timings with 1,000,000 finished and 100,000 waiting jobs (PostgreSQL; heavy)
	$(PY) -m benchmarks.dashboard $(BENCH_ARGS)

dashboard-screenshots: $(STAMP) browser ## refresh docs/images/dashboard-*.png from the browser tests
	NEOQ_SCREENSHOTS=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_dashboard_browser.py \
		-k "test_the_dashboard_in_a_browser and memory or test_the_chart_shows_the_last_hour"

clean: ## remove the virtualenv and build leftovers
	rm -rf $(VENV) $(BENCH_VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
