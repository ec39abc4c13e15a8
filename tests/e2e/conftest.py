"""The browser-test harness: the real portal processes, the sandbox, and Chromium.

How it runs, and why:

- **The portal** runs as it does under ``make run``: ``klingweb.run.prepare`` (migrate,
  createcachetable, collectstatic, setup_schedules, demo_data) and then ``honcho`` on the project's
  ``Procfile`` starting ``web`` (gunicorn, WhiteNoise), ``worker`` (a real django-q2
  ``qcluster``) and ``poller`` (``kling_poll``), against a fresh SQLite file in a temporary
  folder with the ORM broker. Real processes with their own connections are what a browser
  test needs: pytest-django's
  ``live_server`` on SQLite shares one in-memory connection between threads, so a cluster
  thread's transactions (row claims, the ledger) would interleave with the server's. Here
  each process has its own connection to a WAL-mode file, exactly as in ``make run``. In
  ``make test``'s PostgreSQL pass (``DATABASE_URL`` set) the processes use a PostgreSQL
  database of their own instead (``portal_database``).
- **The sandbox** runs inside the test process (``SandboxServer`` on a free port) so a test
  drives its clock: ``task_seconds`` is long and ``stack.advance(...)`` moves tasks
  submitted → processing → finished on demand; the sandbox POSTs its callbacks to the
  portal (``PUBLIC_BASE_URL``), the way it does live.
- **The test process never touches the database**: tests assert what a user sees in the
  browser, plus what Kling (the sandbox) received.
- **Chromium** is Debian's ``/usr/bin/chromium`` driven by Playwright. Without it the tests
  are skipped, unless ``CI`` is set, when they fail: CI must run them.

Each test saves numbered screenshots under ``artifacts/e2e/<test>/`` (git-ignored;
``artifacts/e2e-postgres/`` in the PostgreSQL pass), plus one named ``failure`` when it fails;
the portal's process logs are copied to ``artifacts/e2e/servers.log`` at the end (during the run they are in the temporary folder
that failure messages name).
The database schema follows pytest's ``--nomigrations`` switch like the rest of the suite.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from klingweb.run import BASE_DIR, SANDBOX_ACCESS_KEY, SANDBOX_SECRET_KEY, prepare, wait_http
from tests.processes import free_port, portal_env, start_honcho, stop_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
#: ``artifacts/e2e``, or ``artifacts/e2e-postgres`` in the PostgreSQL pass: ``make test`` runs
#: the two passes at the same time, and a scenario of both passes must not wipe the other's.
ARTIFACTS = (
    BASE_DIR
    / "artifacts"
    / (
        "e2e-postgres"
        if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
        else "e2e"
    )
)
#: The sandbox clock only moves when a test calls ``stack.advance``; a task's whole life
#: on that clock is this long (processing after a third of it).
TASK_SECONDS = 300.0
#: Milliseconds Playwright waits for a page element or navigation.
TIMEOUT_MS = 20_000


#: CSP hash of the empty string: a refused ``style=""`` changes nothing on the page.
_EMPTY_STYLE_HASH = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class Stack:
    """The running portal: its address, the sandbox behind it, the demo password."""

    url: str  # "http://127.0.0.1:<port>", no trailing slash
    sandbox: object  # klingweb.sandbox.SandboxServer
    password: str
    log_path: Path
    team_codes: dict[str, str] = field(default_factory=dict)  # username -> first team's code
    created: list[tuple[str, str]] = field(default_factory=list)  # (team code, task code)

    def advance(self, seconds: float) -> None:
        """Move the sandbox clock forward and wait until its callbacks were delivered."""
        self.sandbox.advance(seconds)
        self.sandbox.wait_callbacks(timeout=10)

    def finish_all(self) -> None:
        """Let every task on the sandbox reach its final status (callbacks delivered)."""
        self.advance(TASK_SECONDS / 2)
        self.advance(TASK_SECONDS)

    def kling_tasks(self, *, family: str | None = None) -> list[dict]:
        """The tasks Kling (the sandbox) has received, oldest first."""
        tasks = self.sandbox.tasks_snapshot()
        return [t for t in tasks if family is None or t["family"] == family]

    def wait_kling_task(
        self,
        *,
        family: str | None = None,
        external_task_id: str | None = None,
        timeout: float = 30,
    ) -> dict:
        """Wait until Kling (the sandbox) holds a task of ``family`` (any when None) whose
        ``external_task_id`` is the portal task's code (any when None): the cluster has sent
        the create call. Returns the newest such task as ``tasks_snapshot`` describes it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tasks = [
                t
                for t in self.kling_tasks(family=family)
                if external_task_id is None or t["external_task_id"] == external_task_id
            ]
            if tasks:
                return tasks[-1]
            time.sleep(0.2)
        raise AssertionError(
            f"the cluster sent no {family or ''} task {external_task_id or ''} to Kling "
            f"within {timeout} s; see {self.log_path}"
        )

    def units_charged(self) -> Decimal:
        """Total ``final_unit_deduction`` of every finished task on the sandbox that Kling
        still answers for: a ``forget``-ed task is left out, as the account's costs leave it
        out (the portal ended it "Lost at vendor" without a charge)."""
        return sum(
            (
                Decimal(t["final_unit_deduction"] or "0")
                for t in self.kling_tasks()
                if not t.get("forgotten")
            ),
            Decimal("0"),
        )


@pytest.fixture(scope="package")
def chromium_path() -> Path:
    """Debian's Chromium; skips the browser tests without it (fails them when ``CI`` is set)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if _ci():
            pytest.fail(f"{message}; CI must run the browser tests.")
        pytest.skip(message)
    return CHROMIUM


@contextlib.contextmanager
def fresh_portal_database(suffix: str) -> Iterator[dict[str, str]]:
    """A database for one stack of portal processes: a fresh SQLite file in the stack's work
    folder (``{}``), or, when ``DATABASE_URL`` names a PostgreSQL server (``make test``'s
    PostgreSQL pass), a new database ``<its name>_<suffix>`` on that server, created here and
    dropped afterwards (``{"DATABASE_URL": ...}``, merged into the processes' environment).
    Each stack gets its own ``suffix``: two stacks never share a database."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        yield {}
        return
    import psycopg
    from psycopg import sql

    from tests.pg_pass import with_database

    name = urlsplit(url).path.lstrip("/") + "_" + suffix
    admin_url = with_database(url, "postgres")
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(drop)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield {"DATABASE_URL": with_database(url, name)}
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(drop)


@pytest.fixture(scope="package")
def portal_database() -> Iterator[dict[str, str]]:
    """The database of the shared stack (``fresh_portal_database("e2e")``)."""
    with fresh_portal_database("e2e") as extra:
        yield extra


@contextlib.contextmanager
def portal_stack(
    *,
    sandbox_config,
    database: dict[str, str],
    work: Path,
    nomigrations: bool,
    env_extra: dict[str, str] | None = None,
    log_copy: str = "servers.log",
) -> Iterator[Stack]:
    """Start the sandbox (``sandbox_config``, a ``SandboxConfig``) and the portal's ``web`` +
    ``worker`` + ``poller`` under honcho in ``work`` on ``database`` (what
    ``fresh_portal_database`` yields), with ``env_extra`` over the processes' environment;
    yield the ``Stack``; stop everything and copy the servers' log to
    ``artifacts/e2e/<log_copy>``. Fails the test when the portal does not answer in 60 s."""
    from klingweb.sandbox import SandboxServer

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    sandbox = SandboxServer(sandbox_config, host="127.0.0.1", port=0).start()
    port = free_port()
    password = secrets.token_urlsafe(12)
    env = portal_env(
        work=work,
        port=port,
        sandbox_url=sandbox.base_url,
        secret_key=secrets.token_urlsafe(48),
        password=password,
        nomigrations=nomigrations,
        extra=database,
    )
    env.update(env_extra or {})
    log_path = work / "servers.log"
    proc = None
    try:
        prepare(env=env, quiet=True)
        proc = start_honcho(
            names=["web", "worker", "poller"], env=env, port=port, log_path=log_path
        )
        url = f"http://127.0.0.1:{port}"
        if not wait_http(f"{url}/accounts/login/", timeout=60, proc=proc):
            tail = log_path.read_text()[-3000:]
            pytest.fail(f"the portal did not start; end of {log_path}:\n{tail}")
        yield Stack(url=url, sandbox=sandbox, password=password, log_path=log_path)
    finally:
        if proc is not None:
            stop_process(proc, timeout=20)  # honcho stops its processes, then exits
        sandbox.stop()
        if log_path.exists():
            shutil.copy(log_path, ARTIFACTS / log_copy)


@pytest.fixture(scope="package")
def stack(chromium_path, portal_database, tmp_path_factory, pytestconfig) -> Iterator[Stack]:
    """The shared stack (``portal_stack``): the sandbox and ``web`` + ``worker`` + ``poller``
    on a fresh database."""
    from klingweb.sandbox import SandboxConfig

    with portal_stack(
        sandbox_config=SandboxConfig(
            accounts={SANDBOX_ACCESS_KEY: SANDBOX_SECRET_KEY}, task_seconds=TASK_SECONDS, seed=8
        ),
        database=portal_database,
        work=tmp_path_factory.mktemp("e2e-portal"),
        nomigrations=bool(pytestconfig.getoption("nomigrations", default=False)),
    ) as running:
        yield running


@pytest.fixture(scope="package")
def browser(chromium_path) -> Iterator[object]:
    """One headless Chromium for the package (Playwright's sync API)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def shots(request) -> Callable[[object, str], Path]:
    """``shots(page, "step")`` saves ``artifacts/e2e/<test>/<nn>-<step>.png`` (full page)."""
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1, 1000))

    def save(page, step: str) -> Path:
        slug = re.sub(r"[^\w.-]+", "_", step)
        path = folder / f"{next(counter):02d}-{slug}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    save.folder = folder  # type: ignore[attr-defined]
    return save


@pytest.fixture
def new_page(browser, stack, shots, request) -> Iterator[Callable[[], object]]:
    """``new_page()`` opens a page in a fresh browser context (its own cookies).

    Every page is watched for what a person would hit as breakage without seeing it: an
    uncaught JavaScript error, or the browser refusing something under the
    Content-Security-Policy. Either fails the test (at teardown, listing them). When the
    test fails, every page opened this way is saved as ``failure-<n>.png``.
    """
    contexts = []
    problems: list[str] = []

    def on_console(page, msg) -> None:
        text = msg.text
        if msg.type != "error" or "Content Security Policy" not in text:
            return
        # An empty inline style refused (its hash is that of ""): nothing visible changes.
        if "Applying inline style" in text and _EMPTY_STYLE_HASH in text:
            return
        problems.append(f"{page.url}: {text}")

    def watch(page) -> None:
        page.on("pageerror", lambda exc: problems.append(f"{page.url}: JavaScript error {exc}"))
        page.on("console", lambda msg: on_console(page, msg))

    def open_page():
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        context.on("page", watch)
        contexts.append(context)
        return context.new_page()

    yield open_page
    report = getattr(request.node, "rep_call", None)
    for n, context in enumerate(contexts, start=1):
        if report is not None and report.failed:
            for page in context.pages:
                # Best effort: the test has already failed.
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(shots.folder / f"failure-{n}.png"), full_page=True)
        context.close()
    if problems and not (report is not None and report.failed):
        unique = list(dict.fromkeys(problems))
        pytest.fail("the pages reported errors:\n" + "\n".join(unique), pytrace=False)


def sign_in(page, stack: Stack, username: str) -> str:
    """Sign ``username`` in through the login form; return their first team's code (UUID).

    The home page sends a signed-in user to their first team's task list.
    """
    page.goto(f"{stack.url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(stack.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/t/[0-9a-f-]{36}/tasks/"))
    code = re.search(r"/t/([0-9a-f-]{36})/", page.url).group(1)
    stack.team_codes[username] = code
    return code
