# Klingweb. The README's two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_URL ?= postgres://postgres@127.0.0.1:5432/postgres

.PHONY: run test test-sqlite test-postgres lint bench soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m klingweb.run

# ruff, then the dependency rules of DESIGN.md §1 (import-linter; [tool.importlinter] in
# pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo --no-cache

test-sqlite: $(STAMP)
	env -u DATABASE_URL -u REDIS_URL $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Every test again on PostgreSQL, browser scenarios included (their portal processes then use
# a PostgreSQL database too), with a database name unique to the run, dropped at the end.
# No PostgreSQL at PG_URL: "skipped", except under CI=true, where it fails (tests/pg_pass.py).
test-postgres: $(STAMP)
	@PG_URL='$(PG_URL)' $(BIN)/python -m tests.pg_pass run $(PYTEST_ARGS)

# Under CI=true a missing PostgreSQL fails at once, before the SQLite pass.
test: lint
	@start=$$(date +%s); \
	PG_URL='$(PG_URL)' $(BIN)/python -m tests.pg_pass check && \
	echo "== SQLite ==" && $(MAKE) --no-print-directory test-sqlite && \
	$(MAKE) --no-print-directory test-postgres; rc=$$?; \
	echo "make test took $$(( $$(date +%s) - start )) s"; exit $$rc

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks.run

# The soak's fault scenarios, then the two-machine topology at full size (500 tasks; needs
# haproxy, Redis, PostgreSQL and rclone: tests/benchmarks/topology.py).
soak: $(STAMP)
	@rc=0; $(BIN)/python -m tests.benchmarks.soak || rc=1; \
	$(BIN)/python -m tests.benchmarks.topology || rc=1; exit $$rc

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
