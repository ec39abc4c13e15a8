"""Load bench (issue 9 "Load", issue 15 item 6): signed-in users against gunicorn, one team
of 100 000 tasks; with the worker cluster's and the web server's memory.

On PostgreSQL (a database ``klingweb_bench_load`` on ``DATABASE_URL``'s server, default
``postgres://postgres@127.0.0.1:5432/postgres``, created and dropped), the bench seeds one team
with one member per user (at least 50) and 100 000 tasks over the last 30 days (``INSERT …
SELECT generate_series``: 82 % succeeded with a result video, 6 % failed, 2 % failed and
charged, 4 % refused, 6 % in flight or queued) and a ledger row for every charged task, then
starts the portal's ``web`` process from the ``Procfile`` (gunicorn, ``WEB_CONCURRENCY``
workers × 4 threads) and its ``worker`` process (``manage.py kling_worker``: the django-q2
cluster, ``Q_WORKERS`` workers, idle: nothing is queued for it), both through
``tests/processes.py`` like the browser tests and the soak, and runs Debian's ``wrk`` on
loopback for ``BENCH_LOAD_SECONDS`` (60) s: one ``wrk`` process per kind of page, all at once,
each request carrying one of the users' sessions made in the database
(``session_cookie_for``; every wrk process cycles through all of them).

``--users N`` (or ``BENCH_LOAD_USERS``; default 50) is the number of connections, i.e. users
with a request always in flight (no think time). ``--mix``:

- ``issue9`` (the default for 50 users; 50 → 20/20/10): 40 % on the task list
  (``/t/<team>/tasks/``, page 1, 25 rows), 40 % on the HTMX row partials
  (``/t/<team>/tasks/<code>/row/`` with ``HX-Request``, 2 000 different tasks, in flight and
  finished), 20 % on the team's usage page (``/t/<team>/usage/``, this month);
- ``issue15`` (the default for any other number; 200 → 60/60/40/30/10): 30 % on the task
  list, 30 % on the list's one live request (``/t/<team>/tasks/live/?page=1&seen=…&n=…``
  with ``HX-Request``, the URL the list page's poller asks, taken from the page: nothing
  changes during the run, so it answers the empty patch), 20 % on the task page
  (``/t/<team>/tasks/<code>/``, the same 2 000 tasks), 15 % on the usage page, 5 % on the
  usage CSV export (``/t/<team>/usage/export/<table>.csv``, this month; ``BENCH_LOAD_CSV``
  picks the table, default ``days``, units per day — ``ledger`` streams every ledger row of
  the month, some 80 000).

It prints, per kind of page and in all, requests per second, p50/p95/p99 latency and errors
(connection errors, timeouts and any answer other than 200 — 286, htmx's "stop polling", is
also fine for the live request; a redirect to the sign-in page counts as an error), and the
memory of the ``web`` and ``worker`` process trees (the ``Procfile`` command and every
descendant, from ``/proc``: the sum of ``VmRSS``, which counts pages shared between forked
processes once per process, and the sum of ``Pss`` from ``smaps_rollup``, which shares them
out) at idle (after start and one warm-up request per URL kind, before the load) and the
highest seen while sampling every second under load, and the CPU seconds the two trees and
the whole machine used during the load. Then, in the same run and against the
same gunicorn, it times the task list next to Django admin's change list of the same rows
(``/admin/tasks_app/task/``, as a superuser), one request at a time, interleaved, median and
p95 of 15 each after two warm-ups.

By default every connection sends its next request as soon as the answer is in (a closed
loop: latency is then about users ÷ throughput once the server is saturated);
``BENCH_LOAD_THINK_MS`` gives each connection a pause between an answer and its next request,
drawn from half to one and a half times that (3000: the list's live poller interval).

``wrk`` is installed with ``apt-get install -y wrk`` when missing and the bench runs as root;
otherwise the bench says so and fails. ``BENCH_LOAD_SECONDS`` / ``BENCH_LOAD_TASKS`` change
the duration and the size. Run: ``make bench`` or
``.venv/bin/python -m tests.benchmarks.bench_load [--users 200] [--mix issue15]``. About
2–3 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/postgres"
BENCH_DB = os.environ.get("BENCH_LOAD_DB", "klingweb_bench_load")
TASKS = int(os.environ.get("BENCH_LOAD_TASKS", "100000"))
SECONDS = int(os.environ.get("BENCH_LOAD_SECONDS", "60"))
#: Connections (users with a request always in flight); ``--users`` sets it for the child.
USERS = int(os.environ.get("BENCH_LOAD_USERS", "50"))
#: Team members, each with a session: one per user, at least 50 (issue 9's team).
MEMBERS = max(50, USERS)
ROW_TASKS = 2000
#: Table of the usage CSV export in the ``issue15`` mix (a key of ``TEAM_EXPORTS``).
CSV_TABLE = os.environ.get("BENCH_LOAD_CSV", "days")
#: (name, share of the connections, path kind) of the wrk processes running at once.
MIXES = {
    "issue9": [
        ("task list", 0.4, "list"),
        ("HTMX row partials", 0.4, "rows"),
        ("usage page", 0.2, "usage"),
    ],
    "issue15": [
        ("task list", 0.30, "list"),
        ("live request", 0.30, "live"),
        ("task page", 0.20, "task"),
        ("usage page", 0.15, "usage"),
        ("usage CSV", 0.05, "csv"),
    ],
}
MIX = os.environ.get("BENCH_LOAD_MIX") or ("issue9" if USERS == 50 else "issue15")
#: Answers that count as success, per path kind (anything else is an error).
OK_STATUS = {"live": (200, 286)}
#: Kinds of request sent with ``HX-Request: true`` (as htmx sends them).
HX_KINDS = ("rows", "live")
TIMING_RUNS = 15
#: Think time of each connection between an answer and its next request, ms (0: none);
#: each pause is drawn uniformly from half to one and a half times this.
THINK_MS = int(os.environ.get("BENCH_LOAD_THINK_MS", "0"))
#: Seconds between two memory samples under load.
SAMPLE_S = 1.0

WRK_SCRIPT = r"""
-- One of many paths, one of many session cookies per request; counts answers not in `ok`.
local paths = {PATHS}
local cookies = {COOKIES}
local hx = {HX}
local ok = {OK}
local threads = {}
local n = 0
bad = 0
last_bad = 0

function setup(thread)
  table.insert(threads, thread)
end

function request()
  n = n + 1
  local headers = {}
  headers["Cookie"] = "sessionid=" .. cookies[(n % #cookies) + 1]
  if hx then headers["HX-Request"] = "true" end
  return wrk.format("GET", paths[(n * 7919 % #paths) + 1], headers)
end

function response(status, headers, body)
  if not ok[status] then
    bad = bad + 1
    last_bad = status
  end
end
{DELAY}
function done(summary, latency, requests)
  local not200 = 0
  local status = 0
  for _, thread in ipairs(threads) do
    not200 = not200 + thread:get("bad")
    if thread:get("last_bad") ~= 0 then status = thread:get("last_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK-RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, ' ..
    '"p99_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
    '"not200": %d, "last_bad_status": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), e.connect, e.read, e.write, e.status, e.timeout, not200, status))
end
"""


def mix_connections(mix: str, users: int) -> list[tuple[str, int, str]]:
    """(name, connections, path kind) of each wrk process: ``users`` split by the shares of
    ``MIXES[mix]`` (rounded; the first kind takes the remainder; at least 1 each). Raises
    ``KeyError`` for an unknown mix, ``ValueError`` when ``users`` is below the kinds."""
    shares = MIXES[mix]
    if users < len(shares):
        raise ValueError(f"{mix} needs at least {len(shares)} users")
    conns = [max(1, round(users * share)) for _, share, _ in shares]
    conns[0] += users - sum(conns)
    return [(name, c, kind) for (name, _, kind), c in zip(shares, conns, strict=True)]


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def _wrk() -> str | None:
    """The path of ``wrk``, installing Debian's package first when missing (as root)."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("bench_load: installing wrk (apt-get install -y wrk)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    for cmd in (install, ["apt-get", "update", "-qq"], install):
        subprocess.run(cmd, env=env, check=False, stdout=subprocess.DEVNULL)  # noqa: S603
        if shutil.which("wrk"):
            break
    return shutil.which("wrk")


def main(argv: list[str] | None = None) -> int:
    """Create the bench database, run the bench in a child process, drop the database.

    ``argv`` (command line, without the program): ``--users N``, ``--mix issue9|issue15``;
    ``None`` (``tests/benchmarks/run.py``) keeps ``BENCH_LOAD_USERS`` / ``BENCH_LOAD_MIX``.
    Returns the exit status: 1 on any error, a missing ``wrk`` or a failed child.
    """
    import argparse

    import psycopg

    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_load")
    parser.add_argument("--users", type=int, default=USERS, help="connections (default 50)")
    parser.add_argument("--mix", choices=sorted(MIXES), default=None, help="pages of the load")
    options = parser.parse_args(argv or [])
    mix = options.mix or os.environ.get("BENCH_LOAD_MIX")
    mix = mix or ("issue9" if options.users == 50 else "issue15")
    mix_connections(mix, options.users)  # a mix it cannot split fails here, not in the child
    if _wrk() is None:
        print("bench_load: wrk is missing (apt-get install -y wrk); failed")
        return 1
    admin_url = os.environ.get("DATABASE_URL") or DEFAULT_URL
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        print(f"bench_load: PostgreSQL not reachable at {admin_url}: {exc}; skipped")
        return 0
    with admin:
        admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {BENCH_DB}")
    try:
        env = {
            **os.environ,
            "DATABASE_URL": _with_db(admin_url, BENCH_DB),
            "DJANGO_SETTINGS_MODULE": "tests.e2e.server_settings",
            "KLINGWEB_E2E_NOMIGRATIONS": "1",
            "DEBUG": "0",
            "LOG_LEVEL": "WARNING",
            "BENCH_LOAD_USERS": str(options.users),
            "BENCH_LOAD_MIX": mix,
        }
        env.pop("REDIS_URL", None)
        args = [sys.executable, "-m", "tests.benchmarks.bench_load", "--child"]
        return subprocess.call(args, env=env, cwd=ROOT)  # noqa: S603
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


# --- child --------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"[bench_load {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _seed() -> dict:
    """One team, 50 members, ``TASKS`` tasks and their ledger rows (bulk SQL)."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from klingweb.accounts.models import Membership, Role, Team
    from tasks_app.models import Task
    from tests.benchmarks.bench_usage import _insert_select, seed_charges_from_tasks

    User = get_user_model()
    team = Team.objects.create(name="Load team")
    users = User.objects.bulk_create(
        User(username=f"user{m:02d}", email=f"user{m:02d}@example.com", password="!")
        for m in range(MEMBERS)
    )
    Membership.objects.bulk_create(
        Membership(user=user, team=team, role=Role.OWNER if m == 0 else Role.MEMBER)
        for m, user in enumerate(users)
    )
    admin = User.objects.create(username="operator", is_staff=True, is_superuser=True)
    Membership.objects.create(user=admin, team=team, role=Role.VIEWER)  # both pages, one user
    user_ids = ",".join(str(u.pk) for u in users)
    step = 30 * 86400 / TASKS
    start = timezone.now() - timedelta(days=30)
    created = f"(TIMESTAMPTZ '{start.isoformat()}' + (i * {step}) * INTERVAL '1 second')"
    bucket = (
        "(abs(hashint4(i + 5)) %% 50)"  # 0..49: 41 succeed, 3 failed, 1 charged, 2 error, 3 live
    )
    status = (
        f"CASE WHEN {bucket} < 41 THEN 'succeed' WHEN {bucket} < 44 THEN 'failed' "
        f"WHEN {bucket} = 44 THEN 'failed' WHEN {bucket} < 47 THEN 'error' "
        f"WHEN {bucket} = 47 THEN 'queued' WHEN {bucket} = 48 THEN 'submitted' "
        "ELSE 'processing' END"
    )
    charged = f"({bucket} < 41 OR {bucket} = 44)"
    units = "((1 + abs(hashint4(i + 3)) %% 40) * 0.25)::numeric(12, 3)"
    finished = f"{bucket} < 47"
    _log(f"seeding {TASKS:,} tasks")
    _insert_select(
        Task,
        {
            "code": "gen_random_uuid()",
            "team_id": str(team.pk),
            "creator_id": f"(ARRAY[{user_ids}])[1 + i %% {MEMBERS}]",
            "family": (
                "(ARRAY['avatar','video_extend','multi_shot','text2video','image2video'])"
                "[1 + abs(hashint4(i)) %% 5]"
            ),
            "model_name": "(ARRAY['kling-v2-6','kling-v1-6'])[1 + abs(hashint4(i + 2)) %% 2]",
            "mode": "CASE WHEN abs(hashint4(i + 1)) %% 3 = 0 THEN 'pro' ELSE 'std' END",
            "prompt": "'A load-test prompt, number ' || i",
            "task_id": f"CASE WHEN {bucket} BETWEEN 45 AND 47 THEN '' ELSE 'load-' || i END",
            "status": status,
            "task_status_msg": f"CASE WHEN {bucket} BETWEEN 41 AND 44 THEN 'sandbox says no' ELSE '' END",
            "error_code": f"CASE WHEN {bucket} IN (45, 46) THEN 1301 WHEN {bucket} = 47 THEN 5000 END",
            "error_message": f"CASE WHEN {bucket} IN (45, 46, 47) THEN 'refused' ELSE '' END",
            "final_unit_deduction": f"CASE WHEN {charged} THEN {units} END",
            "estimated_units": units,
            "result": (
                f"CASE WHEN {bucket} < 41 THEN jsonb_build_object('videos', jsonb_build_array("
                "jsonb_build_object('id', 'v' || i, 'url', 'https://cdn.example.com/' || i || "
                "'.mp4', 'duration', '5.1'))) ELSE '{}'::jsonb END"
            ),
            "created_at": created,
            "submitted_at": f"CASE WHEN {bucket} <> 47 THEN {created} + INTERVAL '2 seconds' END",
            "finished_at": f"CASE WHEN {finished} THEN {created} + INTERVAL '90 seconds' END",
            "vendor_created_at": f"{created} + INTERVAL '2 seconds'",
            "vendor_updated_at": f"{created} + INTERVAL '90 seconds'",
        },
        f"FROM generate_series(1, {TASKS}) AS i",
    )
    _log("seeding the ledger")
    seed_charges_from_tasks()
    with connection.cursor() as cursor:
        for table in ("tasks_app_task", "tasks_app_deduction", "auth_user", "accounts_team"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    return {"team": team, "users": users, "admin": admin}


def _lua_list(values: list) -> str:
    return json.dumps(values).replace("[", "{").replace("]", "}")


def _wrk_run(
    wrk: str,
    url: str,
    paths: list[str],
    cookies: list[str],
    *,
    hx: bool,
    ok: tuple[int, ...],
    conns: int,
):
    """Start one wrk process (its Lua script in a temp file) with ``conns`` connections for
    ``SECONDS`` s, 10 s timeout; answers whose status is not in ``ok`` count as errors.
    Returns (process, script path)."""
    script = WRK_SCRIPT.replace("{PATHS}", _lua_list(paths))
    script = script.replace("{COOKIES}", _lua_list(cookies))
    script = script.replace("{HX}", "true" if hx else "false")
    script = script.replace("{OK}", "{" + ", ".join(f"[{code}] = true" for code in ok) + "}")
    delay = ""
    if THINK_MS:
        low, high = THINK_MS // 2, THINK_MS * 3 // 2
        delay = f"\nfunction delay()\n  return math.random({low}, {high})\nend\n"
    script = script.replace("{DELAY}", delay)
    handle = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
    handle.write(script)
    handle.close()
    cmd = [wrk, "-t", "1", "-c", str(conns), "-d", f"{SECONDS}s", "--timeout", "10s"]
    cmd += ["-s", handle.name, url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # noqa: S603
    return proc, handle.name


# --- memory of a process tree (Linux /proc) ----------------------------------------------


def tree_pids(root: int) -> list[int]:
    """``root`` and every live descendant of it (by parent pid, ``/proc/<pid>/stat``)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _kib(path: str, field: str) -> int | None:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of ``root``'s tree."""
    ticks = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine since boot, all cores (``/proc/stat``)."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


def tree_memory(root: int) -> tuple[int, int, int]:
    """(processes, sum of VmRSS KiB, sum of Pss KiB) of ``root``'s process tree; a process
    that ends while being read is left out."""
    count = rss = pss = 0
    for pid in tree_pids(root):
        vm = _kib(f"/proc/{pid}/status", "VmRSS:")
        if vm is None:
            continue
        count += 1
        rss += vm
        pss += _kib(f"/proc/{pid}/smaps_rollup", "Pss:") or 0
    return count, rss, pss


class MemoryPeak(threading.Thread):
    """Samples ``tree_memory`` of each named root every ``SAMPLE_S`` s until ``stop()``;
    ``peak[name]`` = (most processes, highest RSS KiB, highest PSS KiB) seen."""

    def __init__(self, roots: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.peak = {name: (0, 0, 0) for name in roots}
        self._halt = threading.Event()

    def sample(self) -> None:
        """One sample of every root, folded into ``peak``."""
        for name, root in self.roots.items():
            now = tree_memory(root)
            self.peak[name] = tuple(max(a, b) for a, b in zip(self.peak[name], now, strict=True))

    def run(self) -> None:
        while not self._halt.wait(SAMPLE_S):
            self.sample()

    def stop(self) -> None:
        """Take a last sample and end the thread."""
        self._halt.set()
        self.join()
        self.sample()


def _time_pages(base: str, cookie: str, urls: dict[str, str]) -> dict[str, tuple[float, float]]:
    """Median and p95 ms of each URL, requested one at a time, interleaved, after warm-ups."""
    import httpx

    times: dict[str, list[float]] = {name: [] for name in urls}
    with httpx.Client(base_url=base, cookies={"sessionid": cookie}, timeout=60) as client:
        for round_ in range(TIMING_RUNS + 2):
            for name, url in urls.items():
                began = time.perf_counter()
                response = client.get(url)
                elapsed = (time.perf_counter() - began) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"{url}: HTTP {response.status_code}")
                if round_ >= 2:
                    times[name].append(elapsed)
    out = {}
    for name, values in times.items():
        values.sort()
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        out[name] = (statistics.median(values), p95)
    return out


def _live_url(body: str) -> str:
    """The URL the task list page's one poller asks (``<div id="task-live" hx-get=…>``)."""
    import html
    import re

    match = re.search(r'<div id="task-live"[^>]*hx-get="([^"]+)"', body)
    if match is None:
        raise RuntimeError("the task list page has no live poller")
    return html.unescape(match.group(1))


def _wait_tree(root: int, *, timeout: float) -> int:
    """Wait until ``root``'s process tree stops growing (same count for 3 s, at least 2
    processes); returns the count."""
    deadline = time.monotonic() + timeout
    last, steady = -1, 0
    while time.monotonic() < deadline:
        count = len(tree_pids(root))
        steady = steady + 1 if count == last and count >= 2 else 0
        if steady >= 6:
            break
        last = count
        time.sleep(0.5)
    return last


def child() -> int:
    """Seed, start gunicorn and the worker, load gunicorn with wrk while sampling memory,
    time list vs admin, print the tables. Returns 1 on any error, else 0."""
    import django

    django.setup()
    import httpx
    from django.core.management import call_command
    from django.urls import reverse

    from klingweb.run import wait_http
    from tasks_app.models import Task
    from tests.processes import ProcfileProcess, free_port, portal_env, session_cookie_for

    mixes = mix_connections(MIX, USERS)
    started = time.perf_counter()
    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
    seeded = _seed()
    team = seeded["team"]
    seed_s = time.perf_counter() - started
    _log(f"seeded in {seed_s:.0f} s; starting gunicorn and the worker")
    cookies = [session_cookie_for(user) for user in seeded["users"]]
    admin_cookie = session_cookie_for(seeded["admin"])

    work = Path(tempfile.mkdtemp(prefix="klingweb-bench-load-"))
    port = free_port()
    env = portal_env(
        work=work,
        port=port,
        sandbox_url=f"http://127.0.0.1:{free_port()}",  # never called: pages do not call Kling
        secret_key=os.environ.get("SECRET_KEY") or secrets.token_urlsafe(48),
        password=secrets.token_urlsafe(12),
        nomigrations=True,
        extra={
            "DATABASE_URL": os.environ["DATABASE_URL"],
            "DJANGO_SETTINGS_MODULE": "tests.e2e.server_settings",
            "LOG_LEVEL": "WARNING",
            "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "2"),
            "Q_WORKERS": os.environ.get("Q_WORKERS", "2"),
        },
    )
    # The sessions above were signed with this process's SECRET_KEY: the server needs it too.
    from django.conf import settings

    env["SECRET_KEY"] = settings.SECRET_KEY
    web = ProcfileProcess("web", env=env, log_path=work / "web.log").start()
    worker = ProcfileProcess("worker", env=env, log_path=work / "worker.log").start()
    base = f"http://127.0.0.1:{port}"
    wrk = shutil.which("wrk")
    try:
        if not wait_http(f"{base}/accounts/login/", timeout=60, proc=web.proc):
            raise RuntimeError(f"gunicorn did not start: {(work / 'web.log').read_text()[-2000:]}")
        list_url = reverse("tasks-list", kwargs={"team": team.code})
        usage_url = reverse("usage-team", kwargs={"team": team.code})
        csv_url = reverse("usage-team-export", kwargs={"team": team.code, "table": CSV_TABLE})
        codes = list(
            Task.objects.filter(team=team).order_by("?").values_list("code", flat=True)[:ROW_TASKS]
        )
        row_urls = [
            reverse("tasks-row", kwargs={"team": team.code, "code": code}) for code in codes
        ]
        task_urls = [
            reverse("tasks-detail", kwargs={"team": team.code, "code": code}) for code in codes
        ]
        page = httpx.get(base + list_url, cookies={"sessionid": cookies[1]}, timeout=60)
        paths = {
            "list": [list_url],
            "rows": row_urls,
            "live": [_live_url(page.text)],
            "task": task_urls,
            "usage": [usage_url],
            "csv": [csv_url],
        }
        # Every kind of request answers as it should for a signed-in member before the clock
        # starts (this also warms each URL kind up before the idle memory is read).
        for kind, urls in paths.items():
            for url in urls[:3]:
                response = httpx.get(
                    base + url,
                    cookies={"sessionid": cookies[1]},
                    headers={"HX-Request": "true"} if kind in HX_KINDS else {},
                    timeout=60,
                )
                if response.status_code not in OK_STATUS.get(kind, (200,)):
                    raise RuntimeError(f"{url}: HTTP {response.status_code} before the run")
        if not worker.alive():
            raise RuntimeError(f"worker died: {(work / 'worker.log').read_text()[-2000:]}")
        _wait_tree(worker.proc.pid, timeout=60)
        time.sleep(2)
        roots = {"web": web.proc.pid, "worker": worker.proc.pid}
        idle = {name: tree_memory(root) for name, root in roots.items()}
        sampler = MemoryPeak(roots)
        cpu_before = {name: tree_cpu(root) for name, root in roots.items()}
        machine_before = machine_cpu()
        sampler.start()
        _log(f"wrk: {sum(c for _, c, _ in mixes)} connections ({MIX}) for {SECONDS} s")
        runs = []
        for name, conns, kind in mixes:
            proc, script = _wrk_run(
                wrk,
                base,
                paths[kind],
                cookies,
                hx=kind in HX_KINDS,
                ok=OK_STATUS.get(kind, (200,)),
                conns=conns,
            )
            runs.append((name, conns, kind, proc, script))
        results = []
        try:
            for name, conns, kind, proc, script in runs:
                output, _ = proc.communicate(timeout=SECONDS + 120)
                os.unlink(script)
                line = next((x for x in output.splitlines() if x.startswith("WRK-RESULT ")), None)
                if line is None:
                    raise RuntimeError(f"wrk gave no result for {name}:\n{output[-2000:]}")
                data = json.loads(line[len("WRK-RESULT ") :])
                results.append((name, conns, kind, data))
        finally:
            sampler.stop()
        peak = sampler.peak
        cpu = {name: tree_cpu(root) - cpu_before[name] for name, root in roots.items()}
        machine_after = machine_cpu()
        busy = machine_after[0] - machine_before[0]
        window = machine_after[1] - machine_before[1]
        if not worker.alive():
            raise RuntimeError(f"worker died: {(work / 'worker.log').read_text()[-2000:]}")
        _log("timing the task list next to the admin change list")
        admin_url = "/admin/tasks_app/task/"
        timed = _time_pages(
            base,
            admin_cookie,
            {"list": list_url, "admin": admin_url, "row": row_urls[0], "usage": usage_url},
        )
    finally:
        web.stop(timeout=10)
        worker.stop(timeout=10)
        shutil.rmtree(work, ignore_errors=True)

    users = sum(c for _, c, _ in mixes)
    print()
    print(
        f"Load on PostgreSQL: {TASKS:,} tasks in one team, {MEMBERS} members signed in, "
        f"{users} wrk connections ({MIX} mix; think time "
        f"{f'{THINK_MS / 2000:g}–{THINK_MS * 1.5 / 1000:g} s' if THINK_MS else 'none'}) "
        f"for {SECONDS} s against gunicorn "
        f"({env['WEB_CONCURRENCY']} workers × 4 threads), loopback"
    )
    header = ("pages", "users", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors")
    rows = []
    total_errors = 0
    for name, conns, kind, d in results:
        errors = d["connect"] + d["read"] + d["write"] + d["timeout"] + d["not200"]
        total_errors += errors
        label = f"{name} ({CSV_TABLE}.csv)" if kind == "csv" else name
        rows.append(
            (
                label,
                str(conns),
                f"{d['requests']:,}",
                f"{d['requests'] / (d['duration_us'] / 1e6):.1f}",
                f"{d['p50_us'] / 1000:.0f}",
                f"{d['p95_us'] / 1000:.0f}",
                f"{d['p99_us'] / 1000:.0f}",
                _errors_cell(errors, d),
            )
        )
    total = sum(d["requests"] for _, _, _, d in results)
    duration = max(d["duration_us"] for _, _, _, d in results) / 1e6
    rows.append(
        ("all", str(users), f"{total:,}", f"{total / duration:.1f}", "", "", "", str(total_errors))
    )
    _table(header, rows)
    listed = next(d for _, _, kind, d in results if kind == "list")
    list_p95 = listed["p95_us"] / 1000
    print(
        f"task list p95 {list_p95:.0f} ms ({'<' if list_p95 < 500 else 'NOT <'} 500 ms), "
        f"{total_errors} errors"
    )
    print()
    print(
        f"Memory of the process trees (the Procfile command and its descendants; MiB; idle = "
        f"after start and warm-up, peak = highest of samples every {SAMPLE_S:.0f} s under load)"
    )
    labels = {
        "web": f"web (gunicorn: master + {env['WEB_CONCURRENCY']} workers)",
        "worker": f"worker (kling_worker cluster, Q_WORKERS={env['Q_WORKERS']})",
    }
    _table(
        ("tree", "procs", "idle RSS", "idle PSS", "peak RSS", "peak PSS"),
        [
            (
                labels[name],
                f"{idle[name][0]}/{peak[name][0]}",
                f"{idle[name][1] / 1024:.0f}",
                f"{idle[name][2] / 1024:.0f}",
                f"{peak[name][1] / 1024:.0f}",
                f"{peak[name][2] / 1024:.0f}",
            )
            for name in ("web", "worker")
        ],
    )
    print("(RSS counts pages shared between forked processes once per process; PSS shares them.)")
    cores = os.cpu_count() or 1
    print(
        f"CPU under load: web {cpu['web']:.0f} s, worker {cpu['worker']:.0f} s, the whole "
        f"machine (PostgreSQL and wrk included) {busy:.0f} s busy of {window:.0f} s "
        f"({cores} cores × the window: {100 * busy / window:.0f} %)"
    )
    print()
    print(
        f"Server time of one page, no other load (median / p95 of {TIMING_RUNS}, interleaved, "
        f"same gunicorn, same {TASKS:,} rows)"
    )
    _table(
        ("page", "median ms", "p95 ms"),
        [
            (
                "task list /t/<team>/tasks/ (25 rows)",
                f"{timed['list'][0]:.1f}",
                f"{timed['list'][1]:.1f}",
            ),
            (
                "Django admin /admin/tasks_app/task/ (100 rows)",
                f"{timed['admin'][0]:.1f}",
                f"{timed['admin'][1]:.1f}",
            ),
            (
                "(for scale) one HTMX row partial",
                f"{timed['row'][0]:.1f}",
                f"{timed['row'][1]:.1f}",
            ),
            (
                "(for scale) usage page, this month",
                f"{timed['usage'][0]:.1f}",
                f"{timed['usage'][1]:.1f}",
            ),
        ],
    )
    print(f"Seeding took {seed_s:.0f} s; total {time.perf_counter() - started:.0f} s")
    if total_errors:
        print(f"bench_load: {total_errors} errors (must be 0)")
        return 1
    return 0


def _errors_cell(errors: int, d: dict) -> str:
    """``errors`` and, when any, what they were: timeouts (10 s), connection errors, answers
    refused by the Lua hook (with the last such HTTP status)."""
    if not errors:
        return "0"
    parts = []
    if d["timeout"]:
        parts.append(f"{d['timeout']} timeouts")
    if d["connect"] + d["read"] + d["write"]:
        parts.append(f"{d['connect'] + d['read'] + d['write']} socket")
    if d["not200"]:
        parts.append(f"{d['not200']} HTTP, last {d['last_bad_status']}")
    return f"{errors} ({', '.join(parts)})"


def _table(header: tuple, rows: list[tuple]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for index, row in enumerate([header, *rows]):
        print(
            "  ".join(
                str(c).ljust(w) if j == 0 else str(c).rjust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    sys.exit(child() if "--child" in sys.argv else main(sys.argv[1:]))
