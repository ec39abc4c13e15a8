"""Every list page runs the same number of queries whatever the number of rows it shows
(issue 9, "Load"): no query per row. Each page is rendered with 5, 24 and 50 rows of varied
kinds (statuses, creators, families, kept media, element tasks, members…) — 24 fills a page,
50 spills onto a second — and, where the page has one, its HTMX partial too.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from elements_app.models import Element, ElementStatus, PresetElement
from klingweb.accounts.models import Invitation, Membership, Role
from tasks_app.models import (
    Budget,
    Deduction,
    IssueKind,
    MediaKind,
    ReconciliationIssue,
    Status,
    Task,
    TaskEvent,
    TaskMedia,
)
from tasks_app.rollups import rollup_add, tasks_touch
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

SIZES = (5, 24, 50)
_counter = itertools.count(1)


def _task(portal, index: int, **extra) -> Task:
    """A task of ``portal.team`` whose status, creator and family depend on ``index``."""
    statuses = [Status.SUCCEED, Status.FAILED, Status.QUEUED, Status.PROCESSING, Status.ERROR]
    families = ["text2video", "image2video", "avatar", "multi_shot", "video_extend"]
    creators = [portal.member, portal.admin, portal.owner, None]
    status = statuses[index % len(statuses)]
    now = timezone.now()
    task = Task.objects.create(
        team=portal.team,
        creator=extra.pop("creator", creators[index % len(creators)]),
        family=families[index % len(families)],
        model_name="kling-v1-6",
        mode="std",
        prompt=f"row {index}",
        status=status,
        task_id=f"vendor-{next(_counter)}",
        created_at=now - timedelta(minutes=index),
        finished_at=now if status in (Status.SUCCEED, Status.FAILED, Status.ERROR) else None,
        final_unit_deduction=Decimal("2.5") if status == Status.SUCCEED else None,
        error_message="Server internal error" if status == Status.QUEUED else "",
        error_code=5000 if status == Status.QUEUED else None,
        result=(
            {"videos": [{"id": f"v{index}", "url": f"https://cdn.example.com/{index}.mp4"}]}
            if status == Status.SUCCEED
            else {}
        ),
        **extra,
    )
    TaskEvent.objects.create(task=task, status=status, source="poll")
    if status == Status.SUCCEED:
        TaskMedia.objects.create(
            task=task,
            kind=MediaKind.VIDEO,
            index=0,
            variant="url",
            source_url=f"https://cdn.example.com/{index}.mp4",
            file=f"results/{index}.mp4" if index % 2 else "",
            kept_at=timezone.now() if index % 2 else None,
        )
        row = Deduction.objects.create(
            team=portal.team,
            task=task,
            member=task.creator,
            family=task.family,
            model_name=task.model_name,
            mode=task.mode,
            task_status=status,
            units=Decimal("2.5"),
        )
        rollup_add(row)  # as the ledger writer does: rollups and the team's ledger version
    tasks_touch(portal.team.pk)  # as task_create / task_status_move do (cached usage pages)
    return task


def _element(portal, index: int) -> None:
    statuses = [ElementStatus.SUCCEED, ElementStatus.FAILED, ElementStatus.CREATING]
    status = statuses[index % len(statuses)]
    task = _task(portal, index) if index % 2 else None
    Element.objects.create(
        team=portal.team,
        creator=[portal.member, portal.admin][index % 2],
        task=task,
        name=f"Element {index}",
        description="an element",
        reference_type="image_refer",
        status=status,
        element_id=str(9_000_000 + next(_counter)),
        tag_ids=",o_102,o_104," if index % 3 else "",
        element_image_list={"frontal_image": f"https://cdn.example.com/e{index}.png"},
    )


def _preset(portal, index: int) -> None:
    PresetElement.objects.create(
        element_id=str(8_000_000 + next(_counter)),
        name=f"Preset {index}",
        description="a preset",
        reference_type="image_refer",
        tag_ids=",o_103," if index % 2 else ",o_106,",
        owned_by="kling",
        status="succeed",
        element_image_list={"frontal_image": f"https://cdn.example.com/p{index}.png"},
    )


def _member(portal, index: int) -> None:
    user = make_user(f"person-{next(_counter)}")
    Membership.objects.create(
        user=user, team=portal.team, role=[Role.MEMBER, Role.VIEWER][index % 2]
    )
    Invitation.objects.create(
        team=portal.team,
        email=f"invitee-{next(_counter)}@example.com",
        invited_by=portal.owner,
        token_hash=uuid.uuid4().hex,
        expires_at=timezone.now() + timedelta(days=7),
    )


def _budget_member(portal, index: int) -> None:
    user = make_user(f"budgeted-{next(_counter)}")
    Membership.objects.create(user=user, team=portal.team, role=Role.MEMBER)
    Budget.objects.create(
        team=portal.team,
        member=user,
        period=["daily", "weekly", "monthly"][index % 3],
        units=Decimal("100"),
        created_by=portal.owner,
    )
    task = _task(portal, 0, creator=user)  # a charged task of that member
    assert task.status == Status.SUCCEED


def _issue(portal, index: int) -> None:
    task = _task(portal, 0)
    ReconciliationIssue.objects.create(
        task=task,
        team=portal.team,
        kind=[IssueKind.MISMATCH, IssueKind.NOT_FOUND, IssueKind.STATUS][index % 3],
        ledger_units=Decimal("2.5"),
        vendor_units=Decimal("3") if index % 3 == 0 else None,
        detail="differs",
    )


def _stale(portal, index: int) -> None:
    _task(portal, 3 + 5 * index, is_stale=True)  # processing, stale


def _counts(client, url: str, make: Callable[[int], None]) -> list[tuple[int, int, int]]:
    """(rows, queries of the page, queries of its HTMX request) for each size of ``SIZES``."""
    made = 0
    out = []
    for size in SIZES:
        while made < size:
            make(made)
            made += 1
        with CaptureQueriesContext(connection) as page:
            response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        with CaptureQueriesContext(connection) as partial:
            response = client.get(url, headers={"HX-Request": "true"})
        assert response.status_code == 200, (url, response.status_code)
        out.append((size, len(page.captured_queries), len(partial.captured_queries)))
    return out


def _assert_constant(counts: list[tuple[int, int, int]], url: str) -> None:
    pages = {c[1] for c in counts}
    partials = {c[2] for c in counts}
    assert len(pages) == 1 and len(partials) == 1, (
        f"{url}: queries grow with the rows (rows, page, HTMX): {counts}"
    )


@pytest.fixture
def staff_owner(portal):
    portal.owner.is_staff = True
    portal.owner.save(update_fields=["is_staff"])
    return portal.owner


CASES = {
    "task list": ("tasks-list", lambda portal, i: _task(portal, i), True),
    "my tasks": (
        "tasks-mine",
        lambda portal, i: _task(portal, i, creator=portal.owner),
        True,
    ),
    "elements list": ("elements-list", _element, True),
    "presets": ("elements-presets", _preset, True),
    "usage, team page": ("usage-team", lambda portal, i: _task(portal, 5 * i), True),
    "usage, my page": (
        "usage-mine",
        lambda portal, i: _task(portal, 5 * i, creator=portal.owner),
        False,
    ),
    "usage, company": ("usage-company", lambda portal, i: _task(portal, 5 * i), False),
    "budgets": ("tasks-budgets", _budget_member, True),
    "team settings (members, invitations)": ("accounts-settings", _member, True),
    "reconciliation (staff)": ("tasks-reconciliation", _issue, False),
    "stale tasks (staff)": ("tasks-stale", _stale, False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_list_page_queries_do_not_grow_with_rows(client, portal, staff_owner, name):
    url_name, make, team_scoped = CASES[name]
    url = reverse(url_name, kwargs={"team": portal.team.code} if team_scoped else {})
    client.force_login(staff_owner)
    counts = _counts(client, url, lambda i: make(portal, i))
    _assert_constant(counts, url)


def test_budget_statuses_in_bulk_equal_one_by_one(portal):
    """The budgets page's batched sums (``budget_statuses``) are ``budget_status``'s."""
    from tasks_app.budgets import budget_status, budget_statuses, team_budgets

    Budget.objects.create(team=portal.team, period="monthly", units=Decimal("500"))
    Budget.objects.create(team=portal.team, period="daily", units=Decimal("50"))
    for index in range(6):
        _budget_member(portal, index)
        _task(portal, 2 + 5 * index, creator=portal.member)  # queued: pending estimates
    Task.objects.filter(status=Status.QUEUED).update(estimated_units=Decimal("4"))
    budgets = team_budgets(team=portal.team)
    assert budget_statuses(budgets=budgets) == [budget_status(budget=b) for b in budgets]


# -- what a signed-in member pays per page (issue 15, "Load": 200 users) -------------------

#: Queries of one GET by a signed-in member, by page: session, user, the access check (which
#: also gives the team switcher its memberships), the two banners' reads (the operator's
#: Kling account, the team's budgets), then the page's own reads. A change here is a change
#: in what every person waits for on every page.
PAGE_QUERIES = {
    # + capped count, one page of tasks, their media, the "Created by" members.
    "tasks-list": 9,
    # + the task, its media, its status history, its ledger rows.
    "tasks-detail": 9,
}


@pytest.mark.parametrize("url_name", list(PAGE_QUERIES))
def test_member_page_queries(client, portal, url_name):
    tasks = [_task(portal, index) for index in range(5)]
    kwargs = {"team": portal.team.code}
    if url_name == "tasks-detail":
        kwargs["code"] = tasks[0].code  # succeeded: media, events and a ledger row
    url = reverse(url_name, kwargs=kwargs)
    client.force_login(portal.member)
    client.get(url)  # first request of the session: nothing extra is counted below
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    body = response.content.decode()
    assert portal.team.name in body and portal.other_team.name not in body  # the switcher
    assert len(queries) == PAGE_QUERIES[url_name], [q["sql"][:120] for q in queries]


def test_switcher_lists_every_team_of_the_caller_without_a_query(client, portal):
    """The access check reads all the caller's memberships; the switcher shows them all,
    by team name, with the role in each."""
    Membership.objects.create(user=portal.member, team=portal.other_team, role=Role.VIEWER)
    client.force_login(portal.member)
    body = client.get(reverse("tasks-list", kwargs={"team": portal.team.code})).content.decode()
    switcher = body[body.index('<details class="switcher">') :]
    switcher = switcher[: switcher.index("</details>")]
    assert switcher.index("Blue team") < switcher.index("Red team")
    assert "Member" in switcher and "Viewer" in switcher
    assert 'aria-current="true">Blue team' in switcher
