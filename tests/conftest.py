"""Shared fixtures: a team with one person per role, an outsider, and the Kling sandbox.

``portal`` gives the cast used by every view test (DESIGN.md §3): ``owner``, ``admin``,
``member``, ``viewer`` of ``team``, and ``outsider`` who owns ``other_team``.
``sandbox`` is a real Kling look-alike HTTP server on a free loopback port, shared by the
session; ``kling_settings`` points the operator default account at it. Every test gets its
own temporary ``MEDIA_ROOT`` and fast password hashing (autouse fixtures).

``--database-tests-only`` (``make test``'s PostgreSQL pass, ``tests/pg_pass.py``) keeps only
the tests whose outcome can depend on the database (``uses_database``) and deselects the rest:
they ran in the SQLite pass already and would prove nothing new.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model

from klingweb.accounts.models import Membership, Role, Team

SANDBOX_AK = "sandbox-access-key"
SANDBOX_SK = "sandbox-secret-key-for-the-klingweb-test-suite"
PASSWORD = "correct-horse-battery-staple-42"


#: pytest-django's fixtures through which a test reaches the database; without one of them (or
#: the ``django_db`` marker) pytest-django refuses every query of the test process.
DATABASE_FIXTURES = frozenset(
    {
        "db",
        "transactional_db",
        "django_db_reset_sequences",
        "django_db_serialized_rollback",
        "live_server",
    }
)


def pytest_addoption(parser) -> None:
    """``--database-tests-only``: see the module docstring and ``uses_database``."""
    parser.addoption(
        "--database-tests-only",
        action="store_true",
        help="deselect the tests whose outcome cannot depend on the database "
        "(make test's PostgreSQL pass)",
    )


def uses_database(item) -> bool:
    """True when ``item``'s outcome can depend on the database backend.

    - A browser scenario (marker ``e2e``) starts portal processes on the pass's database, but
      what it proves is what a person sees: it counts only when also marked
      ``both_databases`` (it shows behaviour that hangs on the database: locks, several
      processes writing the same rows). The rest run once, in the SQLite pass (``make run``'s
      database); the multi-process shape on PostgreSQL is the topology test's and the soak's.
    - Any other test counts when it has the ``django_db`` marker or one of
      ``DATABASE_FIXTURES`` in its fixture closure. Without them pytest-django blocks every
      query in the test process, and the processes such tests start either get no
      ``DATABASE_URL`` (stripped, or a SQLite file of their own) or never connect (the
      sandbox command), so their outcome is the same on both passes: the client, the
      sandbox, parsing, settings, the soak and topology (which make their own databases).
    """
    if item.get_closest_marker("e2e") is not None:
        return item.get_closest_marker("both_databases") is not None
    if item.get_closest_marker("django_db") is not None:
        return True
    return bool(DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config, items) -> None:
    """Under ``--database-tests-only`` deselect what ``uses_database`` says is database-free."""
    if not config.getoption("database_tests_only"):
        return
    kept = [item for item in items if uses_database(item)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if not uses_database(item)])
        items[:] = kept


#: Background scenarios of the session (``tests/background.py``) not started yet:
#: ``(name, command, env)`` of each collected test marked ``background`` and not skipped.
_background_pending: list[tuple[str, list[str], dict[str, str]]] = []


def pytest_collection_finish(session) -> None:
    """Note the background scenarios of the tests that will run (``-k``, ``-m`` and
    ``--database-tests-only`` applied; a test whose ``skipif`` holds starts nothing)."""
    _background_pending.clear()
    for item in session.items:
        mark = item.get_closest_marker("background")
        if mark is None or any(m.args and m.args[0] for m in item.iter_markers("skipif")):
            continue
        _background_pending.append(tuple(mark.args))


def pytest_runtest_setup(item) -> None:
    """Start the background scenarios at the first test that is not a browser scenario
    (those come first, ``tests/e2e``): the scenarios' processes then never compete with
    Chromium and the portal stacks, and have the rest of the session to finish."""
    from tests import background

    if _background_pending and item.get_closest_marker("e2e") is None:
        for name, command, env in _background_pending:
            background.start(name, command, env)
        _background_pending.clear()


def pytest_sessionfinish(session) -> None:
    """Stop background scenarios whose test did not wait for them."""
    from tests import background

    background.stop_all()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """SQLite tests use a per-process temporary file, not shared-cache memory: threads of a
    ``transaction=True`` test (callback + poll at once) then wait on the busy timeout instead
    of failing with "database table is locked"."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        name = os.path.join(tempfile.gettempdir(), f"klingweb-test-{os.getpid()}.sqlite3")
        db.setdefault("TEST", {})["NAME"] = name


@dataclass
class Portal:
    """The cast of a view test."""

    team: Team
    other_team: Team
    owner: object
    admin: object
    member: object
    viewer: object
    outsider: object


def make_user(username: str, **extra):
    """Create a user with ``PASSWORD`` and e-mail ``<username>@example.com``."""
    return get_user_model().objects.create_user(
        username=username, email=f"{username}@example.com", password=PASSWORD, **extra
    )


@pytest.fixture(autouse=True)
def _temporary_media_root(settings, tmp_path):
    """Every test stores uploads and kept media under its own ``tmp_path/media``, never in
    the repository's ``media/``. Setting ``MEDIA_ROOT`` through pytest-django's ``settings``
    sends ``setting_changed``, on which ``default_storage`` forgets its cached location."""
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture(autouse=True)
def _fresh_report_cache():
    """Every test starts with an empty in-memory report cache (team ids are reused between
    tests on SQLite). A Redis report cache is left alone: its keys carry ledger versions
    that start from the clock (``tasks_app.rollups``), so they never repeat."""
    from django.conf import settings
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    cache = caches[settings.REPORT_CACHE]
    if isinstance(cache, LocMemCache):
        cache.clear()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """MD5 hashing in tests: the default PBKDF2 costs seconds per fixture on 2 cores."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def portal(db) -> Portal:
    """A team with an owner, an admin, a member and a viewer; an outsider owning another."""
    team = Team.objects.create(name="Blue team")
    other = Team.objects.create(name="Red team")
    users = {}
    for role in (Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER):
        users[role] = make_user(role.value)
        Membership.objects.create(user=users[role], team=team, role=role)
    outsider = make_user("outsider")
    Membership.objects.create(user=outsider, team=other, role=Role.OWNER)
    return Portal(
        team=team,
        other_team=other,
        owner=users[Role.OWNER],
        admin=users[Role.ADMIN],
        member=users[Role.MEMBER],
        viewer=users[Role.VIEWER],
        outsider=outsider,
    )


@pytest.fixture(scope="session")
def sandbox():
    """A running Kling sandbox (real HTTP on 127.0.0.1, free port), fast task clock."""
    from klingweb.sandbox import SandboxConfig, SandboxServer

    server = SandboxServer(
        SandboxConfig(accounts={SANDBOX_AK: SANDBOX_SK}, task_seconds=1.0),
        host="127.0.0.1",
        port=0,
    ).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_sandbox(sandbox):
    """The session sandbox with its fault knobs reset to none before and after the test."""
    sandbox.reset_faults()
    yield sandbox
    sandbox.reset_faults()


def use_api_key(settings, sandbox, key: str, account: str = SANDBOX_AK) -> None:
    """Point the operator default Kling account at ``sandbox`` with only the API key ``key``
    (no access key + secret key), registered there as a key of the vendor ``account``."""
    sandbox.config.api_keys[key] = account
    settings.KLING_API_BASE_URL = sandbox.base_url
    settings.KLING_API_KEY = key
    settings.KLING_ACCESS_KEY = ""
    settings.KLING_SECRET_KEY = ""


@pytest.fixture
def kling_settings(settings, fresh_sandbox):
    """Point the operator default Kling account at the sandbox."""
    settings.KLING_API_BASE_URL = fresh_sandbox.base_url
    settings.KLING_ACCESS_KEY = SANDBOX_AK
    settings.KLING_SECRET_KEY = SANDBOX_SK
    return settings
