"""Cached usage pages (issue 15 item 3): the team page's rendered report region, its budget
sums and the company report are kept in the report cache, keyed by the teams' ledger and
tasks versions and the team's settings version. What a user sees on the next page load after
a charge, a new task, a status move, a budget window's change, or a change of the team's
members, budgets or names (through the portal's pages or the Django admin) is the current
figure, never the cached one."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from klingweb.accounts.models import Membership, Role
from klingweb.accounts.services import invitation_accept, invitation_create, team_settings_touch
from klingweb.kling import parse_task
from tasks_app.models import Budget, LedgerState, Status
from tasks_app.rollups import rollups_deferred
from tasks_app.services import (
    apply_batch,
    task_apply_remote,
    task_create,
    task_status_move,
    tasks_apply_remote,
)
from tests.conftest import make_user
from tests.test_usage import charge, fast_passwords, make_task  # noqa: F401 - autouse fixture

pytestmark = pytest.mark.django_db


def figure(html: str, label: str) -> str:
    """The text of the totals' ``<dd>`` under the ``<dt>`` ``label``."""
    match = re.search(rf"<dt>{re.escape(label)}</dt><dd[^>]*>(.*?)</dd>", html, re.S)
    assert match, label
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def page(client, url: str, **headers: str) -> tuple[str, int]:
    """The page's HTML and the number of queries it ran."""
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, {"period": "this_month"}, headers=headers)
    assert response.status_code == 200
    return response.content.decode(), len(ctx.captured_queries)


def failed_at_vendor(portal, task_id: str, units: str):
    """A task of ``portal.team`` at Kling (submitted, ``task_id``) and the vendor's full
    answer that it failed, charging ``units``: ``(task, remote)``."""
    task = make_task(portal.team, portal.member, at=timezone.now(), status=Status.SUBMITTED)
    task.task_id = task_id
    task.save(update_fields=["task_id"])
    body = {
        "task_id": task_id,
        "task_status": "failed",
        "task_status_msg": "refused",
        "created_at": 1_700_000_000_000,
        "updated_at": 1_700_000_100_000,
        "final_unit_deduction": units,
        "task_info": {"external_task_id": str(task.code)},
    }
    return task, parse_task(body)


def test_team_page_shows_a_charge_a_new_task_and_a_status_move_on_the_next_load(client, portal):
    team, member = portal.team, portal.member
    now = timezone.now()
    charge(make_task(team, member, at=now), "7")
    Budget.objects.create(team=team, period="monthly", units=Decimal("100"))
    client.force_login(portal.viewer)
    url = reverse("usage-team", kwargs={"team": team.code})
    html, first = page(client, url)
    assert figure(html, "Units spent") == "7" and figure(html, "Succeeded") == "1"
    assert "7 units / 100 units" in html  # the budget bar
    again, cached = page(client, url)
    assert figure(again, "Units spent") == "7" and cached < first  # served from the cache

    charge(make_task(team, member, at=now), "5.5")  # the ledger writer's path (rollup_add)
    html, _ = page(client, url)
    assert figure(html, "Units spent") == "12.5"
    assert "12.5 units / 100 units" in html
    region, _ = page(client, url, HX_Request="true")  # the picker's HTMX request
    assert figure(region, "Units spent") == "12.5"

    task = task_create(source="form", team=team, creator=member, family="text2video")
    assert figure(page(client, url)[0], "Tasks run") == "2"  # queued: not run yet
    task_status_move(task=task, to=Status.SUBMITTED, source="test")
    assert figure(page(client, url)[0], "Tasks run") == "3 (1 running)"
    task_status_move(task_pk=task.pk, to=Status.FAILED, source="test")
    html, _ = page(client, url)
    assert figure(html, "Failed") == "1" and figure(html, "Tasks run") == "3"


def test_budget_sums_follow_the_window_not_the_cache(client, portal):
    team = portal.team
    now = timezone.now()
    yesterday = now - dt.timedelta(days=1)
    charge(make_task(team, portal.member, at=yesterday), "4")
    charge(make_task(team, portal.member, at=now), "1")
    budget = Budget.objects.create(team=team, period="monthly", units=Decimal("50"))
    client.force_login(portal.member)
    url = reverse("usage-team", kwargs={"team": team.code})
    month = "5 units / 50 units" if yesterday.month == now.month else "1 unit / 50 units"
    assert month in page(client, url)[0]
    # Same ledger version, another window (the budget now resets daily): summed afresh.
    # (No page changes a budget's period; the settings version is bumped as writers do.)
    budget.period = "daily"
    budget.save()
    team_settings_touch(team_ids=[team.pk])
    assert "1 unit / 50 units" in page(client, url)[0]


def test_company_page_shows_a_charge_on_the_next_load(client, portal):
    portal.owner.is_staff = True
    portal.owner.save()
    now = timezone.now()
    charge(make_task(portal.team, portal.member, at=now), "3")
    client.force_login(portal.owner)
    url = reverse("usage-company")
    before = client.get(url).context["report"]
    assert before.total == Decimal("3")
    charge(make_task(portal.other_team, portal.outsider, at=now), "2.25")
    after = client.get(url)
    assert after.context["report"].total == Decimal("5.25")
    assert figure(after.content.decode(), "Units spent") == "5.25"


def test_task_moves_in_a_batch_bump_each_team_once_when_it_ends(portal):
    now = timezone.now()
    tasks = [
        make_task(team, user, at=now, status=Status.SUBMITTED)
        for team, user in ((portal.other_team, portal.outsider), (portal.team, portal.member))
        for _ in range(2)
    ]
    for t in tasks:  # both teams have a version row
        charge(t, "1")

    def versions() -> dict[int, int]:
        return dict(LedgerState.objects.values_list("team_id", "tasks_version"))

    before = versions()
    with transaction.atomic(), rollups_deferred():
        for t in tasks:
            assert task_status_move(task=t, to=Status.SUCCEED, source="test")
        assert versions() == before  # noted, not yet bumped
    after = versions()
    assert {k: after[k] - before[k] for k in before} == {
        portal.team.pk: 1,
        portal.other_team.pk: 1,
    }


def cached_page(client, team) -> tuple[str, str]:
    """The team's usage page loaded twice: (HTML, URL); the second load came from the
    cache (fewer queries), so what a later load shows differently was drawn afresh."""
    url = reverse("usage-team", kwargs={"team": team.code})
    first, queries = page(client, url)
    again, cached = page(client, url)
    assert cached < queries
    return again, url


def member_options(html: str) -> list[str]:
    """The usernames offered by the page's Member picker."""
    select = re.search(r'<select name="member" id="id_member">(.*?)</select>', html, re.S)
    assert select
    return [v for v in re.findall(r'<option value="([^"]*)"', select.group(1)) if v]


def test_budgets_set_and_removed_on_the_budgets_page_show_on_the_next_usage_load(client, portal):
    team = portal.team
    charge(make_task(team, portal.member, at=timezone.now()), "2")
    client.force_login(portal.owner)
    html, url = cached_page(client, team)
    assert "budgets-heading" not in html
    budgets = reverse("tasks-budgets", kwargs={"team": team.code})
    form = {"period": "monthly", "measure": "units", "units": "10", "member": ""}
    assert client.post(budgets, form).status_code == 302
    assert "2 units / 10 units" in page(client, url)[0]
    assert client.post(budgets, {**form, "units": "40"}).status_code == 302  # replaced
    html = page(client, url)[0]
    assert "2 units / 40 units" in html and "2 units / 10 units" not in html
    budget = Budget.objects.get(team=team)
    delete = reverse("tasks-budget-delete", kwargs={"team": team.code, "code": budget.code})
    assert client.post(delete).status_code == 302
    assert "budgets-heading" not in page(client, url)[0]


def test_members_joining_and_removed_show_in_the_picker_on_the_next_load(client, portal):
    team = portal.team
    charge(make_task(team, portal.member, at=timezone.now()), "2")
    client.force_login(portal.owner)
    html, url = cached_page(client, team)
    assert "newcomer" not in member_options(html) and "viewer" in member_options(html)

    owner = Membership.objects.get(team=team, user=portal.owner)
    _, token = invitation_create(
        team=team, email="newcomer@example.com", role=Role.MEMBER, actor=owner
    )
    invitation_accept(token=token, user=make_user("newcomer"))
    assert "newcomer" in member_options(page(client, url)[0])

    viewer = Membership.objects.get(team=team, user=portal.viewer)
    remove = reverse("accounts-member-remove", kwargs={"team": team.code, "member": viewer.code})
    assert client.post(remove).status_code == 302
    assert "viewer" not in member_options(page(client, url)[0])


def test_team_renamed_on_its_settings_page_shows_on_the_next_load(client, portal):
    team = portal.team
    client.force_login(portal.owner)
    html, url = cached_page(client, team)
    assert "Usage · Blue team</h1>" in html
    rename = reverse("accounts-team-update", kwargs={"team": team.code})
    assert client.post(rename, {"name": "Green team", "time_zone": "UTC"}).status_code == 302
    assert "Usage · Green team</h1>" in page(client, url)[0]


def test_admin_edits_show_on_the_next_load(client, portal):
    """A username changed in the Django admin is shown by every page naming it, the member
    picker and the per-member table (the cached region) included; a membership the admin
    moves to another team leaves the picker."""
    team = portal.team
    charge(make_task(team, portal.member, at=timezone.now()), "2")
    client.force_login(portal.owner)
    html, url = cached_page(client, team)
    assert "member" in member_options(html)
    assert '<th scope="row">member</th>' in html  # By member

    staff = make_user("root", is_staff=True, is_superuser=True)
    admin = type(client)()
    admin.force_login(staff)
    user = portal.member
    change = reverse("admin:auth_user_change", args=[user.pk])
    joined = timezone.localtime(user.date_joined)
    response = admin.post(
        change,
        {
            "username": "member-renamed",
            "email": user.email,
            "is_active": "on",
            "date_joined_0": joined.strftime("%Y-%m-%d"),
            "date_joined_1": joined.strftime("%H:%M:%S"),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    html = page(client, url)[0]
    assert "member-renamed" in member_options(html) and "member" not in member_options(html)
    assert '<th scope="row">member-renamed</th>' in html

    viewer = Membership.objects.get(team=team, user=portal.viewer)
    change = reverse("admin:accounts_membership_change", args=[viewer.pk])
    moved = {
        "user": portal.viewer.pk,
        "team": portal.other_team.pk,
        "role": Role.VIEWER,
        "created_at_0": "2026-01-01",
        "created_at_1": "00:00:00",
    }
    response = admin.post(change, moved)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert "viewer" not in member_options(page(client, url)[0])


def test_a_task_charged_through_the_apply_path_shows_on_the_next_load(client, portal):
    team = portal.team
    client.force_login(portal.viewer)
    html, url = cached_page(client, team)
    assert "No units were recorded" in html

    def finished(task_id: str, units: str):
        return failed_at_vendor(portal, task_id, units)

    task, remote = finished("kt-one", "4")  # one answer, as a callback applies it
    assert task_apply_remote(task_pk=task.pk, remote=remote, source="poll")
    html = page(client, url)[0]
    assert figure(html, "Units spent") == "4" and figure(html, "Failed") == "1"

    task, remote = finished("kt-two", "1.5")  # a poll cycle's batch
    with apply_batch() as batch, batch.transaction():
        assert task_apply_remote(task_pk=task.pk, remote=remote, source="poll")
    html = page(client, url)[0]
    assert figure(html, "Units spent") == "5.5" and figure(html, "Failed") == "2"

    # Poll chunks applied together (tasks_apply_remote, the burst path): a task failed
    # without a charge (no ledger row: only the tasks version says so), then a charged one.
    for answer, units, failed in (("kt-three", "0", "3"), ("kt-four", "2", "4")):
        task, remote = finished(answer, units)
        with apply_batch() as batch, batch.transaction():
            applied = tasks_apply_remote(answers=[(task.pk, remote)], source="poll")
        assert applied.moved == [task.pk] and not applied.rest
        html = page(client, url)[0]
        assert figure(html, "Failed") == failed
    assert figure(html, "Units spent") == "7.5"


def test_cached_page_is_each_users_own_and_its_csrf_token_works(portal):
    from django.test import Client

    charge(make_task(portal.team, portal.member, at=timezone.now()), "2")
    url = reverse("usage-team", kwargs={"team": portal.team.code})
    pages = {}
    for user in (portal.viewer, portal.member):
        browser = Client(enforce_csrf_checks=True)
        browser.force_login(user)
        page(browser, url)
        html, queries = page(browser, url)  # the whole page from the cache
        assert queries == 3  # session, user, memberships with the team's versions
        assert f'title="Change password">{user.username}</a>' in html
        token = re.search(r'"X-CSRFToken": "([^"]+)"', html).group(1)
        assert "placeholder" not in token
        pages[user.username] = html
        # Signing out with the cached page's token works (a stale token would be a 403).
        response = browser.post(reverse("accounts-logout"), {"csrfmiddlewaretoken": token})
        assert response.status_code == 302
    assert 'Change password">viewer<' not in pages["member"]


def test_the_ledger_state_row_is_locked_after_the_ledger_insert_and_not_by_a_new_task(portal):
    """Lock order (tasks_app.rollups): the form's transaction holds the team's row while it
    creates a task, and a ledger INSERT key-share locks that row; a transaction that took
    ``LedgerState`` first and inserted a ledger row after deadlocked with it (the topology
    soak at 500 tasks: 3 forms answered 500). A charged answer writes ``LedgerState`` only
    after its ledger row; creating a task does not write it at all."""
    team = portal.team
    with CaptureQueriesContext(connection) as ctx:
        task_create(source="form", team=team, creator=portal.member, family="text2video")
    assert not [q for q in ctx.captured_queries if "tasks_app_ledgerstate" in q["sql"]]

    task, remote = failed_at_vendor(portal, "kt-order", "3")
    with CaptureQueriesContext(connection) as ctx:
        assert task_apply_remote(task_pk=task.pk, remote=remote, source="poll")
    sqls = [q["sql"] for q in ctx.captured_queries]
    ledger_insert = next(
        i for i, sql in enumerate(sqls) if sql.startswith('INSERT INTO "tasks_app_deduction"')
    )
    state_writes = [i for i, sql in enumerate(sqls) if "tasks_app_ledgerstate" in sql]
    assert state_writes and min(state_writes) > ledger_insert
    state = LedgerState.objects.get(team=team)
    assert state.version > 0 and state.tasks_version > 0
