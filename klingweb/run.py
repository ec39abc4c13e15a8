"""`make run`: prepare the local portal and start it as one supervised group of processes.

``python -m klingweb.run`` (what ``make run`` calls, after creating ``.venv``):

1. Reads ``.env`` in the project folder, writing it first if it is missing: a random
   ``SECRET_KEY``, a Fernet key (``FERNET_KEYS``) that encrypts teams' Kling secret keys at
   rest, and the demo accounts' password (``DEMO_PASSWORD``). The file is git-ignored and
   kept: deleting it makes stored Kling secret keys unreadable and signs everybody out.
   Variables already set in the environment win over the file.
2. Chooses the mode. Without Kling credentials the portal runs in sandbox mode: the
   built-in Kling look-alike (``manage.py kling_sandbox``) starts on 127.0.0.1:8700 and the
   operator's default Kling account points at it (``KLING_API_BASE_URL``, sandbox keys,
   ``KLING_SANDBOX_MODE=1`` for the banner, ``PUBLIC_BASE_URL`` so the sandbox's callbacks
   reach the portal). ``KLING_API_KEY`` with ``KLING_API_BASE_URL`` pointing at that local
   sandbox is sandbox mode too, the operator's account using the API key (the sandbox is
   started with ``--api-key`` = that key). With ``KLING_ACCESS_KEY``/``KLING_SECRET_KEY``,
   or ``KLING_API_KEY`` and any other base URL, it talks to the real Kling API and starts no
   sandbox. Both kinds set is refused with a message.
3. Prepares the database and files in one child process (``python -m klingweb.run
   prepare``): ``migrate``, ``createcachetable`` (the rate-limit counters), ``collectstatic``,
   ``setup_schedules`` and, in sandbox mode only, ``demo_data``
   — each idempotent, so a second run reuses what exists. With real Kling credentials the
   demo users are not created, and any left from a sandbox run are deactivated
   (``demo_data --deactivate``): their password sits in ``.env``.
4. Starts ``honcho`` on the ``Procfile`` (``web`` = gunicorn, ``worker`` = the django-q2
   cluster, ``poller`` = ``manage.py kling_poll``, ``sandbox`` in sandbox mode): one group, each line prefixed with its process
   name, Ctrl-C stops all. Once the web server answers it prints the address to open, where
   e-mails go (with the default console backend: into this output, links included) and, in
   sandbox mode only, the demo sign-in details.

``python -m klingweb.run manage <command> [args]`` runs one management command with the same
environment (for example ``kling_api costs`` against the sandbox while ``make run`` runs).

The tests (``tests/e2e``) reuse ``env_build``, ``prepare`` and the ``Procfile`` so the
browser suite exercises the same start-up path.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
ENV_FILE = BASE_DIR / ".env"
PROCFILE = BASE_DIR / "Procfile"

DEFAULT_PORT = 8000
DEFAULT_SANDBOX_PORT = 8700
#: Keys the local sandbox accepts; it listens on 127.0.0.1 only, so they guard nothing real.
SANDBOX_ACCESS_KEY = "klingweb-sandbox-access-key"
SANDBOX_SECRET_KEY = "klingweb-sandbox-secret-key-loopback-only"  # noqa: S105
#: The API key the local sandbox accepts besides the key pair (when no KLING_API_KEY is set).
SANDBOX_API_KEY = "klingweb-sandbox-api-key-loopback-only"
#: Seconds honcho waits after SIGTERM before it SIGKILLs what still runs (honcho's own
#: default is 5). The worker stops in its grace (``WORKER_STOP_GRACE_SECONDS``, 2 s) + ~1 s,
#: gunicorn in its ``--graceful-timeout`` (Procfile), the poller between two tasks.
HONCHO_KILL_WAIT = 3


class RunError(Exception):
    """A start-up step failed; the message says which and what to do."""


# --- .env ------------------------------------------------------------------------------------


def env_file_parse(text: str) -> dict[str, str]:
    """Parse ``KEY=value`` lines (``#`` comments, optional quotes) into a dict.

    Uses honcho's parser, the same one ``honcho start`` applies to ``.env`` files, so the
    file means the same thing to both.
    """
    from honcho.environ import parse

    return parse(text)


def env_file_ensure(path: Path = ENV_FILE) -> dict[str, str]:
    """Return the variables of ``path``, first creating it with fresh secrets if missing.

    Written once with mode 0600: ``SECRET_KEY`` (URL-safe random, 64 chars), ``FERNET_KEYS``
    (one urlsafe-Base64 32-byte Fernet key) and ``DEMO_PASSWORD`` (16 URL-safe chars).
    Variables missing from an existing file are appended, never changed.
    """
    wanted = {
        "SECRET_KEY": lambda: secrets.token_urlsafe(48),
        "FERNET_KEYS": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "DEMO_PASSWORD": lambda: secrets.token_urlsafe(12),
    }
    existing = env_file_parse(path.read_text()) if path.exists() else {}
    missing = {name: make() for name, make in wanted.items() if name not in existing}
    if missing:
        lines = []
        if not path.exists():
            lines += [
                "# Local settings for `make run`, written once by klingweb/run.py. Git-ignored.",
                "# Keep this file: FERNET_KEYS decrypts the Kling secret keys stored in the",
                "# database. Add KLING_ACCESS_KEY=... and KLING_SECRET_KEY=... here to use the",
                "# real Kling API instead of the sandbox.",
            ]
        lines += [f"{name}={value}" for name, value in missing.items()]
        prefix = "" if not path.exists() or path.read_text().endswith("\n") else "\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(prefix + "\n".join(lines) + "\n")
        existing.update(missing)
    return existing


# --- environment -----------------------------------------------------------------------------


def env_build(
    *,
    base: Mapping[str, str],
    file_vars: Mapping[str, str],
    port: int,
    sandbox_port: int = DEFAULT_SANDBOX_PORT,
) -> tuple[dict[str, str], bool]:
    """Return ``(env, sandbox_mode)``: the environment every child process gets.

    ``base`` (normally ``os.environ``) wins over ``file_vars`` (``.env``). Sandbox mode is on
    when neither holds ``KLING_ACCESS_KEY`` and, if ``KLING_API_KEY`` is set,
    ``KLING_API_BASE_URL`` is ``http://127.0.0.1:<sandbox_port>``. Then the Kling variables
    point at the sandbox on that address and ``PUBLIC_BASE_URL`` at
    ``http://127.0.0.1:<port>`` (unless set); the portal keeps ``KLING_API_KEY`` if given
    (else gets the sandbox key pair), and the sandbox process gets its keys through
    ``KLING_SANDBOX_ACCESS_KEY`` / ``_SECRET_KEY`` / ``_API_KEY`` (the Procfile passes them
    as flags). The virtualenv's ``bin`` is put first on ``PATH`` so the Procfile's ``python``
    and ``gunicorn`` are this project's. ``SECURE_COOKIES`` defaults to on only for an https
    ``PUBLIC_BASE_URL`` (a browser drops Secure cookies over plain http). Raises
    ``RunError`` when both kinds of credentials are set.
    """
    env = {**file_vars, **base}
    env["PORT"] = str(port)
    env.setdefault("DJANGO_SETTINGS_MODULE", "klingweb.settings")
    env["PYTHONUNBUFFERED"] = "1"
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])
    api_key = env.get("KLING_API_KEY", "").strip()
    has_pair = bool(
        env.get("KLING_ACCESS_KEY", "").strip() or env.get("KLING_SECRET_KEY", "").strip()
    )
    if api_key and has_pair:
        raise RunError(
            "Set either KLING_API_KEY, or KLING_ACCESS_KEY and KLING_SECRET_KEY — not both kinds "
            "of Kling credentials (check the environment and .env)."
        )
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    base_url = env.get("KLING_API_BASE_URL", "").strip().rstrip("/")
    sandbox_mode = not has_pair and (not api_key or base_url == sandbox_url)
    if sandbox_mode:
        env["KLING_API_BASE_URL"] = sandbox_url
        env["KLING_SANDBOX_ACCESS_KEY"] = SANDBOX_ACCESS_KEY
        env["KLING_SANDBOX_SECRET_KEY"] = SANDBOX_SECRET_KEY
        if api_key:
            env["KLING_SANDBOX_API_KEY"] = api_key
        else:
            env.pop("KLING_API_KEY", None)
            env["KLING_ACCESS_KEY"] = SANDBOX_ACCESS_KEY
            env["KLING_SECRET_KEY"] = SANDBOX_SECRET_KEY
            env["KLING_SANDBOX_API_KEY"] = SANDBOX_API_KEY
        env["KLING_SANDBOX_MODE"] = "1"
        env["KLING_SANDBOX_PORT"] = str(sandbox_port)
        env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
    env.setdefault(
        "SECURE_COOKIES", "1" if env.get("PUBLIC_BASE_URL", "").startswith("https://") else "0"
    )
    return env, sandbox_mode


def sandbox_mode_of(env: Mapping[str, str]) -> bool:
    """True when ``env`` (as ``env_build`` made it) runs against the sandbox."""
    return env.get("KLING_SANDBOX_MODE", "").strip() == "1"


def processes_for(*, sandbox_mode: bool) -> list[str]:
    """The Procfile entries to start: ``web``, ``worker`` and ``poller``, plus ``sandbox`` in
    sandbox mode."""
    names = ["web", "worker", "poller"]
    return [*names, "sandbox"] if sandbox_mode else names


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (TCP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


# --- preparation -----------------------------------------------------------------------------


def prepare(*, env: Mapping[str, str], cwd: Path = BASE_DIR, quiet: bool = False) -> None:
    """Run the idempotent start-up steps in a child process with ``env``.

    Steps: ``migrate`` (``--run-syncdb`` for servers whose settings switch migrations off),
    ``createcachetable``, ``collectstatic``, ``setup_schedules``, then ``demo_data`` when ``env`` is in sandbox mode (``KLING_SANDBOX_MODE=1``),
    else ``demo_data --deactivate``.
    Raises ``RunError`` when a step fails (its output is on stderr).
    """
    cmd = [sys.executable, "-m", "klingweb.run", "prepare"]
    if quiet:
        cmd.append("--quiet")
    result = subprocess.run(cmd, env=dict(env), cwd=cwd, check=False)  # noqa: S603
    if result.returncode != 0:
        raise RunError("Preparing the database failed (see the messages above).")


def _prepare_here(*, quiet: bool) -> None:
    """The body of ``prepare``: runs in the child process, Django configured from the env."""
    import io

    import django
    from django.core.management import call_command

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "klingweb.settings")
    django.setup()
    out = io.StringIO() if quiet else sys.stdout

    def step(name: str, *args, **options) -> None:
        if not quiet:
            print(f"== {name}", flush=True)
        call_command(name, *args, stdout=out, **options)

    # run_syncdb matters only when migrations are switched off (the test and benchmark
    # servers' KLINGWEB_E2E_NOMIGRATIONS, tests/e2e/server_settings.py): tables from models.
    step("migrate", interactive=False, run_syncdb=True, verbosity=0 if quiet else 1)
    step("createcachetable", verbosity=0)
    step("collectstatic", interactive=False, verbosity=0)
    step("setup_schedules")
    # The demo users (a superuser among them) and their password in .env exist for the
    # sandbox only: with real Kling credentials they would be a known way in.
    if sandbox_mode_of(os.environ):
        step("demo_data", verbosity=0 if quiet else 1)
    else:
        step("demo_data", deactivate=True, verbosity=0 if quiet else 1)


# --- supervision -----------------------------------------------------------------------------


def honcho_command(
    *, names: list[str], port: int, procfile: Path = PROCFILE, colour: bool = True
) -> list[str]:
    """The ``honcho start`` command line for the Procfile entries ``names`` (run through
    ``python -m klingweb.run honcho``: honcho with ``HONCHO_KILL_WAIT``).

    ``--env /dev/null``: the environment is already complete (``.env`` merged under the real
    environment); honcho's own ``.env`` reading would override the real environment.
    ``-p port``: honcho hands ``$PORT`` to the first entry (``web``). ``colour=False`` for
    output written to a file.
    """
    return [
        sys.executable,
        "-m",
        "klingweb.run",
        "honcho",
        "start",
        "--procfile",
        str(procfile),
        "--app-root",
        str(procfile.parent),
        "--env",
        os.devnull,
        "--port",
        str(port),
        *([] if colour else ["--no-colour"]),
        *names,
    ]


def wait_http(url: str, *, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Poll ``url`` until it answers with any HTTP status below 500; False on timeout.

    Stops early (False) when ``proc`` exits.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                if response.status < 500:
                    return True
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def email_destination(env: Mapping[str, str]) -> str:
    """Where the portal's e-mails (password resets, invitations, budget alerts) go under
    ``env``: one line for the banner."""
    backend = (
        env.get("EMAIL_BACKEND", "").strip() or "django.core.mail.backends.console.EmailBackend"
    )
    if backend == "django.core.mail.backends.console.EmailBackend":
        return (
            "E-mails (password resets, invitations) are printed in this output, links "
            "included (console backend; set EMAIL_BACKEND for real mail)."
        )
    if backend == "django.core.mail.backends.smtp.EmailBackend":
        host = env.get("EMAIL_HOST", "").strip() or "localhost"
        return f"E-mails are sent through the SMTP server {host}."
    return f"E-mails go to {backend}."


def banner(*, env: Mapping[str, str], port: int, sandbox_mode: bool) -> str:
    """The text printed once the web server answers: address, mode, where e-mails go and,
    in sandbox mode only, the demo sign-in details (with the real API there are no demo
    users: sign in with your own, e.g. from ``manage createsuperuser``)."""
    from klingweb.management.commands.demo_data import DEMO_USERS

    url = f"http://127.0.0.1:{port}/"
    mode = (
        f"SANDBOX mode: tasks run on the built-in Kling look-alike at {env['KLING_API_BASE_URL']}"
        + (
            f"\n  (its API key for a team's Kling account: {SANDBOX_API_KEY})"
            if env.get("KLING_SANDBOX_API_KEY") == SANDBOX_API_KEY
            else "\n  (it accepts KLING_API_KEY as its API key)"
        )
        if sandbox_mode
        else f"REAL Kling API at {env.get('KLING_API_BASE_URL') or 'https://api-singapore.klingai.com'}"
    )
    if sandbox_mode:
        width = max(len(u.username) for u in DEMO_USERS)
        people = "\n".join(f"    {u.username:<{width}}  {u.describe}" for u in DEMO_USERS)
        sign_in = (
            f"  Demo sign-in (password for all: {env.get('DEMO_PASSWORD', '(see .env)')}):\n"
            + people
        )
    else:
        sign_in = (
            "  No demo users with the real API. Create your own account:\n"
            "    .venv/bin/python -m klingweb.run manage createsuperuser"
        )
    return (
        "\n"
        + "=" * 78
        + f"\n  Klingweb is running: open {url}\n  {mode}\n  {email_destination(env)}\n\n"
        + sign_in
        + "\n\n  Ctrl-C stops "
        + (
            "the web server, the worker, the poller and the sandbox."
            if sandbox_mode
            else "the web server, the worker and the poller."
        )
        + "\n"
        + "=" * 78
        + "\n"
    )


def honcho_main(argv: list[str]) -> int:
    """``python -m klingweb.run honcho <honcho args>``: honcho's command line with its
    SIGKILL delay shortened to ``HONCHO_KILL_WAIT`` seconds, so ``make run`` stops within
    about 3 s of Ctrl-C or SIGTERM. Returns honcho's exit status."""
    import honcho.manager
    from honcho.command import main as honcho_command_main

    honcho.manager.KILL_WAIT = HONCHO_KILL_WAIT
    try:
        honcho_command_main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``make run``; returns the exit status (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["honcho"]:
        return honcho_main(argv[1:])
    if argv[:1] == ["prepare"]:
        _prepare_here(quiet="--quiet" in argv)
        return 0

    os.chdir(BASE_DIR)
    try:
        port = int(os.environ.get("PORT") or DEFAULT_PORT)
        sandbox_port = int(os.environ.get("KLING_SANDBOX_PORT") or DEFAULT_SANDBOX_PORT)
    except ValueError:
        print("PORT and KLING_SANDBOX_PORT must be whole numbers.", file=sys.stderr)
        return 2
    file_vars = env_file_ensure(ENV_FILE)
    try:
        env, sandbox_mode = env_build(
            base=os.environ, file_vars=file_vars, port=port, sandbox_port=sandbox_port
        )
    except RunError as exc:
        print(exc, file=sys.stderr)
        return 2
    if argv[:1] == ["manage"]:
        # `python -m klingweb.run manage kling_api costs`: one management command with the
        # environment `make run` gives its processes (.env, sandbox settings).
        manage = [sys.executable, str(BASE_DIR / "manage.py"), *argv[1:]]
        os.execve(sys.executable, manage, env)  # noqa: S606 (our own interpreter)

    busy = [p for p in ([port, sandbox_port] if sandbox_mode else [port]) if not port_free(p)]
    if busy:
        print(
            f"Port {', '.join(map(str, busy))} on 127.0.0.1 is in use (is the portal already "
            "running?). Stop it, or choose others: PORT=8001 KLING_SANDBOX_PORT=8701 make run",
            file=sys.stderr,
        )
        return 1
    try:
        prepare(env=env)
    except RunError as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

    names = processes_for(sandbox_mode=sandbox_mode)
    proc = subprocess.Popen(honcho_command(names=names, port=port), env=env)  # noqa: S603
    # Ctrl-C reaches honcho too (same process group) and it stops the group; we only wait
    # for it. A SIGTERM sent to us alone is passed on.
    stopping: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: stopping.append(signum))
    signal.signal(
        signal.SIGTERM, lambda signum, _frame: (stopping.append(signum), proc.terminate())
    )
    if wait_http(f"http://127.0.0.1:{port}/accounts/login/", timeout=60, proc=proc):
        print(banner(env=env, port=port, sandbox_mode=sandbox_mode), flush=True)
    elif proc.poll() is None and not stopping:
        print(f"The web server did not answer on port {port} within 60 s.", file=sys.stderr)
    returncode = proc.wait()
    return 0 if stopping else returncode


if __name__ == "__main__":
    sys.exit(main())
