"""The PostgreSQL pass of ``make test``: is a server there, and the database tests against it.

``python -m tests.pg_pass check``: exit 0 when PostgreSQL answers at ``PG_URL``. When it does
not: under ``CI`` (any value but empty/0/false/no) print why on stderr and exit 1, since CI
must test the ``SELECT … FOR UPDATE SKIP LOCKED`` paths; otherwise exit 0 quietly (the
``run`` step says "skipped"). ``make test`` calls it first, so CI fails before the long
SQLite pass rather than after it.

``python -m tests.pg_pass run [pytest arguments]``: the same check (it prints
"== PostgreSQL not reachable …: skipped ==" and exits 0 outside CI), then the suite with
``--database-tests-only`` (``tests/conftest.py``: the tests that reach the database, and of
the browser scenarios those marked ``both_databases``; the others ran in the SQLite pass and
would prove nothing new), with ``DATABASE_URL`` naming a database unique to this run
(``klingweb_<pid>_<unix seconds>``): pytest-django creates and drops ``test_<name>``, the
browser tests' portal processes use ``<name>_e2e`` (``tests/e2e/conftest.py``), so two runs
on one server never share a database. Both are dropped again at the end, whatever happened
(an interrupted run leaves nothing behind). Exits with pytest's status.

``PG_URL`` (environment; default ``postgres://postgres@127.0.0.1:5432/postgres``) names a
role allowed to create databases and a database it can connect to. Nothing here imports
Django.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT = 3  # seconds


def ci() -> bool:
    """True when ``CI`` is set to something other than empty, 0, false or no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def with_database(url: str, name: str) -> str:
    """``url`` with its database (path) replaced by ``name``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def where(url: str) -> str:
    """``host:port`` of ``url`` for messages (no user name or password)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"


def reachable(url: str) -> str | None:
    """None when a connection to ``url`` succeeds within ``CONNECT_TIMEOUT`` s, else why not
    (the driver's message, first line)."""
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT).close()
    except psycopg.Error as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return None


def check(url: str, *, say_skipped: bool) -> tuple[bool, int]:
    """``(reachable, exit status)``. Unreachable under CI: message on stderr, status 1;
    unreachable otherwise: the "skipped" line when ``say_skipped``, status 0."""
    problem = reachable(url)
    if problem is None:
        return True, 0
    if ci():
        print(
            f"== PostgreSQL is not reachable at {where(url)} ({problem}). CI must run the "
            "PostgreSQL pass: start the server (.ci/run does when it is installed) or point "
            "PG_URL at one. ==",
            file=sys.stderr,
        )
        return False, 1
    if say_skipped:
        print(f"== PostgreSQL not reachable at {where(url)}: skipped ==")
    return False, 0


def drop_databases(url: str, names: list[str]) -> None:
    """``DROP DATABASE IF EXISTS … WITH (FORCE)`` for each name (PostgreSQL ≥ 13)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as admin:
        for name in names:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def run(url: str, pytest_args: list[str]) -> int:
    """The database tests (``--database-tests-only``) against a database unique to this run;
    returns pytest's status."""
    ok, status = check(url, say_skipped=True)
    if not ok:
        return status
    name = f"klingweb_{os.getpid()}_{int(time.time())}"
    print(f"== PostgreSQL ({where(url)}, test database test_{name}) ==", flush=True)
    env = dict(os.environ, DATABASE_URL=with_database(url, name))
    # SIGTERM (a CI job cancelled) ends the run through ``finally`` too, like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return subprocess.call(  # noqa: S603
            [sys.executable, "-m", "pytest", "-q", "--database-tests-only", *pytest_args],
            env=env,
        )
    finally:
        drop_databases(url, [f"test_{name}", f"{name}_e2e"])


def main(argv: list[str]) -> int:
    """``check`` or ``run [pytest arguments]``; see the module docstring."""
    url = os.environ.get("PG_URL") or DEFAULT_PG_URL
    if argv[:1] == ["check"] and len(argv) == 1:
        return check(url, say_skipped=False)[1]
    if argv[:1] == ["run"]:
        return run(url, argv[1:])
    print("usage: python -m tests.pg_pass check | run [pytest arguments]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
