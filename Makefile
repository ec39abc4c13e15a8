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

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-sqlite: $(STAMP)
	env -u DATABASE_URL -u REDIS_URL $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The browser tests (marker e2e) run once, in the SQLite pass: they start their own portal
# processes on the embedded default (what `make run` uses), so a second pass would repeat it.
test-postgres: $(STAMP)
	@if $(BIN)/python -c "import psycopg,sys; psycopg.connect('$(PG_URL)', connect_timeout=3).close()" 2>/dev/null; then \
		echo "== PostgreSQL =="; \
		DATABASE_URL=$(PG_URL) $(BIN)/python -m pytest -q -m "not e2e" $(PYTEST_ARGS); \
	else echo "== PostgreSQL not reachable on 127.0.0.1:5432: skipped =="; fi

test: lint
	@start=$$(date +%s); \
	echo "== SQLite =="; $(MAKE) --no-print-directory test-sqlite && \
	$(MAKE) --no-print-directory test-postgres; rc=$$?; \
	echo "make test took $$(( $$(date +%s) - start )) s"; exit $$rc

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks.run

soak: $(STAMP)
	$(BIN)/python -m tests.benchmarks.soak

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
