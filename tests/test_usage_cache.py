"""Cached usage pages (issue 15 item 3): the team page's rendered report region, its budget
sums and the company report are kept in the report cache, keyed by the teams' ledger and
tasks versions. What a user sees on the next page load after a charge, a new task, a status
move or a budget window's change is the ledger's figure, never the cached one."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tasks_app.models import Budget, LedgerState, Status
from tasks_app.rollups import rollups_deferred
from tasks_app.services import task_create, task_status_move
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
    budget.period = "daily"
    budget.save()
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


def test_cached_page_body_follows_members_budgets_and_names(client, portal, django_user_model):
    from klingweb.accounts.models import Membership, Role

    team = portal.team
    charge(make_task(team, portal.member, at=timezone.now()), "2")  # the team's version row
    client.force_login(portal.owner)
    url = reverse("usage-team", kwargs={"team": team.code})
    html, first = page(client, url)
    assert "budgets-heading" not in html and '<option value="newcomer"' not in html
    again, cached = page(client, url)
    assert cached < first and "budgets-heading" not in again  # the body from the cache

    budget = Budget.objects.create(team=team, period="monthly", units=Decimal("10"))
    assert "2 units / 10 units" in page(client, url)[0]
    budget.units = Decimal("40")
    budget.save()
    assert "2 units / 40 units" in page(client, url)[0]
    budget.delete()
    assert "budgets-heading" not in page(client, url)[0]

    newcomer = django_user_model.objects.create_user("newcomer", password="x")
    Membership.objects.create(user=newcomer, team=team, role=Role.MEMBER)
    assert '<option value="newcomer"' in page(client, url)[0]
    newcomer.username = "renamed"
    newcomer.save()
    html = page(client, url)[0]
    assert '<option value="renamed"' in html and '<option value="newcomer"' not in html
    team.name = "Green team"
    team.save()
    assert "Usage · Green team</h1>" in page(client, url)[0]


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
