"""Bench of the task list and its search (issue 15 item 5) on PostgreSQL at 10k / 100k / 1M
tasks, before and after the list's scale work, measured side by side in one run.

Seeds 20 teams × 10 members and tasks over the last 365 days with ``INSERT … SELECT
generate_series`` (8 words a prompt out of 120, so a word is in ≈ 6 % of prompts; the rare
word "zebra" in 0.02 %; half the tasks have a file summary; numeric vendor task ids), growing
the same table 10k → 100k → 1M; team 0 holds half of the tasks (the worst case), 19 teams
share the rest. At each size it measures, for team 0 (and a small team), the server time of (``django.test.Client``: middleware, session, access check, queries,
template; median of interleaved runs after warm-ups):

- the list, page 1 (``GET /t/<team>/tasks/``);
- a search for a common word (``?q=sunset``), a rare word (``?q=zebra``) and a vendor
  task id (``?q=<task_id>``);

in two states of the same database:

- **before**: Django's ``Paginator`` (a full ``COUNT(*)``), the index ``(team, created_at
  DESC)`` of migration 0001, no trigram index;
- **after**: ``CappedPaginator`` (counts ≤ 10,001 rows; ≤ 51 for a search, in the list order), ``task_team_newest`` and
  ``task_newest``, and the GIN trigram indexes of the ``*_list_search_indexes`` migration.

Each page's task rows and count label are compared between the two states (same tasks; the
count is the same number, or "10,000+" / "50+" after). The plan of the search after is printed (the index
names it uses). Goal: ≤ 50 ms at 1M tasks.

Run: ``make bench`` (every bench) or ``.venv/bin/python -m tests.benchmarks.bench_list``
(``BENCH_LIST_SIZES=10000,100000`` for a shorter run). ``DATABASE_URL`` names the server
(default ``postgres://postgres@127.0.0.1:5432/postgres``); the bench creates its own database
``klingweb_bench_list_<pid>`` and drops it at the end. About 5–8 minutes on 2 cores.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/postgres"
ROOT = Path(__file__).resolve().parents[2]

TEAMS = 20
MEMBERS = 10
SIZES = [10_000, 100_000, 1_000_000]
DAYS = 365
RUNS = 7
WORDS = [
    "a",
    "the",
    "red",
    "blue",
    "green",
    "golden",
    "silver",
    "dark",
    "bright",
    "misty",
    "quiet",
    "stormy",
    "sunset",
    "sunrise",
    "ocean",
    "forest",
    "mountain",
    "river",
    "city",
    "street",
    "market",
    "garden",
    "desert",
    "island",
    "castle",
    "bridge",
    "tower",
    "train",
    "car",
    "boat",
    "plane",
    "bird",
    "horse",
    "fox",
    "wolf",
    "cat",
    "dog",
    "dragon",
    "robot",
    "knight",
    "dancer",
    "child",
    "woman",
    "man",
    "old",
    "young",
    "tiny",
    "giant",
    "slow",
    "fast",
    "walking",
    "running",
    "flying",
    "floating",
    "dancing",
    "singing",
    "smiling",
    "crying",
    "looking",
    "under",
    "over",
    "near",
    "inside",
    "behind",
    "through",
    "across",
    "cinematic",
    "aerial",
    "closeup",
    "wide",
    "shot",
    "camera",
    "pans",
    "zooms",
    "tracks",
    "orbit",
    "slow-motion",
    "timelapse",
    "neon",
    "rain",
    "snow",
    "fog",
    "light",
    "shadow",
    "fire",
    "water",
    "glass",
    "stone",
    "wood",
    "paper",
    "cloud",
    "star",
    "moon",
    "sky",
    "night",
    "morning",
    "evening",
    "winter",
    "summer",
    "autumn",
    "spring",
    "portrait",
    "landscape",
    "painting",
    "photo",
    "anime",
    "realistic",
    "vintage",
    "futuristic",
    "cozy",
    "epic",
    "dreamy",
]


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def main() -> int:
    """Create the bench database, run the bench in a child process, drop the database.
    Returns the child's exit status (0 when every figure was measured)."""
    import psycopg

    admin_url = os.environ.get("DATABASE_URL") or DEFAULT_URL
    name = f"klingweb_bench_list_{os.getpid()}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        print(f"bench_list: PostgreSQL not reachable at {admin_url}: {exc}; skipped")
        return 0
    with admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    keep = os.environ.get("BENCH_LIST_KEEP") == "1"
    try:
        env = {
            **os.environ,
            "DATABASE_URL": _with_db(admin_url, name),
            "DJANGO_SETTINGS_MODULE": "klingweb.settings",
            "DEBUG": "0",
            "LOG_LEVEL": "WARNING",
        }
        env.pop("REDIS_URL", None)
        args = [sys.executable, "-m", "tests.benchmarks.bench_list", "--child"]
        return subprocess.call(args, env=env, cwd=ROOT)
    finally:
        if keep:
            print(f"bench_list: kept the database {name} (BENCH_LIST_KEEP=1): drop it yourself")
        else:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- child: seed and measure --------------------------------------------------------------


def _log(message: str) -> None:
    print(f"[bench_list {time.strftime('%H:%M:%S')}] {message}", flush=True)


class _FullCount:
    """Django's ``Paginator`` (a full ``COUNT(*)``) with the labels the template shows."""

    def __new__(cls, object_list: Any, per_page: int, **kw: Any) -> Any:
        from django.core.paginator import Paginator

        class FullCount(Paginator):
            count_label = property(lambda self: f"{self.count:,}")
            num_pages_label = property(lambda self: f"{self.num_pages:,}")

        return FullCount(object_list, per_page)


def _search_migration() -> Any:
    """The tasks_app migration ``*_list_search_indexes`` (its number changes at merge)."""
    import tasks_app.migrations as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name.endswith("_list_search_indexes"):
            return importlib.import_module(f"{package.__name__}.{info.name}")
    raise RuntimeError("no tasks_app migration named *_list_search_indexes")


def _sql(*statements: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


#: Indexes each state does without (dropped inside a transaction that is rolled back, so
#: both states are measured in turns on one database).
WITHOUT = {
    "before": [
        "task_team_newest",
        "task_newest",
        "task_prompt_trgm",
        "task_summary_trgm",
        "task_task_id_trgm",
        "task_code_trgm",
    ],
    "after": ["task_team_created"],
}


def _indexes_create() -> None:
    """Every index of both states: the old ``(team, created_at DESC)`` of migration 0001, the
    newest-first ones, and the trigram ones through the migration's own function."""
    from django.db import connection

    _sql(
        "SET maintenance_work_mem = '256MB'",
        "CREATE INDEX IF NOT EXISTS task_team_created ON tasks_app_task (team_id, created_at DESC)",
        "CREATE INDEX IF NOT EXISTS task_team_newest ON tasks_app_task "
        "(team_id, created_at DESC, id DESC)",
        "CREATE INDEX IF NOT EXISTS task_newest ON tasks_app_task (created_at DESC, id DESC)",
    )
    with connection.schema_editor() as editor:
        _search_migration().trigram_create(None, editor)
    _sql("ANALYZE tasks_app_task")


def _in_state(state: str, fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), ms fn took)`` with the indexes ``WITHOUT[state]`` dropped in a transaction
    that is rolled back afterwards, and the paginator of that state in the view."""
    from django.db import transaction

    import tasks_app.live as live
    from tasks_app.paging import CappedPaginator

    # The list's paginator lives in tasks_app.live (task_table_context).
    live.CappedPaginator = _FullCount if state == "before" else CappedPaginator
    try:
        with transaction.atomic():
            _sql(*(f"DROP INDEX {name}" for name in WITHOUT[state]))
            start = time.perf_counter()
            result = fn()
            elapsed = (time.perf_counter() - start) * 1000
            transaction.set_rollback(True)
    finally:
        live.CappedPaginator = CappedPaginator
    return result, elapsed


def _seed_people() -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    from klingweb.accounts.models import Membership, Role, Team

    User = get_user_model()
    teams = Team.objects.bulk_create(Team(name=f"Team {i:02d}") for i in range(TEAMS))
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
    return {"teams": teams, "users": users}


def _seed_tasks(people: dict[str, Any], total: int, where: str) -> int:
    """Insert the tasks ``i`` of ``1..total`` matching the SQL condition ``where`` (on ``i``),
    task ``i`` created at ``i / total`` of the way through the last ``DAYS`` days: a row keeps
    its time as the table grows. Team and creator by hash of ``i``. Returns the row count."""
    import datetime as dt

    from django.utils import timezone

    from tasks_app.models import Task
    from tests.benchmarks.bench_usage import _insert_select

    teams, users = people["teams"], people["users"]
    start = timezone.now() - dt.timedelta(days=DAYS)
    step = DAYS * 86400 / total
    team_ids = ",".join(str(t.pk) for t in teams)
    user_ids = ",".join(str(u.pk) for u in users)
    words = "(ARRAY[" + ",".join(f"'{w}'" for w in WORDS) + "])"
    n = len(WORDS)
    prompt = " || ' ' || ".join(f"{words}[1 + abs(hashint4(i * 8 + {k})) %% {n}]" for k in range(8))
    prompt += " || CASE WHEN abs(hashint4(i + 101)) %% 5000 = 0 THEN ' zebra' ELSE '' END"
    # Team 0 holds half of the tasks (the worst case of a list); 19 teams share the rest.
    team = f"(CASE WHEN abs(hashint4(i + 7)) %% 2 = 0 THEN 0 ELSE 1 + abs(hashint4(i + 8)) %% {TEAMS - 1} END)"
    created = f"(TIMESTAMPTZ '{start.isoformat()}' + (i * {step}) * INTERVAL '1 second')"
    return _insert_select(
        Task,
        {
            "code": "gen_random_uuid()",
            "team_id": f"(ARRAY[{team_ids}])[1 + {team}]",
            "creator_id": (
                f"(ARRAY[{user_ids}])[1 + {team} * {MEMBERS} + abs(hashint4(i + 5)) %% {MEMBERS}]"
            ),
            "family": (
                "(ARRAY['text2video','image2video','avatar','multi_shot'])"
                "[1 + abs(hashint4(i + 3)) %% 4]"
            ),
            "model_name": "'kling-v2-6'",
            "mode": "'std'",
            "prompt": prompt,
            "summary": (
                "CASE WHEN abs(hashint4(i + 9)) %% 2 = 0 "
                "THEN 'input-' || i || '.png (1.2 MB)' ELSE '' END"
            ),
            "task_id": "(800000000000000000 + i)::text",
            "status": "'succeed'",
            "final_unit_deduction": "0.500",
            "estimated_units": "0.500",
            "created_at": created,
            "submitted_at": f"{created} + INTERVAL '1 second'",
            "finished_at": f"{created} + INTERVAL '90 seconds'",
        },
        f"FROM generate_series(1, {total}) AS i WHERE {where} ORDER BY i",
    )


def _page(client: Any, url: str, params: dict[str, str]) -> Callable[[], Any]:
    """A function rendering the list through the test client; returns (task codes shown,
    the count label)."""

    def run() -> Any:
        response = client.get(url, params)
        assert response.status_code == 200, response.status_code
        body = response.content.decode()
        label = re.search(r"· ([\d,]+\+?) tasks</span>", body)
        return re.findall(r'id="task-([0-9a-f-]{36})"', body), label and label.group(1)

    return run


def _plan_indexes(params: dict[str, str], team: Any) -> str:
    """Index names in the plan of the list's queries for ``params`` (after), via EXPLAIN."""
    from django.db import connection
    from django.test import RequestFactory

    from tasks_app.forms import TaskFilterForm
    from tasks_app.models import Task
    from tasks_app.paging import list_count_cap, searches

    form = TaskFilterForm(RequestFactory().get("/", params).GET, team=team, families=[], mine=0)
    qs = form.filter(Task.objects.filter(team=team))
    found: list[str] = []
    with connection.cursor() as cursor:
        for sql, sql_params in (
            qs[:25].query.sql_with_params(),
            # A search counts in the list's order (CappedPaginator(ordered=True)).
            (qs if searches(params) else qs.order_by())[: list_count_cap(params) + 1]
            .values("pk")
            .query.sql_with_params(),
        ):
            cursor.execute("EXPLAIN " + sql, sql_params)
            plan = "\n".join(r[0] for r in cursor.fetchall())
            found.append(
                "+".join(dict.fromkeys(re.findall(r"(?:on|using) (task_\w+)", plan))) or "seq"
            )
    return " / ".join(found)


def child() -> int:
    """Seed the bench database named by ``DATABASE_URL`` and print the figures."""
    import django

    django.setup()
    from django.apps import apps
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    from tasks_app.models import Task

    started = time.perf_counter()
    settings.MIGRATION_MODULES = {app.label: None for app in apps.get_app_configs()}
    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
    people = _seed_people()
    team, small = people["teams"][0], people["teams"][1]
    client = Client()
    client.force_login(people["users"][0])
    small_client = Client()
    small_client.force_login(people["users"][MEMBERS])
    url = reverse("tasks-list", kwargs={"team": team.code})
    small_url = reverse("tasks-list", kwargs={"team": small.code})
    sizes = [int(s) for s in os.environ.get("BENCH_LIST_SIZES", "").split(",") if s] or SIZES
    total = max(sizes)
    rows: list[tuple[str, ...]] = []
    plans: list[str] = []
    seeded = 0
    for size in sizes:
        # Rows keep their times as the table grows: the sizes are the first 1 %, 10 %, 100 %
        # of the final table's numbers spread evenly (every `total // size`-th slot).
        _log(f"seeding up to {size:,} tasks")
        # Inserting with GIN indexes in place is slow: they are built again after seeding.
        _sql(*(f"DROP INDEX IF EXISTS {name}" for name in WITHOUT["before"][2:]))
        _seed_tasks_spread(people, seeded, size, total)
        seeded = size
        _sql("VACUUM ANALYZE tasks_app_task")
        some_task_id = (
            Task.objects.filter(team=team).order_by("-id").values_list("task_id", flat=True)[5]
        )
        # (client, url, team, query): team 0 (half the tasks), then team 1 (1/38 of them).
        cases = {
            "list": (client, url, team, {}),
            "q=sunset": (client, url, team, {"q": "sunset"}),
            "q=zebra": (client, url, team, {"q": "zebra"}),
            "q=<task_id>": (client, url, team, {"q": some_task_id}),
            "small team list": (small_client, small_url, small, {}),
            "small team q=sunset": (small_client, small_url, small, {"q": "sunset"}),
        }
        _log(f"{size:,} tasks: indexes")
        _indexes_create()
        _log(f"{size:,} tasks: measuring before and after in turns")
        fns = {case: _page(c, u, params) for case, (c, u, _, params) in cases.items()}
        results: dict[str, dict[str, Any]] = {"before": {}, "after": {}}
        times: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
        runs = RUNS if size < 1_000_000 else 5
        for round_ in range(runs + 2):  # two warm-up rounds
            for case, fn in fns.items():
                for state in ("before", "after"):
                    results[state][case], elapsed = _in_state(state, fn)
                    if round_ >= 2:
                        times[state].setdefault(case, []).append(elapsed)
        ms = {st: {c: statistics.median(v) for c, v in d.items()} for st, d in times.items()}
        for case, (_, _, case_team, params) in cases.items():
            (codes_b, label_b), (codes_a, label_a) = results["before"][case], results["after"][case]
            assert codes_b == codes_a, f"{case}: different tasks before and after"
            # One page only: no count shown. Else the same count, or "10,000+"/"50+" after.
            assert label_a == label_b or (label_a or "").endswith("+"), (case, label_b, label_a)
            b, a = ms["before"][case], ms["after"][case]
            rows.append(
                (f"{size:,}", case, label_b, label_a, f"{b:.1f}", f"{a:.1f}", f"{b / a:.1f}×")
            )
            if size == sizes[-1]:
                plan, _ = _in_state("after", lambda p=params, t=case_team: _plan_indexes(p, t))
                plans.append(f"{case}: {plan}")

    header = ("Tasks", "Page", "Count before", "after", "ms before", "ms after", "gain")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    print(
        f"Task list on PostgreSQL, {TEAMS} teams: team 0 holds half the tasks, a small team "
        f"1/{2 * (TEAMS - 1)} of them; server time "
        f"through the test client, median of {RUNS} runs (5 at 1M) after 2 warm-ups, before "
        "and after in turns; before = Paginator + old index, no trigram; after = "
        "CappedPaginator + newest-first + pg_trgm GIN indexes"
    )
    for i, row in enumerate([header, *rows]):
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"Plans after at {sizes[-1]:,} tasks (page query / capped count):")
    for plan in plans:
        print("  " + plan)
    print(f"Total {time.perf_counter() - started:.0f} s")
    return 0


def _seed_tasks_spread(people: dict[str, Any], have: int, size: int, total: int) -> int:
    """Grow the table from ``have`` to ``size`` rows: the slots ``i`` of ``1..total`` with
    ``i % (total // size) == 0`` not seeded yet, so every size spans the whole year."""
    where = f"i %% {total // size} = 0"
    if have:
        where += f" AND i %% {total // have} <> 0"
    return _seed_tasks(people, total, where)


if __name__ == "__main__":
    sys.exit(child() if "--child" in sys.argv else main())
