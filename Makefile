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

# The database tests again on PostgreSQL (tests/pg_pass.py runs pytest --database-tests-only,
# tests/conftest.py): every test that reaches the database, and the browser scenarios marked
# both_databases (their portal processes then use a PostgreSQL database too). Tests that never
# touch a database (client, sandbox, parsing, settings; the soak and topology, which make their
# own databases) and the other browser scenarios ran in the SQLite pass and are deselected.
# A database name unique to the run, dropped at the end. No PostgreSQL at PG_URL: "skipped",
# except under CI=true, where it fails.
test-postgres: $(STAMP)
	@PG_URL='$(PG_URL)' $(BIN)/python -m tests.pg_pass run $(PYTEST_ARGS)

# Under CI=true a missing PostgreSQL fails at once, before the SQLite pass. The two passes run
# at the same time: the suite mostly waits (sandbox clocks, poll intervals, processes starting;
# the SQLite pass keeps one of the two cores about a third busy), and they share nothing (a
# SQLite file per process and a PostgreSQL database per run, free ports, Redis databases of
# their own, artifacts/e2e vs artifacts/e2e-postgres). The PostgreSQL pass's output is printed
# after the SQLite pass's; the status is the first failure.
test: lint
	@start=$$(date +%s); \
	PG_URL='$(PG_URL)' $(BIN)/python -m tests.pg_pass check || exit 1; \
	pglog=$$(mktemp); \
	( $(MAKE) --no-print-directory test-postgres >"$$pglog" 2>&1; echo $$? >"$$pglog.rc"; \
	  echo "$$(( $$(date +%s) - start ))" >"$$pglog.s" ) & pgpid=$$!; \
	echo "== SQLite (the PostgreSQL pass runs alongside; its output follows) =="; \
	$(MAKE) --no-print-directory test-sqlite; rc=$$?; \
	echo "SQLite pass took $$(( $$(date +%s) - start )) s"; \
	wait $$pgpid; cat "$$pglog"; pgrc=$$(cat "$$pglog.rc" 2>/dev/null || echo 1); \
	echo "PostgreSQL pass took $$(cat "$$pglog.s" 2>/dev/null || echo '?') s"; \
	rm -f "$$pglog" "$$pglog.rc" "$$pglog.s"; \
	[ $$rc -eq 0 ] && rc=$$pgrc; \
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
