"""Starting the portal's real processes for the suites that need them (browser tests, soak,
load bench): one copy of the code, shared.

- ``portal_env``: the environment ``make run`` would give its children (``klingweb.run.
  env_build``), pointed at a throwaway database, media and static folder of a work folder and
  at a sandbox on loopback, with the developer's shell variables that would point the
  processes elsewhere removed (``STRIPPED``).
- ``start_honcho``: the ``Procfile`` entries under honcho, as ``make run`` starts them (the
  browser tests use this).
- ``ProcfileProcess``: one ``Procfile`` entry (``web`` = gunicorn, ``worker`` = ``manage.py
  kling_worker``, ``poller`` = ``manage.py kling_poll``) in a process group of its own, so a test
  can SIGKILL the whole cluster (sentinel, workers, pusher, monitor) at once, as a crash or the OOM killer would, and start it again
  (``kling_worker`` runs its cluster in a group of its own; its processes die with the command
  through ``PR_SET_PDEATHSIG``).
- ``pids_marked``: the processes started with a given ``MARKER`` variable, orphans included.
- ``session_cookie_for``: a signed-in session for a user, made in the database (no password
  round trip), for HTTP clients such as ``wrk``.

Only loopback addresses are used. Nothing here imports Django at module level.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from klingweb.run import BASE_DIR, PROCFILE, env_build, honcho_command, wait_http  # noqa: F401

#: Environment variables of the developer's shell that must not leak into the portal
#: processes under test (they would point them at other databases, brokers or APIs).
STRIPPED = (
    "DATABASE_URL",
    "REDIS_URL",
    "SQLITE_PATH",
    "MEDIA_ROOT",
    "KLING_API_BASE_URL",
    "KLING_ACCESS_KEY",
    "KLING_SECRET_KEY",
    "KLING_SANDBOX_MODE",
    "KLING_WEBHOOK_SECRET",
    "PUBLIC_BASE_URL",
    "SECRET_KEY",
    "FERNET_KEYS",
    "DEBUG",
    "SECURE_COOKIES",
    "PORT",
    "DJANGO_SETTINGS_MODULE",
    "DEMO_PASSWORD",
    "ALLOWED_HOSTS",
)
#: Settings of the processes under test: the project's, plus a static folder per run and,
#: on request, the schema straight from the models (see that module).
SERVER_SETTINGS = "tests.e2e.server_settings"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def portal_env(
    *,
    work: Path,
    port: int,
    sandbox_url: str,
    secret_key: str,
    password: str,
    nomigrations: bool,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of the portal processes under test (and of ``prepare``).

    ``work``: a temporary folder holding the SQLite file (``db.sqlite3``, unless ``extra``
    sets ``DATABASE_URL``), ``media/`` and ``static/``. ``sandbox_url``: the sandbox's
    ``http://127.0.0.1:<port>``; the operator's default Kling account points at it (sandbox
    mode, ``PUBLIC_BASE_URL`` = the web server, so callbacks come back over HTTP).
    ``nomigrations``: tables straight from the models, as pytest's ``--nomigrations``.
    ``extra`` is applied last (``DJANGO_SETTINGS_MODULE``, ``Q_WORKERS``, ``REDIS_URL``…).
    """
    base = {k: v for k, v in os.environ.items() if k not in STRIPPED}
    base.update(
        SQLITE_PATH=str(work / "db.sqlite3"),
        MEDIA_ROOT=str(work / "media"),
        KLINGWEB_E2E_STATIC_ROOT=str(work / "static"),
        DJANGO_SETTINGS_MODULE=SERVER_SETTINGS,
        Q_WORKERS="2",
        WEB_CONCURRENCY="2",
    )
    if nomigrations:
        base["KLINGWEB_E2E_NOMIGRATIONS"] = "1"
    base.update(extra or {})
    env, sandbox_mode = env_build(
        base=base,
        file_vars={"SECRET_KEY": secret_key, "DEMO_PASSWORD": password},
        port=port,
        sandbox_port=int(sandbox_url.rsplit(":", 1)[1]),
    )
    assert sandbox_mode and env["KLING_API_BASE_URL"] == sandbox_url, "not in sandbox mode"
    return env


def start_honcho(
    *, names: list[str], env: Mapping[str, str], port: int, log_path: Path
) -> subprocess.Popen:
    """``honcho start <names>`` on the project's ``Procfile`` (as ``make run``), output to
    ``log_path``. Stop it with ``stop_process`` (honcho stops its children)."""
    with log_path.open("a") as log:
        return subprocess.Popen(  # noqa: S603
            honcho_command(names=names, port=port, colour=False),
            env=dict(env),
            cwd=BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_process(proc: subprocess.Popen, *, timeout: float = 20) -> None:
    """SIGTERM ``proc``, wait ``timeout`` s, then SIGKILL it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def procfile_command(name: str, procfile: Path = PROCFILE) -> str:
    """The shell command of the ``Procfile`` entry ``name`` (honcho's parser)."""
    from honcho.environ import parse_procfile

    return parse_procfile(procfile.read_text()).processes[name]


class ProcfileProcess:
    """One ``Procfile`` entry run by ``/bin/sh -c`` in a new session (its own process group).

    ``start()`` (again after ``kill()``/``stop()``), ``kill()`` sends SIGKILL to the whole
    group (a crash: no clean-up runs), ``stop()`` SIGTERM then SIGKILL after ``timeout`` s.
    Output is appended to ``log_path``; ``starts`` counts the starts.
    """

    def __init__(self, name: str, *, env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.env = dict(env)
        self.log_path = log_path
        self.command = procfile_command(name)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> ProcfileProcess:
        """Start the entry (no-op if it runs); returns ``self``."""
        if self.alive():
            return self
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(  # noqa: S603
                ["/bin/sh", "-c", self.command],
                env=self.env,
                cwd=BASE_DIR,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        return self

    def alive(self) -> bool:
        """True while the group leader runs."""
        return self.proc is not None and self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL every process of the group and reap the leader."""
        self._signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self, *, timeout: float = 20) -> None:
        """SIGTERM the group, then SIGKILL what is left after ``timeout`` seconds."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)
        # Workers may outlive the leader briefly; make sure the whole group is gone.
        self._signal_group(signal.SIGKILL)
        self.proc.wait()


def session_cookie_for(user) -> str:
    """A signed-in session of ``user`` stored in the database; returns the ``sessionid``
    cookie value. Django must be set up against the same database as the web server."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return session.session_key


def wait_until(predicate, *, timeout: float, interval: float = 0.5) -> bool:
    """Call ``predicate()`` until it is truthy (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


#: Name of the environment variable that marks the processes of one test or bench run, so
#: leftovers (orphans included) can be found afterwards (``pids_marked``).
MARKER = "KLINGWEB_TEST_MARKER"


def pids_marked(value: str) -> list[int]:
    """Pids of the processes whose environment holds ``MARKER=value`` (Linux ``/proc``);
    a process's environment is the one it was started with, inherited by its children."""
    needle = f"{MARKER}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found
