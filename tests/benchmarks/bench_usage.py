"""Bench of the usage reports (issue 7) on PostgreSQL with 1 000 000 ledger rows.

Seeds 20 teams × 10 members, 1 000 000 tasks over the last 365 days (5 % failed without a
charge, 4 % failed but charged) and exactly 1 000 000 ``Deduction`` rows (≈ 950 000 charges,
the rest corrections, half of them negative) with ``INSERT … SELECT generate_series`` — then measures, for a
team's month report (last month) and for the company report (last 12 months):

- the page's server time: the view through ``django.test.Client`` (middleware, session,
  access check, queries, template), the median of several runs after a warm-up;
- the number of queries the page runs;
- the floor: one hand-written SQL statement computing the same totals, median of several runs;
- the ratio page / floor (goal: ≤ 2; issue 15 item 3: ≤ 1.0);
- the team page cached (the report cache holds its figures, rendered region, body and page,
  keyed by the team's ledger, tasks and settings versions) and uncached (the cache emptied
  before each run);
- the team page over 365 days (read from the daily rollups) against 30 days (goal: ≤ 2×);
- the daily rollups: rows, ``rollups_rebuild`` and ``rollups_check`` times at this size;
- for the team month, one hand-written SQL statement computing every figure the page shows
  (totals, per day × family, per member, per model and mode, top tasks, tasks per family):
  what the page's data alone costs. The bench checks that the page shows the same totals as
  the floor and the same breakdowns as this statement.

Run: ``make bench`` (every bench) or ``.venv/bin/python -m tests.benchmarks.bench_usage``.
``DATABASE_URL`` names the server (default ``postgres://postgres@127.0.0.1:5432/postgres``);
the bench creates its own database ``klingweb_bench_usage`` and drops it at the end. The
measuring runs in a child process so its Django settings never mix with another bench's.
About 3–5 minutes on 2 cores, most of it seeding.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "klingweb_bench_usage"
ROOT = Path(__file__).resolve().parents[2]

TEAMS = 20
MEMBERS = 10
TASKS = 1_000_000
DAYS = 365
RUNS = 9
ZONES = ["Europe/Paris", "America/Los_Angeles", "Asia/Tokyo", "UTC"]


# --- parent: database lifecycle -----------------------------------------------------------


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def main() -> int:
    """Create the bench database, run the bench in a child process, drop the database.
    Returns the child's exit status (0 when every figure was measured).

    ``BENCH_USAGE_KEEP=1`` keeps the seeded database afterwards and reuses it next time
    (for profiling; the figures are the same); with it, ``BENCH_USAGE_REBUILD=0`` also keeps
    the rollups the previous run built and checked (skips ``rollups_rebuild`` and
    ``rollups_check``, minutes at 1M rows)."""
    import psycopg

    admin_url = os.environ.get("DATABASE_URL") or DEFAULT_URL
    keep = os.environ.get("BENCH_USAGE_KEEP") == "1"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        print(f"bench_usage: PostgreSQL not reachable at {admin_url}: {exc}; skipped")
        return 0
    with admin:
        exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]
        ).fetchone()
        reuse = keep and exists is not None
        if not reuse:
            admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {BENCH_DB}")
    try:
        env = {
            **os.environ,
            "DATABASE_URL": _with_db(admin_url, BENCH_DB),
            "DJANGO_SETTINGS_MODULE": "klingweb.settings",
            "DEBUG": "0",
            "LOG_LEVEL": "WARNING",
        }
        env.pop("REDIS_URL", None)
        args = [sys.executable, "-m", "tests.benchmarks.bench_usage", "--child"]
        return subprocess.call(args + (["--reuse"] if reuse else []), env=env, cwd=ROOT)
    finally:
        if not keep:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


# --- child: seed and measure --------------------------------------------------------------


def _log(message: str) -> None:
    print(f"[bench_usage {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _interleaved_ms(fns: dict[str, Callable[[], Any]], runs: int = RUNS) -> dict[str, float]:
    """Median ms of each function, run in turns (a, b, c, a, b, c, …) after two warm-up
    rounds, so a change of load on the machine weighs on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(runs + 2):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_ >= 2:
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def seed_charges_from_tasks() -> int:
    """One primary ledger row per seeded task that has a ``final_unit_deduction``, dated when
    the task finished, as ``task_apply_remote`` records them. Returns the row count."""
    from tasks_app.models import Deduction

    return _insert_select(
        Deduction,
        {
            "team_id": "t.team_id",
            "task_id": "t.id",
            "member_id": "t.creator_id",
            "family": "t.family",
            "model_name": "t.model_name",
            "mode": "t.mode",
            "task_status": "t.status",
            "units": "t.final_unit_deduction",
            "recorded_at": "t.finished_at",
            "corrects_id": "NULL",
        },
        "FROM tasks_app_task t WHERE t.final_unit_deduction IS NOT NULL ORDER BY t.id",
    )


def _insert_select(model: Any, exprs: dict[str, str], from_sql: str) -> int:
    """``INSERT INTO <model> (every column) SELECT …``: the SQL expression given in ``exprs``
    per attname, else the field's default (a parameter), else NULL. Returns the row count."""
    from django.db import connection

    quote = connection.ops.quote_name
    columns, selects, params = [], [], []
    for f in model._meta.concrete_fields:
        if f.primary_key:
            continue
        columns.append(quote(f.column))
        if f.attname in exprs:
            selects.append(exprs[f.attname])
        elif getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            selects.append("now()")
        elif f.null and not f.has_default():
            selects.append("NULL")
        elif f.get_default() is not None:  # the default, or "" for a text field
            selects.append("%s")
            params.append(f.get_db_prep_save(f.get_default(), connection))
        else:
            raise RuntimeError(f"{model.__name__}.{f.attname}: no value to seed")
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(columns)}) "
        f"SELECT {', '.join(selects)} {from_sql}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _seed() -> dict[str, Any]:
    import datetime as dt
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from klingweb.accounts.models import Membership, Role, Team
    from tasks_app.models import Budget, Deduction, Task

    User = get_user_model()
    teams = Team.objects.bulk_create(
        Team(name=f"Team {i:02d}", time_zone=ZONES[i % len(ZONES)]) for i in range(TEAMS)
    )
    users = User.objects.bulk_create(
        User(username=f"t{t:02d}m{m}", email=f"t{t:02d}m{m}@example.com", password="!")
        for t in range(TEAMS)
        for m in range(MEMBERS)
    )
    Membership.objects.bulk_create(
        Membership(user=users[t * MEMBERS + m], team=teams[t], role=Role.MEMBER)
        for t in range(TEAMS)
        for m in range(MEMBERS)
    )
    staff = User.objects.create(username="finance", is_staff=True, password="!")
    Membership.objects.create(user=staff, team=teams[0], role=Role.VIEWER)
    Budget.objects.create(team=teams[0], period="monthly", units=Decimal("20000"))
    Budget.objects.create(team=teams[0], member=users[0], period="weekly", units=Decimal("500"))
    Budget.objects.create(team=teams[0], member=users[1], period="daily", units=Decimal("80"))

    now = timezone.now()
    start = now - dt.timedelta(days=DAYS)
    step = DAYS * 86400 / TASKS  # seconds between tasks: they arrive in time order
    team_ids = ",".join(str(t.pk) for t in teams)
    user_ids = ",".join(str(u.pk) for u in users)
    units = "((1 + abs(hashint4(i + 3)) %% 40) * 0.125)::numeric(12, 3)"
    # Hashes, not i modulo a small number, so no property lines up with the team (i % 20).
    uncharged = "abs(hashint4(i + 11)) %% 20 = 0"  # 5 %: failed, not charged
    failed_charged = "abs(hashint4(i + 13)) %% 25 = 0"  # 4 %: failed but charged
    created = f"(TIMESTAMPTZ '{start.isoformat()}' + (i * {step}) * INTERVAL '1 second')"
    _log(f"seeding {TASKS:,} tasks")
    n_tasks = _insert_select(
        Task,
        {
            "code": "gen_random_uuid()",
            "team_id": f"(ARRAY[{team_ids}])[1 + i %% {TEAMS}]",
            "creator_id": (
                f"(ARRAY[{user_ids}])[1 + (i %% {TEAMS}) * {MEMBERS} + (i / {TEAMS}) %% {MEMBERS}]"
            ),
            "family": (
                "(ARRAY['avatar','video_extend','multi_shot','text2video','image2video',"
                "'element'])[1 + abs(hashint4(i)) %% 6]"
            ),
            "model_name": (
                "(ARRAY['kling-v2-6','kling-v2-5-turbo','kling-v2-1-master','kling-v1-6'])"
                "[1 + abs(hashint4(i + 2)) %% 4]"
            ),
            "mode": "CASE WHEN abs(hashint4(i + 1)) %% 3 = 0 THEN 'pro' ELSE 'std' END",
            "task_id": "'bench-' || i",
            "status": f"CASE WHEN {uncharged} OR {failed_charged} THEN 'failed' ELSE 'succeed' END",
            "final_unit_deduction": f"CASE WHEN {uncharged} THEN NULL ELSE {units} END",
            "estimated_units": units,
            "created_at": created,
            "submitted_at": f"{created} + INTERVAL '1 second'",
            "finished_at": f"{created} + INTERVAL '90 seconds'",
            "vendor_created_at": f"{created} + INTERVAL '1 second'",
            "vendor_updated_at": f"{created} + INTERVAL '90 seconds'",
        },
        f"FROM generate_series(1, {TASKS}) AS i",
    )
    _log("seeding the charges")
    n_charges = seed_charges_from_tasks()
    corrections = TASKS - n_charges  # the ledger ends at exactly TASKS rows
    _log(f"seeding {n_charges:,} charges done; {corrections:,} corrections")
    n_corrections = _insert_select(
        Deduction,
        {
            "team_id": "d.team_id",
            "task_id": "d.task_id",
            "member_id": "d.member_id",
            "family": "d.family",
            "model_name": "d.model_name",
            "mode": "d.mode",
            "task_status": "d.task_status",
            "units": "CASE WHEN d.id %% 2 = 0 THEN -0.250 ELSE 0.500 END",
            "recorded_at": "LEAST(d.recorded_at + INTERVAL '1 day', now())",
            "corrects_id": "d.id",
            "note": "'bench correction'",
        },
        "FROM tasks_app_deduction d WHERE abs(hashint8(d.id + 17)) %% 10 = 0 "
        f"ORDER BY hashint8(d.id + 19) LIMIT {corrections}",
    )
    _log("vacuum analyze")
    with connection.cursor() as cursor:
        for table in ("tasks_app_task", "tasks_app_deduction", "auth_user", "accounts_team"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    return {
        "team": teams[0],
        "member": users[0],
        "staff": staff,
        "tasks": n_tasks,
        "ledger": n_charges + n_corrections,
    }


def _add_missing_columns() -> None:
    """Add the columns a kept database lacks (a field added to a model since it was seeded;
    ``migrate --run-syncdb`` only creates missing tables)."""
    from django.apps import apps
    from django.db import connection

    with connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
        for model in apps.get_models():
            table = model._meta.db_table
            if table not in tables:
                continue
            have = {c.name for c in connection.introspection.get_table_description(cursor, table)}
            for f in model._meta.local_concrete_fields:
                if f.column not in have:
                    _log(f"adding the column {table}.{f.column}")
                    with connection.schema_editor() as editor:
                        editor.add_field(model, f)


def _reuse() -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    from klingweb.accounts.models import Team
    from tasks_app.models import Deduction, Task

    return {
        "team": Team.objects.get(name="Team 00"),
        "member": get_user_model().objects.get(username="t00m0"),
        "staff": get_user_model().objects.get(username="finance"),
        "tasks": Task.objects.count(),
        "ledger": Deduction.objects.count(),
    }


TEAM_FLOOR_SQL = """
WITH l AS (
  SELECT COALESCE(SUM(units), 0) AS units,
         COALESCE(SUM(units) FILTER (WHERE task_status = 'failed'), 0) AS failed_units,
         COUNT(*) FILTER (WHERE corrects_id IS NULL) AS charged
  FROM tasks_app_deduction
  WHERE team_id = %(team)s AND recorded_at >= %(start)s AND recorded_at < %(end)s
), t AS (
  SELECT COUNT(*) FILTER (WHERE status IN ('submitted', 'processing', 'succeed', 'failed')) AS run,
         COUNT(*) FILTER (WHERE status = 'succeed') AS succeeded,
         COUNT(*) FILTER (WHERE status = 'failed') AS failed
  FROM tasks_app_task
  WHERE team_id = %(team)s AND created_at >= %(start)s AND created_at < %(end)s
)
SELECT l.units, l.failed_units, l.charged, t.run, t.succeeded, t.failed FROM l, t
"""

# Every figure the team page shows, in one hand-written statement: the totals, units per local
# day × family, per member, per family × model × mode (one pass with GROUPING SETS), the ten
# tasks with the most units in the period, and the tasks run per family × status. It is the
# floor of the whole page's data, as TEAM_FLOOR_SQL is of its totals. The top tasks use the
# fastest way found: a task has one primary ledger row (constraint
# ``one_primary_deduction_per_task``), so only the tasks with a correction in the period need
# summing; the others' units are their one row's.
TEAM_ALL_SQL = """
WITH l AS MATERIALIZED (
  SELECT date_trunc('day', recorded_at AT TIME ZONE %(tz)s) AS day, family, member_id,
         model_name, mode, task_id, units, task_status, corrects_id
  FROM tasks_app_deduction
  WHERE team_id = %(team)s AND recorded_at >= %(start)s AND recorded_at < %(end)s
), corrected AS (
  SELECT task_id FROM l WHERE corrects_id IS NOT NULL AND task_id IS NOT NULL
)
SELECT CASE WHEN GROUPING(day) = 0 THEN 'day'
            WHEN GROUPING(member_id) = 0 THEN 'member' ELSE 'model' END AS part,
       day, family, member_id, model_name, mode, NULL::bigint AS task_id, SUM(units) AS units,
       COALESCE(SUM(units) FILTER (WHERE task_status = 'failed'), 0) AS failed_units,
       COUNT(*) FILTER (WHERE corrects_id IS NULL) AS n
FROM l
GROUP BY GROUPING SETS ((day, family), (member_id), (family, model_name, mode))
UNION ALL
SELECT 'top', NULL, NULL, NULL, NULL, NULL, task_id, units, NULL, NULL FROM (
  SELECT task_id, units FROM l
  WHERE corrects_id IS NULL AND task_id IS NOT NULL
    AND task_id NOT IN (SELECT task_id FROM corrected)
  UNION ALL
  SELECT task_id, SUM(units) FROM l WHERE task_id IN (SELECT task_id FROM corrected)
  GROUP BY task_id
  ORDER BY units DESC, task_id DESC LIMIT 10
) top
UNION ALL
SELECT 'tasks', NULL, family, NULL, status, NULL, NULL, NULL, NULL, COUNT(*)
FROM tasks_app_task
WHERE team_id = %(team)s AND created_at >= %(start)s AND created_at < %(end)s
GROUP BY family, status
"""

COMPANY_FLOOR_SQL = """
SELECT team_id, date_trunc('month', recorded_at AT TIME ZONE %(tz)s) AS month, SUM(units)
FROM tasks_app_deduction
WHERE recorded_at >= %(start)s AND recorded_at < %(end)s
GROUP BY 1, 2
"""


def _sql(sql: str, params: dict[str, Any]) -> Callable[[], list[tuple]]:
    """A function running one hand-written statement and fetching its rows."""
    from django.db import connection

    def run() -> list[tuple]:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    return run


def _assert_same_figures(report: Any, rows: list[tuple]) -> None:
    """Fail unless the page's figures equal TEAM_ALL_SQL's ``rows``: units per day × family,
    per member, per model and mode, the top tasks in order, and the tasks per family."""
    from django.contrib.auth import get_user_model

    names = dict(get_user_model().objects.values_list("pk", "username"))
    days, members, models, top, counts = {}, {}, {}, [], {}
    for part, day, family, member_id, model, mode, task_id, units, failed, n in rows:
        if part == "day":
            days[(day.date(), family)] = units
        elif part == "member":
            members[names.get(member_id, "")] = (units, failed, n)
        elif part == "model":
            models[(family, model, mode)] = (units, n)
        elif part == "top":
            top.append((task_id, units))
        else:  # tasks: ``model`` holds the status
            counts.setdefault(family, {})[model] = n
    page_days = {
        (day, family): units
        for day, values, _ in report.days.rows
        for family, units in zip(report.days.families, values, strict=True)
        if (day, family) in days or units
    }
    assert page_days == days, "units per day differ"
    page_members = {g.key: (g.units, g.failed_units, g.charged_tasks) for g in report.groups}
    assert page_members == members, "units per member differ"
    assert {
        (m.family, m.model_name, m.mode): (m.units, m.charged_tasks) for m in report.models
    } == (models), "units per model differ"
    assert [(r.task.pk, r.units) for r in report.top_tasks] == top, "top tasks differ"
    for f in report.families:
        c = counts.get(f.family, {})
        run = sum(c.get(s, 0) for s in ("submitted", "processing", "succeed", "failed"))
        assert (f.tasks_run, f.succeeded, f.failed) == (
            run,
            c.get("succeed", 0),
            c.get("failed", 0),
        )


def _page(client: Any, url: str, params: dict[str, str], **headers: str) -> Callable[[], int]:
    """A function rendering a page through the test client; returns its size in bytes."""

    def run() -> int:
        response = client.get(url, params, headers=headers)
        assert response.status_code == 200, response.status_code
        return len(response.content)

    return run


def _queries(fn: Callable[[], Any]) -> int:
    """The queries of one run of ``fn`` right after another run of it: the state its timed
    runs saw (``_interleaved_ms`` runs a cached page right after its uncached twin, which
    empties the report cache; counting after another function would count a miss)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    fn()
    with CaptureQueriesContext(connection) as ctx:
        fn()
    return len(ctx.captured_queries)


def _export(client: Any, url: str, params: dict[str, str]) -> tuple[float, int, float]:
    """Stream a CSV export to the end, twice: (ms of a plain run, lines, peak Python memory in
    MB of a second run under tracemalloc, which slows it down)."""
    import tracemalloc

    start = time.perf_counter()
    response = client.get(url, params)
    lines = sum(chunk.count(b"\n") for chunk in response.streaming_content)
    ms = (time.perf_counter() - start) * 1000
    tracemalloc.start()
    response = client.get(url, params)
    for _ in response.streaming_content:
        pass
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return ms, lines, peak


def child() -> int:
    """Seed the bench database named by ``DATABASE_URL`` and print the figures."""
    import datetime as dt
    from decimal import Decimal

    import django

    django.setup()
    from django.apps import apps
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    from klingweb.reporting.figures import Scope, company_report, usage_report
    from klingweb.reporting.periods import Choice, period_resolve, portal_zone
    from tasks_app.budgets import team_zone

    started = time.perf_counter()
    # The schema straight from the models (as the tests' --nomigrations does); on reuse this
    # only adds tables that are missing.
    settings.MIGRATION_MODULES = {app.label: None for app in apps.get_app_configs()}
    _log("creating the schema")
    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
    if "--reuse" in sys.argv:
        _add_missing_columns()
    seeded = _reuse() if "--reuse" in sys.argv else _seed()
    seed_s = time.perf_counter() - started
    _log(f"{seeded['tasks']:,} tasks and {seeded['ledger']:,} ledger rows ready in {seed_s:.0f} s")
    # The seed writes the ledger with INSERT … SELECT: build its daily rollups as the
    # command does after a bulk load, then check them against the ledger (timed: both are
    # the operator's commands).
    from django.core.cache import caches

    from tasks_app.models import UsageDay, UsageRollup
    from tasks_app.rollups import rollups_check, rollups_rebuild

    if "--reuse" in sys.argv and os.environ.get("BENCH_USAGE_REBUILD") == "0":
        # A kept database whose rollups a previous run built and checked (the ledger is
        # unchanged since): skip the ten minutes of rebuilding and checking them.
        _log("rollups kept from the previous run (BENCH_USAGE_REBUILD=0)")
        rebuild_s = check_s = 0.0
        days_rows = UsageDay.objects.count()
        rollup_rows = UsageRollup.objects.count() + days_rows
    else:
        begin = time.perf_counter()
        rollup_rows = rollups_rebuild()
        rebuild_s = time.perf_counter() - begin
        begin = time.perf_counter()
        differences = rollups_check()
        check_s = time.perf_counter() - begin
        assert differences == [], differences[:5]
        days_rows = UsageDay.objects.count()
        assert UsageRollup.objects.count() + days_rows == rollup_rows
    _log(
        f"{rollup_rows:,} rollup rows ({days_rows:,} of them per team x day x family) built "
        f"in {rebuild_s:.1f} s, checked in {check_s:.1f} s"
    )
    report_cache = caches[settings.REPORT_CACHE]

    def uncached(fn: Callable[[], Any]) -> Callable[[], Any]:
        """``fn`` with the report cache emptied first (every figure computed afresh)."""

        def run() -> Any:
            report_cache.clear()
            return fn()

        return run

    team = seeded["team"]
    client = Client()
    client.force_login(seeded["staff"])
    rows: list[tuple[str, str, str, str, str]] = []

    # Team month report: last month, in the team's zone.
    tz = team_zone(team)
    month = period_resolve(key="last_month", tz=tz)
    params = {"team": team.pk, "start": month.start, "end": month.end, "tz": str(tz)}
    floor = _sql(TEAM_FLOOR_SQL, params)
    units, failed_units, charged, run, succeeded, failed = floor()[0]
    report = usage_report(scope=Scope(team_id=team.pk), choice=Choice(period=month))
    t = report.totals
    assert (t.units, t.failed_units, t.charged_tasks) == (units, failed_units, charged), t
    assert (t.tasks_run, t.succeeded, t.failed) == (run, succeeded, failed), t
    every_figure = _sql(TEAM_ALL_SQL, params)
    _assert_same_figures(report, every_figure())
    url = reverse("usage-team", kwargs={"team": team.code})
    empty = {"period": "custom", "start": "2001-01-01", "end": "2001-01-31"}
    fns = {
        "page": _page(client, url, {"period": "last_month"}),
        "uncached": uncached(_page(client, url, {"period": "last_month"})),
        "region": _page(client, url, {"period": "last_month"}, HX_Request="true"),
        "empty": _page(client, url, empty),
        "floor": floor,
        "all": every_figure,
    }
    _log("measuring the team month report")
    ms = _interleaved_ms(fns)
    f = ms["floor"]
    label = f"Team month ({t.charged_tasks:,} charges, {t.units:,} units), cached"
    rows += [
        (
            label,
            f"{ms['page']:.1f}",
            str(_queries(fns["page"])),
            f"{f:.1f}",
            f"{ms['page'] / f:.2f}×",
        ),
        (
            "  same, uncached (report cache emptied)",
            f"{ms['uncached']:.1f}",
            str(_queries(fns["uncached"])),
            f"{f:.1f}",
            f"{ms['uncached'] / f:.2f}×",
        ),
        (
            "  same, HTMX report region",
            f"{ms['region']:.1f}",
            str(_queries(fns["region"])),
            f"{f:.1f}",
            f"{ms['region'] / f:.1f}×",
        ),
        (
            "  same page, a month with no rows",
            f"{ms['empty']:.1f}",
            str(_queries(fns["empty"])),
            "–",
            "–",
        ),
        (
            "  one hand-written SQL for every figure",
            f"{ms['all']:.1f}",
            "1",
            f"{f:.1f}",
            f"{ms['all'] / f:.1f}×",
        ),
    ]

    # Long ranges: the team page over 365 days (daily rollups) against 30 days (ledger).
    last = month.last_day
    ranges = {
        "d30": {"period": "30d"},
        "d365": {
            "period": "custom",
            "start": (last - dt.timedelta(days=364)).isoformat(),
            "end": last.isoformat(),
        },
    }
    lfns = {}
    for key, query in ranges.items():  # each cached run right after its uncached twin refills
        lfns[f"{key}_uncached"] = uncached(_page(client, url, query))
        lfns[key] = _page(client, url, query)
    _log("measuring the team report over 30 and 365 days")
    lms = _interleaved_ms(lfns)
    for key, label in (("d30", "Team 30 days"), ("d365", "Team 365 days (rollups)")):
        for suffix, what in (("", "cached"), ("_uncached", "uncached")):
            rows.append(
                (
                    f"{label}, {what}",
                    f"{lms[key + suffix]:.1f}",
                    str(_queries(lfns[key + suffix])),
                    "–",
                    f"{lms[key + suffix] / lms['d30' + suffix]:.2f}× of 30 days",
                )
            )

    # Company report: last 12 months, in the portal's zone.
    ptz = portal_zone()
    year = period_resolve(key="12m", tz=ptz)
    cfloor = _sql(COMPANY_FLOOR_SQL, {"start": year.start, "end": year.end, "tz": str(ptz)})
    company = company_report(choice=Choice(period=year))
    assert company.total == sum((r[2] for r in cfloor()), Decimal("0")), "company totals differ"
    cfns = {"page": _page(client, reverse("usage-company"), {"period": "12m"}), "floor": cfloor}
    _log("measuring the company report")
    cms = _interleaved_ms(cfns)
    rows.append(
        (
            f"Company 12 months ({company.total:,} units)",
            f"{cms['page']:.1f}",
            str(_queries(cfns["page"])),
            f"{cms['floor']:.1f}",
            f"{cms['page'] / cms['floor']:.2f}×",
        )
    )

    # A year of one team's ledger as CSV (streamed).
    export = reverse("usage-team-export", kwargs={"team": team.code, "table": "ledger"})
    start = (year.first_day).isoformat()
    exp_ms, lines, peak_mb = _export(
        client, export, {"period": "custom", "start": start, "end": year.last_day.isoformat()}
    )

    header = ("Report", "Page ms (median)", "Queries", "Floor SQL ms", "Page / floor")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    print(
        f"Usage reports on PostgreSQL: {seeded['ledger']:,} ledger rows, {seeded['tasks']:,} "
        f"tasks, {TEAMS} teams, {DAYS} days; median of {RUNS} interleaved runs after 2 warm-ups"
    )
    for i, row in enumerate([header, *rows]):
        print(
            "  ".join(
                str(c).ljust(w) if j == 0 else str(c).rjust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(
        f"Team month, against its floor: every figure in one SQL {ms['all'] / f:.1f}×; the same "
        f"page for a month with no rows (fixed cost: session, access, budgets, template) "
        f"{ms['empty'] / f:.1f}×; page / every-figure SQL {ms['page'] / ms['all']:.1f}×"
    )
    print(
        f"CSV export of one team's 12-month ledger: {lines - 1:,} rows streamed in "
        f"{exp_ms / 1000:.1f} s; peak Python memory while streaming {peak_mb:.1f} MB"
    )
    print(
        f"Rollups: {rollup_rows:,} rows ({days_rows:,} per team x day x family) for "
        f"{seeded['ledger']:,} ledger rows, rebuilt "
        f"(rollups_rebuild) in {rebuild_s:.1f} s, checked against the ledger (rollups_check) "
        f"in {check_s:.1f} s; 365 / 30 days: cached {lms['d365'] / lms['d30']:.2f}×, "
        f"uncached {lms['d365_uncached'] / lms['d30_uncached']:.2f}×"
    )
    print(f"Seeding took {seed_s:.0f} s; total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(child() if "--child" in sys.argv else main())
