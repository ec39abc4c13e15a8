"""Bench of the task list's live updating (issue 14 item 4): requests per second per open
page, and what they cost the server, with 25 and 100 unfinished tasks in the team.

- **before**: every unfinished row of the page polled its own partial (``tasks-row``)
  every 3 s (the old ``_row.html``: ``hx-trigger="every 3s"`` on each unfinished row), so
  requests per second = unfinished rows on the page / 3. Measured by making, per interval,
  the row requests the old page made.
- **after**: the page's one poller (``tasks_app.live``). Requests per second are read from
  the page itself (every element with ``hx-trigger="every Ns"`` counts 1/N), and per interval
  the one live request the page makes is timed.

Each of 20 intervals, two tasks of the page change status first (as the poller would make
them), so the live answer carries changed rows. Reported per open page: requests/s, SQL
queries per interval, server milliseconds per interval (median). The Django test client
runs the real views, middleware and templates in process (no network), on a throwaway
SQLite file (tables straight from the models). ``BENCH_LIVE_SIZES=25,100`` picks sizes.

Run: ``make bench`` or ``.venv/bin/python -m tests.benchmarks.bench_live``.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIZES = [25, 100]
INTERVALS = 20
OLD_ROW_INTERVAL_S = 3.0  # the old per-row trigger: hx-trigger="every 3s"
_TRIGGER = re.compile(r'hx-trigger="every (\d+(?:\.\d+)?)s"')


def main() -> int:
    """Run the bench in a child process with a throwaway SQLite database; returns its status."""
    with tempfile.TemporaryDirectory(prefix="klingweb-bench-live-") as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "klingweb.settings",
                "SQLITE_PATH": str(Path(tmp) / "bench.sqlite3"),
                "MEDIA_ROOT": str(Path(tmp) / "media"),
                "LOG_LEVEL": "ERROR",
            }
        )
        child = [sys.executable, "-m", "tests.benchmarks.bench_live", "--child"]
        return subprocess.call(child, cwd=ROOT, env=env)


# --- child --------------------------------------------------------------------------------


class _NoMigrations(dict):
    def __contains__(self, item):
        return True

    def __getitem__(self, item):
        return None


def _setup():
    import django
    from django.conf import settings

    django.setup()
    settings.MIGRATION_MODULES = _NoMigrations()
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.AXES_ENABLED = False
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)


def _measure(client, fn) -> tuple[float, int]:
    """(milliseconds, SQL queries) of ``fn()``."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        start = time.perf_counter()
        fn()
        ms = (time.perf_counter() - start) * 1000
    return ms, len(queries)


def _run(size: int, team, user, client) -> dict:
    from django.urls import reverse
    from django.utils import timezone

    from tasks_app.models import Status, Task
    from tasks_app.services import task_status_move

    Task.objects.all().delete()
    now = timezone.now()
    Task.objects.bulk_create(
        Task(
            team=team,
            creator=user,
            family="text2video",
            prompt=f"bench {i}",
            status=Status.PROCESSING,
            created_at=now - timedelta(seconds=10 * (i + 1)),
        )
        for i in range(size)
    )
    list_url = reverse("tasks-list", kwargs={"team": team.code})
    page = client.get(list_url).content.decode()
    after_rps = sum(1 / float(s) for s in _TRIGGER.findall(page))
    live = re.search(r'<div id="task-live"[^>]*hx-get="([^"]+)"', page).group(1)
    live = live.replace("&amp;", "&")
    shown = [t for t in Task.objects.filter(team=team).order_by("-created_at")[:25]]
    before_rps = sum(1 for t in shown if t.is_unfinished) / OLD_ROW_INTERVAL_S

    before_ms, before_q, after_ms, after_q = [], [], [], []
    statuses = [Status.PROCESSING, Status.SUBMITTED]
    for interval in range(INTERVALS):
        for task in shown[2 * interval % 24 : 2 * interval % 24 + 2]:
            # "touch" two rows of the page: a status move bumps updated_at and the history
            Task.objects.filter(pk=task.pk).update(status=statuses[interval % 2])
            task_status_move(
                task_pk=task.pk, to=Status.PROCESSING, source="poll", expected_from=["submitted"]
            )

        def old_page():
            for task in shown:
                url = reverse("tasks-row", kwargs={"team": team.code, "code": task.code})
                assert client.get(url, headers={"HX-Request": "true"}).status_code == 200

        def new_page():
            nonlocal live
            answer = client.get(live, headers={"HX-Request": "true"})
            assert answer.status_code == 200
            found = re.search(r'<div id="task-live"[^>]*hx-get="([^"]+)"', answer.content.decode())
            live = found.group(1).replace("&amp;", "&")

        ms, queries = _measure(client, old_page)
        before_ms.append(ms)
        before_q.append(queries)
        ms, queries = _measure(client, new_page)
        after_ms.append(ms)
        after_q.append(queries)
    return {
        "size": size,
        "before_rps": before_rps,
        "after_rps": after_rps,
        "before_ms": statistics.median(before_ms),
        "after_ms": statistics.median(after_ms),
        "before_q": statistics.median(before_q),
        "after_q": statistics.median(after_q),
    }


def child() -> int:
    _setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from klingweb.accounts.models import Membership, Role, Team

    team = Team.objects.create(name="Bench live")
    user = get_user_model().objects.create_user(username="bench", password="x-bench-x-1234")
    Membership.objects.create(team=team, user=user, role=Role.MEMBER)
    client = Client()
    client.force_login(user)
    sizes = [int(s) for s in os.environ.get("BENCH_LIVE_SIZES", "").split(",") if s] or SIZES
    print(
        "unfinished | req/s per page      | SQL queries / 3 s   | server ms / 3 s (median)\n"
        "tasks      | before   after      | before   after      | before    after"
    )
    for size in sizes:
        r = _run(size, team, user, client)
        print(
            f"{r['size']:>10} | {r['before_rps']:6.2f}   {r['after_rps']:6.2f}     "
            f"| {r['before_q']:6.0f}   {r['after_q']:6.0f}     "
            f"| {r['before_ms']:7.1f}   {r['after_ms']:7.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(child() if "--child" in sys.argv else main())
