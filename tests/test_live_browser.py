"""The task list's one live request, swapped by htmx 2 in Chromium (issue 14 item 4): new
rows go in at their place, changed rows are replaced, rows that left the page go, and the
pagination line follows — all in the open page, without a reload. Chromium on the Django
test client (``tests/browser_support.py``); the poller's real 3-second interval.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from tasks_app.models import Status, Task
from tasks_app.services import task_status_move
from tests.browser_support import ORIGIN, chromium, routed_page  # noqa: F401 (fixture)

# Committed rows: Playwright calls the route handlers (Django) with a connection of their own.
pytestmark = pytest.mark.django_db(transaction=True)

LIVE_MS = 10_000  # a few 3-second intervals


def _task(portal, minutes: int, **kw) -> Task:
    task = Task.objects.create(team=portal.team, creator=portal.member, family="text2video", **kw)
    Task.objects.filter(pk=task.pk).update(created_at=timezone.now() - timedelta(minutes=minutes))
    return task


def test_open_list_takes_new_changed_and_leaving_rows(chromium, client, portal):  # noqa: F811
    older = _task(portal, 10, prompt="older one", status=Status.PROCESSING)
    leaving = _task(portal, 9, prompt="leaving one", status=Status.PROCESSING)
    client.force_login(portal.viewer)
    page, errors = routed_page(chromium, client)
    page.goto(
        ORIGIN + reverse("tasks-list", kwargs={"team": portal.team.code}) + "?status=unfinished"
    )
    page.evaluate("window.noReload = true")
    rows = page.locator("#task-rows tr")
    expect(rows).to_have_count(2)

    newest = _task(portal, 0, prompt="a teammate's newest", status=Status.QUEUED)
    middle = _task(portal, 5, prompt="slotted in the middle", status=Status.QUEUED)
    task_status_move(task=older, to=Status.SUBMITTED, source="poll", expected_from=["processing"])
    Task.objects.filter(pk=older.pk).update(error_message="Kling is slow today")
    task_status_move(task=leaving, to=Status.SUCCEED, source="poll", finished_at=timezone.now())

    expect(rows).to_have_count(3, timeout=LIVE_MS)
    ids = [rows.nth(i).get_attribute("id") for i in range(3)]
    assert ids == [f"task-{newest.code}", f"task-{middle.code}", f"task-{older.code}"]
    expect(page.locator(f"#task-{older.code}")).to_contain_text("Kling is slow today")
    assert page.evaluate("window.noReload") is True
    assert errors == []
