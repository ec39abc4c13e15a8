"""Every main page is usable on a 390 px wide phone (issue 14 finish list): the top menu
wraps instead of running off the screen, wide tables scroll in their own box, and the page
never scrolls sideways (``scrollWidth <= innerWidth``); no console error on the way.

Chromium at 390 × 844 on the Django test client (``tests/browser_support.py``).
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from tasks_app.models import Status, Task
from tests.browser_support import ORIGIN, chromium, routed_page  # noqa: F401 (fixture)

# Committed rows: Playwright calls the route handlers (Django) with a connection of their own.
pytestmark = pytest.mark.django_db(transaction=True)


def test_main_pages_fit_a_390px_phone(chromium, client, portal):  # noqa: F811
    portal.owner.is_staff = True
    portal.owner.save(update_fields=["is_staff"])
    for status in (Status.SUCCEED, Status.PROCESSING, Status.QUEUED):
        task = Task.objects.create(
            team=portal.team,
            creator=portal.owner,
            family="text2video",
            status=status,
            prompt="A very long prompt about a lighthouse at dusk " * 8,
            model_name="kling-v2-master",
            mode="pro",
        )
    client.force_login(portal.owner)
    page, errors = routed_page(chromium, client, width=390, height=844)
    team = {"team": portal.team.code}
    urls = [
        reverse("tasks-list", kwargs=team),
        reverse("tasks-mine", kwargs=team),
        reverse("tasks-detail", kwargs={**team, "code": task.code}),
        reverse("tasks-new", kwargs=team),
        reverse("tasks-create", kwargs={**team, "family": "text2video"}),
        reverse("elements-list", kwargs=team),
        reverse("usage-team", kwargs=team),
        reverse("usage-mine"),
        reverse("usage-company"),
        reverse("tasks-budgets", kwargs=team),
        reverse("accounts-settings", kwargs=team),
    ]
    too_wide = {}
    for url in urls:
        page.goto(ORIGIN + url)
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        if width[0] > width[1]:
            too_wide[url] = width
        # The menu's links are on screen, not cut off at the right edge.
        right = page.evaluate(
            "Math.max(...Array.from(document.querySelectorAll('.topbar a, .topbar summary'))"
            ".map(e => e.getBoundingClientRect().right))"
        )
        assert right <= 390, (url, right)
    assert too_wide == {}
    assert errors == []


def test_task_table_does_not_shift_when_thumbnails_arrive(chromium, client, portal):  # noqa: F811
    """The columns stay put whether the page has no result thumbnail yet or has some."""
    from django.utils import timezone

    from tasks_app.services import task_status_move

    task = Task.objects.create(
        team=portal.team, creator=portal.member, family="multi_shot", status=Status.PROCESSING
    )
    client.force_login(portal.member)
    page, errors = routed_page(chromium, client)
    url = ORIGIN + reverse("tasks-list", kwargs={"team": portal.team.code})
    page.goto(url)
    kind_column = (
        "document.querySelector('table.tasks th:nth-child(2)').getBoundingClientRect().left"
    )
    before = page.evaluate(kind_column)
    task_status_move(
        task=task,
        to=Status.SUCCEED,
        source="poll",
        finished_at=timezone.now(),
        result={"images": [{"index": 0, "url_1": "https://cdn.invalid/1.png"}]},
    )
    page.goto(url)
    thumb = page.locator(f"#task-{task.code} img.thumb")
    assert thumb.get_attribute("width") == "64" and thumb.get_attribute("height") == "40"
    assert page.evaluate(kind_column) == before
    box = thumb.bounding_box()
    assert (box["width"], box["height"]) == (64, 40)  # even before (or without) the image
