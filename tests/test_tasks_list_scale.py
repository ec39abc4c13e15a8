"""The task list at scale (issue 15 item 5): the capped count ("10,000+") and paging past it,
search results on SQLite and PostgreSQL, and (PostgreSQL) the search served by the trigram
indexes of the ``*_list_search_indexes`` migration.

The cap is set small through the ``TASK_LIST_COUNT_CAP`` setting instead of seeding 10k rows.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from tasks_app.models import Status, Task


def list_url(portal) -> str:
    return reverse("tasks-list", kwargs={"team": portal.team.code})


def seed(portal, n: int) -> list[Task]:
    """``n`` tasks of the team, task ``i`` created ``n - i`` minutes ago (newest last)."""
    now = timezone.now()
    return Task.objects.bulk_create(
        Task(
            team=portal.team,
            creator=portal.member,
            family="text2video",
            prompt=f"row {i:03d}!",
            status=Status.SUCCEED,
            created_at=now - timedelta(minutes=n - i),
        )
        for i in range(n)
    )


def shown(body: str) -> list[str]:
    """The prompts of the rows on a page, in order."""
    return re.findall(r"row (\d{3})!", body)


def pager(body: str) -> str:
    """The pager's text ("Page 1 of 2+ · 50+ tasks")."""
    match = re.search(r"<span>(Page [^<]*)</span>", body)
    return match.group(1) if match else ""


class TestCappedCount:
    def test_count_beyond_the_cap_shows_plus_and_every_page_is_reachable(
        self, client, portal, settings
    ):
        settings.TASK_LIST_COUNT_CAP = 50
        seed(portal, 60)
        client.force_login(portal.member)

        first = client.get(list_url(portal)).content.decode()
        assert pager(first) == "Page 1 of 2+ · 50+ tasks"
        assert shown(first) == [f"{i:03d}" for i in range(59, 34, -1)]
        assert "page=2" in first and "Older →" in first and "← Newer" not in first

        second = client.get(list_url(portal), {"page": 2}).content.decode()
        assert pager(second) == "Page 2 of 2+ · 50+ tasks"
        assert shown(second) == [f"{i:03d}" for i in range(34, 9, -1)]
        assert "Older →" in second and "← Newer" in second

        # Past the cap: the count widens to reach the page and is exact again at the end.
        third = client.get(list_url(portal), {"page": 3}).content.decode()
        assert pager(third) == "Page 3 of 3 · 60 tasks"
        assert shown(third) == [f"{i:03d}" for i in range(9, -1, -1)]
        assert "Older →" not in third and "← Newer" in third

    def test_count_under_the_cap_is_exact(self, client, portal, settings):
        settings.TASK_LIST_COUNT_CAP = 50
        seed(portal, 30)
        client.force_login(portal.member)
        body = client.get(list_url(portal)).content.decode()
        assert pager(body) == "Page 1 of 2 · 30 tasks"
        assert "+" not in pager(body)

    def test_page_out_of_range_or_not_a_number(self, client, portal, settings):
        settings.TASK_LIST_COUNT_CAP = 50
        seed(portal, 60)
        client.force_login(portal.member)
        last = client.get(list_url(portal), {"page": 999999}).content.decode()
        assert pager(last) == "Page 3 of 3 · 60 tasks"
        assert shown(last)[0] == "009"
        first = client.get(list_url(portal), {"page": "abc"}).content.decode()
        assert pager(first) == "Page 1 of 2+ · 50+ tasks"

    def test_search_counts_to_its_own_smaller_cap(self, client, portal, settings):
        settings.TASK_LIST_COUNT_CAP = 50
        settings.TASK_LIST_SEARCH_COUNT_CAP = 30
        seed(portal, 60)
        client.force_login(portal.member)
        first = client.get(list_url(portal), {"q": "row"}).content.decode()
        assert pager(first) == "Page 1 of 1+ · 30+ tasks"
        assert "q=row&amp;page=2" in first
        last = client.get(list_url(portal), {"q": "row", "page": 3}).content.decode()
        assert pager(last) == "Page 3 of 3 · 60 tasks"
        # A blank search is no search: the list's cap.
        blank = client.get(list_url(portal), {"q": "  "}).content.decode()
        assert pager(blank) == "Page 1 of 2+ · 50+ tasks"

    def test_filters_are_counted_with_the_cap(self, client, portal, settings):
        settings.TASK_LIST_COUNT_CAP = 50
        tasks = seed(portal, 60)
        Task.objects.filter(pk__in=[t.pk for t in tasks[:5]]).update(status=Status.FAILED)
        client.force_login(portal.member)
        body = client.get(list_url(portal), {"status": "failed"}).content.decode()
        assert shown(body) == ["004", "003", "002", "001", "000"]
        assert "No task matches" not in body


SEARCHES = ["fox", "FOX", "Fo", "x", "50%", "under_score", "clip.mp4", "8000", "zzz", "é"]


class TestSearch:
    """``?q=``: prompt, summary, vendor task_id and code, case-insensitively (ASCII), the
    same tasks on SQLite and PostgreSQL (with or without the trigram indexes)."""

    @pytest.fixture
    def tasks(self, portal):
        rows = [
            ("a red fox in snow", "", ""),
            ("A RED FOX AT NIGHT", "", ""),
            ("an owl", "fox.png (1.2 MB)", ""),
            ("café 50% off", "", ""),
            ("under_score and underxscore", "", ""),
            ("", "clip.mp4 (3 MB)", "800012345"),
            ("a wolf", "", "vendor-7"),
            ("prowling", "", ""),
        ]
        made = []
        for i, (prompt, summary, task_id) in enumerate(rows):
            made.append(
                Task.objects.create(
                    team=portal.team,
                    creator=portal.member,
                    family="text2video",
                    prompt=prompt,
                    summary=summary,
                    task_id=task_id,
                    created_at=timezone.now() - timedelta(minutes=i),
                )
            )
        Task.objects.create(team=portal.other_team, family="text2video", prompt="another fox")
        return made

    @staticmethod
    def expected(tasks: list[Task], q: str) -> set[str]:
        """Codes of the tasks a case-insensitive (ASCII) substring search finds."""
        needle = q.lower()
        return {
            str(t.code)
            for t in tasks
            if any(needle in v.lower() for v in (t.prompt, t.summary, t.task_id, str(t.code)))
        }

    @pytest.mark.parametrize("q", SEARCHES)
    def test_search_finds_the_same_tasks(self, client, portal, tasks, q):
        client.force_login(portal.member)
        body = client.get(list_url(portal), {"q": q}).content.decode()
        found = set(re.findall(r'id="task-([0-9a-f-]{36})"', body))
        assert found == self.expected(tasks, q)

    def test_search_by_code_fragment(self, client, portal, tasks):
        client.force_login(portal.member)
        code = str(tasks[3].code)
        body = client.get(list_url(portal), {"q": code[9:18].upper()}).content.decode()
        assert set(re.findall(r'id="task-([0-9a-f-]{36})"', body)) == {code}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="trigram indexes: PostgreSQL only")
@pytest.mark.django_db
def test_postgresql_search_is_served_by_trigram_indexes(portal):
    """The index expressions match the SQL Django emits for the search: with sequential and
    plain index scans off, the planner can still serve the search's OR with a bitmap scan of
    every trigram index (a mismatched expression would leave only a Seq Scan)."""
    from django.test import RequestFactory

    from tasks_app.forms import TaskFilterForm

    form = TaskFilterForm(
        RequestFactory().get("/", {"q": "sunset"}).GET, team=portal.team, families=[], mine=True
    )
    queryset = form.filter(Task.objects.all())
    sql, params = queryset.order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'tasks_app_task' "
            "AND indexdef LIKE '%%gin_trgm_ops%%'"
        )
        assert {r[0] for r in cursor.fetchall()} == {
            "task_prompt_trgm",
            "task_summary_trgm",
            "task_task_id_trgm",
            "task_code_trgm",
        }
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    for name in ("task_prompt_trgm", "task_summary_trgm", "task_task_id_trgm", "task_code_trgm"):
        assert name in plan, plan
    assert "Seq Scan" not in plan, plan
