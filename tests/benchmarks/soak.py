"""`make soak`: the portal under faults, with its real processes (issue 9, "Faults").

Each scenario runs in a child process of its own with a throwaway database, an in-process Kling
sandbox on loopback (its fault knobs set as the scenario says) and the portal's real processes
started from the ``Procfile`` (``tests/processes.py``, shared with the browser tests): ``web``
(gunicorn, so the sandbox's callbacks arrive over HTTP) and one or two clusters, each a
``worker`` (``manage.py qcluster``) and a ``poller`` (``manage.py kling_poll``) process group.
Tasks are created the way the create form does it (the family's form validates the data, ``build_params`` builds the body, ``task_queue`` saves
the row ``queued`` and enqueues ``submit_task`` on commit), spread over a few seconds, across
three teams; one in twenty asks the sandbox to fail, one in twenty to fail and charge.

Scenarios:

- **a** — 500 tasks; the sandbox answers 30 % of all requests with 5000/5001, 20 % of creates
  with 1303, drops 10 % of callbacks, delivers 10 % twice, and adds 0.05 s to every answer.
- **b** — the same while every cluster process group (worker and poller) is SIGKILLed every
  20 s and restarted.
- **c** — the same faults with two clusters at once, on PostgreSQL with the ORM broker and once
  with the Redis broker, so two pollers claim work next to each other. The pollers' claims audit
  (``soak_settings``: ``tasks_app.polling`` at DEBUG) is read back: no task may be held by two
  cycles at once (an interval per task from its claim to its release, or to the lease's expiry
  when the cycle was killed), and no task may have two ledger rows.
- **d** — Kling unreachable for five minutes: after half the tasks are in flight, the sandbox
  answers every request with 5000/5001 and drops every callback; the other half is created
  during the outage. Nothing may end ``error``; the task page of a queued and of an in-flight
  task must show the reason (code and message); after the outage everything catches up.

After each scenario, *converged* means: every task's status equals the sandbox's, every team's
ledger total equals the sum of the sandbox's ``final_unit_deduction`` of its tasks to the unit,
every sandbox task is finished, and the sandbox holds one task per ``external_task_id``. The
report row gives tasks, faults injected (counted by the sandbox), time to converge (for d: from
the end of the outage), duplicates (sandbox tasks per external id beyond one, creates refused
as a reused external id, ledger rows or finishing events per task beyond one, overlapping poll
claims — all must be 0) and the ledger difference (units, must be 0).

Run: ``make soak`` (everything at full size, about 45 minutes on 2 cores, then the two-machine
topology scenario, ``tests/benchmarks/topology.py``) or
``.venv/bin/python -m tests.benchmarks.soak [--scenarios a,b,c,d] [--tasks N]
[--kill-every S] [--outage S] [--postgres] [--redis] [--small]``; ``--help`` lists the knobs.
Every scenario stops by itself (``--timeout``); only 127.0.0.1 is used. PostgreSQL runs use a
database ``klingweb_soak_<pid>`` on ``--pg-url``'s server, created and dropped; Redis runs use
``--redis-url`` (database 11 by default), flushed before and after.
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
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
PG_URL = "postgres://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/11"
RESULT_PREFIX = "SOAK-RESULT "
#: The issue's fault mix (scenarios a–c).
FAULTS = {
    "error_rate": 0.3,
    "create_concurrency_rate": 0.2,
    "callback_drop_rate": 0.1,
    "callback_duplicate_rate": 0.1,
    "latency": 0.05,
}
#: A claim interval may appear to overlap another by this much (log lines are written just
#: after the database change they describe) before it counts as a double claim.
CLAIM_TOLERANCE_S = 0.5
CHECK_INTERVAL_S = 2.0


@dataclass
class Spec:
    """One scenario run, passed to the child process as JSON."""

    scenario: str  # a | b | c | d
    label: str
    tasks: int
    teams: int = 3
    database: str = "sqlite"  # sqlite | postgres
    broker: str = "orm"  # orm | redis
    clusters: int = 1
    faults: bool = True
    kill_every: float = 0.0  # seconds between SIGKILLs of the clusters; 0: never
    max_kills: int = 0  # 0: until converged
    outage: float = 0.0  # seconds Kling is unreachable (scenario d)
    task_seconds: float = 20.0
    spread: float = 30.0  # seconds over which the tasks are created
    timeout: float = 900.0  # seconds allowed to converge
    submit_lease: float = 0.0  # seconds of a submit claim; 0: the portal's own (300)
    fault_scale: float = 1.0  # multiplies the 5xx and 1303 rates (the small size: 0.5)
    seed: int = 9
    pg_url: str = PG_URL
    redis_url: str = REDIS_URL


@dataclass
class Result:
    """One report row."""

    label: str
    database: str
    broker: str
    tasks: int
    faults: str
    converge_s: float | None
    duplicates: int
    ledger_diff: str
    ok: bool
    notes: list[str] = field(default_factory=list)


# --- parent ---------------------------------------------------------------------------------


def _pg_reachable(url: str) -> bool:
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
        return True
    except Exception:
        return False


def _redis_reachable(url: str) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_connect_timeout=3).ping())
    except Exception:
        return False


def build_specs(args: argparse.Namespace) -> tuple[list[Spec], list[str]]:
    """The scenario runs asked for by the command line, and notes on what was left out."""
    notes: list[str] = []
    pg = _pg_reachable(args.pg_url)
    redis_ok = _redis_reachable(args.redis_url)
    main_db = "sqlite"
    if args.postgres:
        if not pg:
            raise SystemExit(f"--postgres: PostgreSQL is not reachable at {args.pg_url}")
        main_db = "postgres"
    main_broker = "orm"
    if args.redis:
        if not redis_ok:
            raise SystemExit(f"--redis: Redis is not reachable at {args.redis_url}")
        main_broker = "redis"
    common = {
        "tasks": args.tasks,
        "teams": args.teams,
        "task_seconds": args.task_seconds,
        "spread": args.spread,
        "timeout": args.timeout,
        "seed": args.seed,
        "submit_lease": args.submit_lease,
        "fault_scale": args.fault_scale,
        "pg_url": args.pg_url,
        "redis_url": args.redis_url,
    }
    specs: list[Spec] = []
    for scenario in args.scenarios.split(","):
        scenario = scenario.strip()
        if scenario == "a":
            specs.append(Spec("a", "a. faults", database=main_db, broker=main_broker, **common))
        elif scenario == "b":
            specs.append(
                Spec(
                    "b",
                    f"b. faults + SIGKILL every {args.kill_every:g} s",
                    database=main_db,
                    broker=main_broker,
                    kill_every=args.kill_every,
                    max_kills=args.max_kills,
                    **common,
                )
            )
        elif scenario == "c":
            c_db = "postgres" if pg else "sqlite"
            if not pg:
                notes.append("c: PostgreSQL not reachable, two clusters ran on SQLite")
            for broker in args.c_brokers.split(","):
                if broker == "redis" and not redis_ok:
                    notes.append(f"c: Redis not reachable at {args.redis_url}: skipped")
                    continue
                specs.append(
                    Spec(
                        "c",
                        f"c. faults + 2 clusters ({broker} broker)",
                        database=c_db,
                        broker=broker,
                        clusters=2,
                        **common,
                    )
                )
        elif scenario == "d":
            specs.append(
                Spec(
                    "d",
                    f"d. Kling unreachable {args.outage:g} s",
                    database=main_db,
                    broker=main_broker,
                    faults=False,
                    outage=args.outage,
                    **common,
                )
            )
        else:
            raise SystemExit(f"unknown scenario {scenario!r} (a, b, c, d)")
    return specs, notes


def run_child(spec: Spec, *, prefix: bool = False) -> Result:
    """Run one scenario in a child process (its output passed through, each line prefixed
    with the scenario letter when ``prefix``); returns its row."""
    budget = spec.timeout + spec.outage + spec.spread + 180
    cmd = [sys.executable, "-m", "tests.benchmarks.soak", "--child", json.dumps(asdict(spec))]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    proc = subprocess.Popen(  # noqa: S603
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    result: Result | None = None
    # Past its budget the scenario gets SIGTERM (it stops its processes), then SIGKILL.
    timer = threading.Timer(budget, lambda: _end_child(proc))
    timer.start()
    try:
        for line in proc.stdout:
            if line.startswith(RESULT_PREFIX):
                result = Result(**json.loads(line[len(RESULT_PREFIX) :]))
            else:
                print(f"{spec.scenario}| {line}" if prefix else line, end="", flush=True)
        proc.wait()
    finally:
        timer.cancel()
        _end_child(proc)
    if result is None:
        return Result(
            spec.label,
            spec.database,
            spec.broker,
            spec.tasks,
            "-",
            None,
            0,
            "-",
            False,
            [f"the scenario process ended without a result (exit {proc.returncode})"],
        )
    return result


def _end_child(proc: subprocess.Popen) -> None:
    """SIGTERM a scenario process (it then stops the portal processes it started), and
    SIGKILL it when it has not ended a minute later."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def print_table(results: list[Result], notes: list[str], scale: float = 1.0) -> None:
    """The report: one row per scenario run."""
    header = (
        "scenario",
        "db/broker",
        "tasks",
        "faults injected",
        "converge s",
        "dups",
        "ledger diff",
        "result",
    )
    rows = [
        (
            r.label,
            f"{r.database}/{r.broker}",
            str(r.tasks),
            r.faults,
            "-" if r.converge_s is None else f"{r.converge_s:.0f}",
            str(r.duplicates),
            r.ledger_diff,
            "PASS" if r.ok else "FAIL",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print()
    print("Soak (issue 9, faults): real gunicorn, qcluster, kling_poll; sandbox on loopback")
    print(
        f"faults a-c: {FAULTS['error_rate'] * scale:.0%} of requests 5000/5001, "
        f"{FAULTS['create_concurrency_rate'] * scale:.0%} of creates 1303, "
        f"{FAULTS['callback_drop_rate']:.0%} of callbacks dropped, "
        f"{FAULTS['callback_duplicate_rate']:.0%} twice, +{FAULTS['latency']:g} s per answer"
    )
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    for r in results:
        for note in r.notes:
            print(f"  {r.label}: {note}")
    for note in notes:
        print(f"  note: {note}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.soak", description=__doc__)
    parser.add_argument("--scenarios", default="a,b,c,d", help="comma-separated: a,b,c,d")
    parser.add_argument("--tasks", type=int, default=500, help="tasks per scenario")
    parser.add_argument("--teams", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=20.0, help="b: seconds")
    parser.add_argument("--max-kills", type=int, default=0, help="b: 0 = until converged")
    parser.add_argument("--outage", type=float, default=300.0, help="d: seconds")
    parser.add_argument("--task-seconds", type=float, default=20.0, help="sandbox task clock")
    parser.add_argument("--spread", type=float, default=30.0, help="seconds to create tasks")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to converge")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument(
        "--submit-lease", type=float, default=0.0, help="seconds; 0 = the portal's (300)"
    )
    parser.add_argument("--parallel", action="store_true", help="run the scenarios at once")
    parser.add_argument(
        "--fault-scale", type=float, default=1.0, help="multiplies the 5xx and 1303 rates"
    )
    parser.add_argument("--postgres", action="store_true", help="a, b, d on PostgreSQL")
    parser.add_argument("--redis", action="store_true", help="a, b, d with the Redis broker")
    parser.add_argument("--c-brokers", default="orm,redis", help="c: brokers to run c with")
    parser.add_argument("--pg-url", default=os.environ.get("SOAK_PG_URL", PG_URL))
    parser.add_argument("--redis-url", default=os.environ.get("SOAK_REDIS_URL", REDIS_URL))
    parser.add_argument(
        "--small",
        action="store_true",
        help="the make-test size: 30 tasks, 6 s task clock, one SIGKILL, 20 s outage",
    )
    args = parser.parse_args(argv)
    if args.small:
        args.tasks = min(args.tasks, 30)
        args.task_seconds = 6.0
        args.spread = 4.0
        args.outage = min(args.outage, 20.0)
        args.max_kills = args.max_kills or 1
        args.kill_every = min(args.kill_every, 15.0)
        args.timeout = min(args.timeout, 240.0)
        args.submit_lease = args.submit_lease or 30.0
        # Half the 5xx and 1303 rates: a lone task's retry backoff (2 s doubling) after five
        # failures in a row would otherwise dominate the run time of 30 tasks.
        args.fault_scale = min(args.fault_scale, 0.5)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios, print the table; 0 when every row passed."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    specs, notes = build_specs(args)
    started = time.monotonic()
    results: list[Result] = []
    if args.parallel:
        with ThreadPoolExecutor(max_workers=len(specs) or 1) as pool:
            results = list(pool.map(lambda spec: run_child(spec, prefix=True), specs))
    else:
        for spec in specs:
            print(f"== soak {spec.label} ({spec.database}/{spec.broker}) ==", flush=True)
            results.append(run_child(spec))
    print_table(results, notes, args.fault_scale)
    print(f"Total {time.monotonic() - started:.0f} s")
    return 0 if results and all(r.ok for r in results) else 1


# --- child: one scenario ---------------------------------------------------------------------


def _log(message: str) -> None:
    with contextlib.suppress(BrokenPipeError):  # the parent went away: go on, clean up
        print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


class SandboxMeter:
    """Counts what the sandbox answered, by vendor code (5000/5001 faults, 1303, 1201)."""

    def __init__(self) -> None:
        self.codes: Counter[int] = Counter()
        self.lock = threading.Lock()

    def install(self) -> None:
        """Wrap the sandbox's envelope writer (this process only)."""
        from klingweb.sandbox import server as sandbox_server

        original = sandbox_server._Handler._send_envelope
        meter = self

        def send(handler, status, code, message, request_id, data):
            with meter.lock:
                meter.codes[code] += 1
            return original(handler, status, code, message, request_id, data)

        sandbox_server._Handler._send_envelope = send


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


class Database:
    """The scenario's throwaway database: a SQLite file, or a PostgreSQL database."""

    def __init__(self, spec: Spec, work: Path) -> None:
        self.spec = spec
        self.work = work
        self.pg_name = f"klingweb_soak_{os.getpid()}"

    def env(self) -> dict[str, str]:
        extra: dict[str, str] = {}
        if self.spec.database == "postgres":
            import psycopg

            with psycopg.connect(self.spec.pg_url, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {self.pg_name} WITH (FORCE)")
                admin.execute(f"CREATE DATABASE {self.pg_name}")
            extra["DATABASE_URL"] = _with_db(self.spec.pg_url, self.pg_name)
        if self.spec.broker == "redis":
            import redis

            redis.Redis.from_url(self.spec.redis_url).flushdb()
            extra["REDIS_URL"] = self.spec.redis_url
        return extra

    def drop(self) -> None:
        from django.db import connections

        connections.close_all()
        if self.spec.database == "postgres":
            import psycopg

            with psycopg.connect(self.spec.pg_url, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {self.pg_name} WITH (FORCE)")
        if self.spec.broker == "redis":
            import redis

            redis.Redis.from_url(self.spec.redis_url).flushdb()


def _prepare(env: dict[str, str]) -> None:
    """The schema (from the models) and the schedules, as ``make run`` prepares them (minus
    collectstatic and the demo company, which the soak does not need)."""
    for command in (["migrate", "--run-syncdb", "-v", "0"], ["setup_schedules"]):
        subprocess.run(  # noqa: S603
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )


def _make_teams(count: int) -> list[tuple]:
    from django.contrib.auth import get_user_model

    from klingweb.accounts.models import Membership, Role, Team

    pairs = []
    for index in range(count):
        team = Team.objects.create(name=f"Soak team {index + 1}")
        user = get_user_model().objects.create_user(
            username=f"soak-{index + 1}", email=f"soak-{index + 1}@example.com", password=None
        )
        Membership.objects.create(user=user, team=team, role=Role.OWNER)
        pairs.append((team, user))
    return pairs


class TaskMaker:
    """Creates tasks the way the create form does (form → build_params → task_queue)."""

    def __init__(self, pairs: list[tuple], label: str) -> None:
        from tasks_app.families import get_family

        self.pairs = pairs
        self.label = label
        self.family = get_family("text2video")
        self.form_class = self.family.get_form_class()
        self.made = 0

    def make(self) -> None:
        from django.db import close_old_connections

        from tasks_app.submission import task_queue

        index = self.made
        team, user = self.pairs[index % len(self.pairs)]
        marker = ""
        if index % 20 == 7:
            marker = " sandbox:fail"
        elif index % 20 == 13:
            marker = " sandbox:fail-charged"
        data = {
            "model_name": "kling-v1-6",
            "prompt": f"soak {self.label} task {index}{marker}",
            "mode": "pro" if index % 3 == 0 else "std",
            "aspect_ratio": "16:9",
            "duration": "10" if index % 4 == 0 else "5",
        }
        form = self.form_class(data, team=team, user=user)
        if not form.is_valid():
            raise RuntimeError(f"the create form refused the soak's data: {form.errors}")
        params = self.family.build_params(form.cleaned_data, team)
        prompt, summary = form.describe()
        close_old_connections()
        task_queue(
            team=team,
            user=user,
            family=self.family.key,
            params=params,
            prompt=prompt or params["prompt"],
            summary=summary,
        )
        self.made += 1

    def make_spread(self, count: int, seconds: float) -> None:
        """Create ``count`` tasks evenly over ``seconds``."""
        began = time.monotonic()
        for number in range(count):
            pause = began + seconds * number / max(count, 1) - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            self.make()


@dataclass
class State:
    """What one convergence check found."""

    converged: bool
    mismatches: int
    unfinished_remote: int
    sandbox_dups: int
    ledger_dups: int
    event_dups: int
    ledger_diff: Decimal
    errored: int
    statuses: dict[str, int]


def check(sandbox, account: str, team_ids: list[int], expected_tasks: int) -> State:
    """Compare the portal's database with the sandbox (see the module docstring)."""
    from django.db.models import Count, Sum

    from tasks_app.models import FINISHED, Deduction, Status, Task, TaskEvent

    remote: dict[str, list[dict]] = defaultdict(list)
    for item in sandbox.tasks_snapshot():
        if item["account"] == account and item["external_task_id"]:
            remote[item["external_task_id"]].append(item)
    sandbox_dups = sum(len(items) - 1 for items in remote.values())
    rows = list(Task.objects.filter(team_id__in=team_ids).values_list("code", "team_id", "status"))
    mismatches = 0
    expected_units: dict[int, Decimal] = defaultdict(Decimal)
    statuses: Counter[str] = Counter()
    for code, team_id, status in rows:
        statuses[status] += 1
        items = remote.get(str(code))
        if not items or items[0]["task_status"] != status:
            mismatches += 1
            continue
        expected_units[team_id] += Decimal(items[0]["final_unit_deduction"] or "0")
    unfinished_remote = sum(
        1
        for items in remote.values()
        for item in items
        if item["task_status"] not in ("succeed", "failed")
    )
    ledger = {
        row["team_id"]: row["units"] or Decimal("0")
        for row in Deduction.objects.filter(team_id__in=team_ids)
        .values("team_id")
        .annotate(units=Sum("units"))
    }
    ledger_diff = sum(
        (abs(ledger.get(team_id, Decimal("0")) - expected_units[team_id]) for team_id in team_ids),
        Decimal("0"),
    )
    ledger_dups = (
        Deduction.objects.filter(team_id__in=team_ids, corrects__isnull=True)
        .values("task_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    event_dups = (
        TaskEvent.objects.filter(task__team_id__in=team_ids, status__in=list(FINISHED))
        .values("task_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    converged = (
        len(rows) == expected_tasks
        and mismatches == 0
        and unfinished_remote == 0
        and ledger_diff == 0
    )
    return State(
        converged=converged,
        mismatches=mismatches,
        unfinished_remote=unfinished_remote,
        sandbox_dups=sandbox_dups,
        ledger_dups=ledger_dups,
        event_dups=event_dups,
        ledger_diff=ledger_diff,
        errored=statuses.get(Status.ERROR, 0),
        statuses=dict(statuses),
    )


def _laggards(team_ids: list[int], limit: int = 3) -> list[str]:
    """A few unfinished tasks with their scheduling state, for the progress lines."""
    from django.utils import timezone

    from tasks_app.models import FINISHED, Status, Task

    now = timezone.now()
    out = []
    for task in Task.objects.filter(team_id__in=team_ids).exclude(status__in=list(FINISHED))[
        :limit
    ]:
        # A queued task waits for its create call (retry_at), one in flight for a poll.
        due_at = task.retry_at if task.status == Status.QUEUED else task.next_poll_at
        due = (due_at - now).total_seconds() if due_at else None
        claimed = (task.claimed_until - now).total_seconds() if task.claimed_until else None
        out.append(
            f"{task.pk} {task.status} submits={task.submit_attempts} polls={task.poll_attempts}"
            f" due_in={due if due is None else round(due)} claimed_for="
            f"{claimed if claimed is None else round(claimed)} error={task.error_code}"
        )
    return out


_AUDIT = re.compile(r"poll (claim|release) lease=(\S+) t=([0-9.]+) pks=([0-9,]+)")


def claims_audit(paths: list[Path]) -> tuple[int, int, list[str]]:
    """Read the claim/release lines of every poller's log; returns (cycles, double
    claims, examples). A task's hold runs from its claim line to the first release line of the
    same lease naming it, or to the lease's expiry when none came (the cycle was killed)."""
    events = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            match = _AUDIT.search(line)
            if match:
                kind, lease, stamp, pks = match.groups()
                events.append((float(stamp), kind, lease, [int(p) for p in pks.split(",")]))
    events.sort()
    open_holds: dict[str, dict[int, float]] = defaultdict(dict)
    holds: dict[int, list[tuple[float, float, str]]] = defaultdict(list)
    cycles = 0
    for stamp, kind, lease, pks in events:
        if kind == "claim":
            cycles += 1
            for pk in pks:
                open_holds[lease][pk] = stamp
        else:
            for pk in pks:
                start = open_holds[lease].pop(pk, None)
                if start is not None:
                    holds[pk].append((start, stamp, lease))
    for lease, pending in open_holds.items():
        expiry = datetime.fromisoformat(lease).timestamp()
        for pk, start in pending.items():
            holds[pk].append((start, max(start, expiry), lease))
    doubles: list[str] = []
    for pk, intervals in holds.items():
        intervals.sort()
        latest_end, latest_lease = intervals[0][1], intervals[0][2]
        for start, end, lease in intervals[1:]:
            if start < latest_end - CLAIM_TOLERANCE_S:
                doubles.append(
                    f"task pk {pk}: claimed by {lease} at {start:.3f} while {latest_lease} "
                    f"held it until {latest_end:.3f}"
                )
            if end > latest_end:
                latest_end, latest_lease = end, lease
    return cycles, len(doubles), doubles[:5]


def _task_page_reason(base_url: str, cookie: str, task) -> str:
    """The warning the task page shows for ``task`` (empty when none)."""
    import httpx

    url = f"{base_url}/t/{task.team.code}/tasks/{task.code}/"
    response = httpx.get(url, cookies={"sessionid": cookie}, timeout=10, trust_env=False)
    if response.status_code != 200:
        return f"(HTTP {response.status_code})"
    match = re.search(
        r'<div class="msg msg-warning" role="status">(.*?)</div>', response.text, re.S
    )
    return re.sub(r"<[^>]+>", "", match.group(1)).strip() if match else ""


class Repeater(threading.Thread):
    """Calls ``action`` every ``every`` seconds until stopped (a daemon thread)."""

    def __init__(self, every: float, action) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.action = action
        self.stop_event = threading.Event()
        self.count = 0
        self.errors: list[str] = []

    def run(self) -> None:
        from django.db import connections

        try:
            while not self.stop_event.wait(self.every):
                try:
                    if self.action() is not False:
                        self.count += 1
                except Exception as exc:  # reported in the row
                    self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            connections.close_all()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=60)


def run_scenario(spec: Spec) -> Result:
    """Run one scenario (in this child process) and return its report row."""
    from klingweb.run import SANDBOX_ACCESS_KEY, SANDBOX_SECRET_KEY, wait_http
    from klingweb.sandbox import SandboxConfig, SandboxServer
    from tests.processes import ProcfileProcess, free_port, portal_env, session_cookie_for

    work = Path(tempfile.mkdtemp(prefix=f"klingweb-soak-{spec.scenario}-"))
    meter = SandboxMeter()
    meter.install()
    sandbox = SandboxServer(
        SandboxConfig(
            accounts={SANDBOX_ACCESS_KEY: SANDBOX_SECRET_KEY},
            task_seconds=spec.task_seconds,
            seed=spec.seed,
        ),
        host="127.0.0.1",
        port=0,
    ).start()
    database = Database(spec, work)
    processes: list[ProcfileProcess] = []
    notes: list[str] = []
    log_dir = ROOT / "artifacts" / "soak"
    log_dir.mkdir(parents=True, exist_ok=True)
    tag = re.sub(r"[^a-z0-9]+", "-", f"{spec.label} {spec.database} {spec.broker}".lower())
    web_log = log_dir / f"{tag}-web.log"
    worker_logs = [log_dir / f"{tag}-worker-{n + 1}.log" for n in range(spec.clusters)]
    poller_logs = [log_dir / f"{tag}-poller-{n + 1}.log" for n in range(spec.clusters)]
    for path in [web_log, *worker_logs, *poller_logs]:
        path.write_text("")
    try:
        port = free_port()
        env = portal_env(
            work=work,
            port=port,
            sandbox_url=sandbox.base_url,
            secret_key=secrets.token_urlsafe(48),
            password=secrets.token_urlsafe(12),
            nomigrations=True,
            extra={
                "DJANGO_SETTINGS_MODULE": "tests.benchmarks.soak_settings",
                "LOG_LEVEL": "WARNING",
                "Q_WORKERS": "3",
                "KLINGWEB_SOAK_AUDIT": "1",
                **(
                    {"KLINGWEB_SOAK_SUBMIT_LEASE": str(spec.submit_lease)}
                    if spec.submit_lease
                    else {}
                ),
                **database.env(),
            },
        )
        _log(f"{spec.label}: preparing the database ({spec.database}/{spec.broker})")
        _prepare(env)
        os.environ.update(env)
        import django

        django.setup()
        from klingweb.accounts.models import KlingAccount
        from tasks_app.models import IN_FLIGHT, Status, Task

        web = ProcfileProcess("web", env=env, log_path=web_log).start()
        processes.append(web)
        clusters = [
            ProcfileProcess(name, env=env, log_path=path).start()
            for name, paths in (("worker", worker_logs), ("poller", poller_logs))
            for path in paths
        ]
        processes.extend(clusters)
        base_url = f"http://127.0.0.1:{port}"
        if not wait_http(f"{base_url}/accounts/login/", timeout=60, proc=web.proc):
            raise RuntimeError(f"the web server did not start; see {web_log}")
        pairs = _make_teams(spec.teams)
        team_ids = [team.pk for team, _ in pairs]
        maker = TaskMaker(pairs, spec.label)
        KlingAccount.objects.operator_default()
        if spec.faults:
            for name, value in FAULTS.items():
                if name in ("error_rate", "create_concurrency_rate"):
                    value *= spec.fault_scale
                setattr(sandbox.config, name, value)
        else:
            sandbox.config.latency = FAULTS["latency"]

        threads: list[Repeater] = []
        killer = None
        if spec.kill_every:

            def kill_all() -> bool:
                if spec.max_kills and killer.count >= spec.max_kills:
                    return False
                for cluster in clusters:
                    cluster.kill()
                    cluster.start()
                _log(f"SIGKILLed and restarted {spec.clusters} cluster(s)")
                return True

            killer = Repeater(spec.kill_every, kill_all)
            threads.append(killer)
        for thread in threads:
            thread.start()

        started = time.monotonic()
        outage_end = None
        reasons: dict[str, str] = {}
        errored_during_outage = 0
        if spec.outage:
            half = spec.tasks // 2
            _log(f"creating {half} tasks before the outage")
            maker.make_spread(half, spec.spread / 2)
            wait_in_flight = time.monotonic() + spec.task_seconds + 60
            while time.monotonic() < wait_in_flight:
                if not Task.objects.filter(team_id__in=team_ids, status=Status.QUEUED).exists():
                    break
                time.sleep(1)
            _log(f"outage: every Kling request fails for {spec.outage:g} s")
            sandbox.config.error_rate = 1.0
            sandbox.config.callback_drop_rate = 1.0
            outage_began = time.monotonic()
            maker.make_spread(spec.tasks - half, min(spec.spread / 2, spec.outage / 3))
            cookie = session_cookie_for(pairs[0][1])
            while time.monotonic() < outage_began + spec.outage:
                time.sleep(min(5.0, max(0.0, outage_began + spec.outage - time.monotonic())))
                errored_during_outage = Task.objects.filter(
                    team_id__in=team_ids, status=Status.ERROR
                ).count()
                if time.monotonic() - outage_began > min(60.0, spec.outage * 0.6):
                    for kind, statuses in (("queued", [Status.QUEUED]), ("in flight", IN_FLIGHT)):
                        if reasons.get(kind):
                            continue
                        task = (
                            Task.objects.filter(
                                team=pairs[0][0], status__in=list(statuses), poll_errors__gt=0
                            )
                            .select_related("team")
                            .first()
                            if kind == "in flight"
                            else Task.objects.filter(
                                team=pairs[0][0], status=Status.QUEUED, error_code__isnull=False
                            )
                            .select_related("team")
                            .first()
                        )
                        if task is not None:
                            reasons[kind] = _task_page_reason(base_url, cookie, task)
            sandbox.config.error_rate = 0.0
            sandbox.config.callback_drop_rate = 0.0
            outage_end = time.monotonic()
            _log("outage over")
        else:
            _log(f"creating {spec.tasks} tasks over {spec.spread:g} s")
            maker.make_spread(spec.tasks, spec.spread)

        deadline = time.monotonic() + spec.timeout
        state = check(sandbox, SANDBOX_ACCESS_KEY, team_ids, spec.tasks)
        last_report = 0.0
        while not state.converged and time.monotonic() < deadline:
            time.sleep(CHECK_INTERVAL_S)
            state = check(sandbox, SANDBOX_ACCESS_KEY, team_ids, spec.tasks)
            if time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                _log(
                    f"{spec.label}: {state.statuses}; {state.mismatches} differ from the "
                    f"sandbox, {state.unfinished_remote} unfinished there, ledger off by "
                    f"{state.ledger_diff}; e.g. {_laggards(team_ids)}"
                )
        converged_at = time.monotonic()
        for thread in threads:
            thread.stop()
        for cluster in clusters:
            cluster.stop(timeout=15)
        web.stop(timeout=10)
        sandbox.wait_callbacks(timeout=10)
        # After the processes stopped: nothing can change any more.
        state = check(sandbox, SANDBOX_ACCESS_KEY, team_ids, spec.tasks)
        cycles, double_claims, examples = claims_audit(poller_logs)
        notes.extend(examples)
        callbacks = sandbox.callbacks_log
        dropped = sum(1 for c in callbacks if c["dropped"])
        delivered = Counter((c["task_id"], c["task_status"]) for c in callbacks if not c["dropped"])
        twice = sum(n - 1 for n in delivered.values() if n > 1)
        refused_callbacks = sum(
            1 for c in callbacks if not c["dropped"] and c["http_status"] not in (200, None)
        )
        faults = [
            f"5xx {meter.codes[5000] + meter.codes[5001]}",
            f"1303 {meter.codes[1303]}",
            f"cb dropped {dropped}",
            f"cb twice {twice}",
        ]
        if killer is not None:
            faults.append(f"SIGKILL {killer.count}")
        if spec.outage:
            faults.append(f"outage {spec.outage:g} s")
        duplicates = (
            state.sandbox_dups
            + meter.codes[1201]
            + state.ledger_dups
            + state.event_dups
            + double_claims
        )
        ok = state.converged and duplicates == 0 and state.ledger_diff == 0
        if meter.codes[1201]:
            notes.append(f"{meter.codes[1201]} creates refused as a reused external_task_id")
        if state.errored:
            ok = False
            notes.append(f"{state.errored} tasks ended 'error' (refused)")
        if refused_callbacks:
            notes.append(f"{refused_callbacks} callbacks answered other than 200")
        for thread in threads:
            if thread.errors:
                ok = False
                notes.append(f"background thread errors: {thread.errors[:3]}")
        if spec.scenario == "c":
            notes.append(f"claims audit: {cycles} poll cycles, {double_claims} double claims")
            if cycles == 0:
                ok = False
                notes.append("no poll cycle was audited (the check saw nothing)")
        if spec.outage:
            if errored_during_outage:
                ok = False
                notes.append(f"{errored_during_outage} tasks failed during the outage")
            for kind in ("queued", "in flight"):
                text = reasons.get(kind, "")
                notes.append(f"task page, {kind} task during the outage: {text!r}")
                if not re.search(r"code 500[01]|Server", text):
                    ok = False
                    notes.append(f"the {kind} task's page did not say why it waits")
        if not state.converged:
            notes.append(
                f"not converged after {spec.timeout:g} s: {state.statuses}; "
                f"{state.mismatches} differ, {state.unfinished_remote} unfinished at the "
                f"sandbox, ledger off by {state.ledger_diff}"
            )
        converge_from = outage_end if outage_end is not None else started
        return Result(
            label=spec.label,
            database=spec.database,
            broker=spec.broker,
            tasks=spec.tasks,
            faults=", ".join(faults),
            converge_s=(converged_at - converge_from) if state.converged else None,
            duplicates=duplicates,
            ledger_diff=f"{state.ledger_diff:f}",
            ok=ok,
            notes=notes,
        )
    finally:
        for process in processes:
            process.stop(timeout=5)
        sandbox.stop()
        try:
            database.drop()
        except Exception as exc:
            print(f"could not drop the soak database: {exc}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


def child(spec_json: str) -> int:
    """Entry point of the scenario process: run it, print the result line."""
    spec = Spec(**json.loads(spec_json))

    def stop(signum, frame):
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)  # so the portal processes are stopped (finally)
    result = run_scenario(spec)
    print(RESULT_PREFIX + json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sys.exit(child(sys.argv[2]))
    sys.exit(main())
