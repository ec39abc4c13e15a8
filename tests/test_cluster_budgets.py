"""Budgets: estimates, refusals naming the budget and its reset, alerts once per threshold,
the banner, and the budgets page (access rules and HTMX)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core import mail
from django.db import connections, transaction
from django.utils import timezone

from tasks_app.budgets import (
    BudgetExceeded,
    budget_alerts_check,
    budget_banners,
    budget_check,
    estimate_units,
    period_bounds,
    team_zone,
)
from tasks_app.models import Budget, BudgetAlert, Deduction, Status, Task
from tests.cluster_support import fast_passwords  # noqa: F401 - autouse fixture

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)  # a Sunday


def _spend(team, units, *, member=None, at=NOW):
    task = Task.objects.create(
        team=team, creator=member, family="text2video", status=Status.SUCCEED
    )
    return Deduction.objects.create(
        team=team,
        task=task,
        member=member,
        family="text2video",
        units=Decimal(units),
        recorded_at=at,
    )


@pytest.fixture
def paris(portal):
    portal.team.time_zone = "Europe/Paris"
    portal.team.save()
    return portal


def test_estimates_follow_the_vendor_price_table(settings):
    # KLING_API_2026.md §8: old models at the 2.5 Turbo / 2.6-no-audio row (0.3 / 0.5 per s).
    assert estimate_units(family="text2video", params={"mode": "std", "duration": "5"}) == Decimal(
        "1.5"
    )
    assert estimate_units(
        family="text2video", params={"model_name": "kling-v1-6", "mode": "pro", "duration": "10"}
    ) == Decimal("5")
    # 2.6 with native audio exists only at 1080p (pro): 1.0 per s.
    assert estimate_units(
        family="text2video",
        params={"model_name": "kling-v2-6", "mode": "pro", "duration": "10", "sound": "on"},
    ) == Decimal("10")
    assert estimate_units(family="avatar", params={"mode": "std"}) == Decimal("2")  # 0.4 × 5 s
    assert estimate_units(family="multi_shot", params={}) == Decimal("0.5")
    assert estimate_units(family="video_extend", params={}) == Decimal("1.5")
    settings.TASK_COST_MULTIPLIER = Decimal("2")
    assert estimate_units(family="element", params={}) == Decimal("0.1")


def test_periods_use_the_team_time_zone_and_weeks_start_monday(paris):
    zone = team_zone(paris.team)
    start, end = period_bounds(period="weekly", zone=zone, now=NOW)
    assert (start.isoformat(), end.isoformat()) == (
        "2026-11-09T00:00:00+01:00",
        "2026-11-16T00:00:00+01:00",
    )
    start, end = period_bounds(
        period="monthly", zone=zone, now=datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    )
    assert start.isoformat() == "2027-01-01T00:00:00+01:00", "already January in Paris"
    start, end = period_bounds(period="daily", zone=zone, now=NOW)
    assert end.isoformat() == "2026-11-16T00:00:00+01:00"


def test_team_budget_refusal_names_the_budget_and_its_reset(paris):
    Budget.objects.create(team=paris.team, period="monthly", units=Decimal("1000"))
    _spend(paris.team, "900", member=paris.owner)
    _spend(paris.team, "30", at=datetime(2026, 10, 31, 22, 59, tzinfo=UTC))  # Oct 31 in Paris
    Task.objects.create(
        team=paris.team, family="avatar", status=Status.PROCESSING, estimated_units=Decimal("50")
    )

    with pytest.raises(BudgetExceeded) as refused:
        budget_check(team=paris.team, user=paris.member, units=Decimal("80"), now=NOW)

    assert str(refused.value) == (
        "Team monthly budget: 950 of 1,000 units spent; this task needs about 80. "
        "Resets 2026-12-01 00:00 Europe/Paris."
    )
    budget_check(team=paris.team, user=paris.member, units=Decimal("50"), now=NOW)  # fits exactly


def test_member_cap_refusal_names_the_member(paris):
    Budget.objects.create(team=paris.team, period="monthly", units=Decimal("1000"))
    Budget.objects.create(team=paris.team, member=paris.member, period="daily", units=Decimal("20"))
    _spend(paris.team, "15", member=paris.member)

    with pytest.raises(
        BudgetExceeded,
        match=r"^Daily cap for member: 15 of 20 units spent; this task needs about 10\. Resets 2026-11-16 00:00 Europe/Paris\.$",
    ):
        budget_check(team=paris.team, user=paris.member, units=Decimal("10"), now=NOW)
    # The cap is the member's own: somebody else may still spend.
    budget_check(team=paris.team, user=paris.admin, units=Decimal("10"), now=NOW)


@pytest.mark.django_db(transaction=True)
def test_parallel_submissions_cannot_overshoot(portal):
    Budget.objects.create(team=portal.team, period="daily", units=Decimal("30"))
    accepted, refused = [], []
    barrier = threading.Barrier(5)

    def submit():
        try:
            barrier.wait(timeout=10)
            with transaction.atomic():
                budget_check(team=portal.team, user=portal.member, units=Decimal("10"))
                Task.objects.create(
                    team=portal.team, family="text2video", estimated_units=Decimal("10")
                )
            accepted.append(1)
        except BudgetExceeded:
            refused.append(1)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert (len(accepted), len(refused)) == (3, 2)


def test_alerts_fire_once_per_threshold_and_mail_the_admins(portal):
    budget = Budget.objects.create(team=portal.team, period="monthly", units=Decimal("100"))
    now = timezone.now()
    _spend(portal.team, "79", at=now)
    assert budget_alerts_check(team_pk=portal.team.pk) == []
    _spend(portal.team, "2", at=now)  # 81 %

    assert [a.threshold for a in budget_alerts_check(team_pk=portal.team.pk)] == [80]
    assert budget_alerts_check(team_pk=portal.team.pk) == [], "once per period"
    assert len(mail.outbox) == 1
    assert sorted(mail.outbox[0].to) == ["admin@example.com", "owner@example.com"]
    assert "80 %" in mail.outbox[0].subject and "Team monthly budget" in mail.outbox[0].subject

    _spend(portal.team, "20", at=now)  # 101 %: 90 and 100 at once, one mail
    assert sorted(a.threshold for a in budget_alerts_check(team_pk=portal.team.pk)) == [90, 100]
    budget_alerts_check(team_pk=portal.team.pk)
    assert len(mail.outbox) == 2 and "100 %" in mail.outbox[1].subject
    assert BudgetAlert.objects.filter(budget=budget).count() == 3
    assert BudgetAlert.objects.filter(emailed_at__isnull=True).count() == 0

    banners = budget_banners(team=portal.team, user=portal.member)
    assert [(b.threshold, b.level) for b in banners] == [(100, "error")]
    assert "Team monthly budget: 100 % reached (101 of 100 units)" in banners[0].message


def test_finishing_tasks_raise_alerts_through_the_job(portal):
    from tasks_app.jobs import check_budget_alerts

    Budget.objects.create(team=portal.team, period="daily", units=Decimal("10"))
    _spend(portal.team, "9", at=timezone.now())
    check_budget_alerts(portal.team.pk)
    assert len(mail.outbox) == 1 and "90 %" in mail.outbox[0].subject


# --- the budgets page -------------------------------------------------------------------


def _url(team):
    return f"/t/{team.code}/budgets/"


def test_budgets_page_shows_spending_and_reset_to_every_member(client, paris):
    Budget.objects.create(team=paris.team, period="monthly", units=Decimal("1000"))
    _spend(paris.team, "250", at=timezone.now())
    client.force_login(paris.viewer)
    page = client.get(_url(paris.team))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Team monthly budget" in text and "250" in text and "Europe/Paris" in text
    assert "Save budget" not in text, "viewers only read"


def test_admin_sets_and_removes_budgets(client, portal):
    client.force_login(portal.admin)
    answer = client.post(_url(portal.team), {"period": "weekly", "units": "500", "member": ""})
    assert answer.status_code == 302
    budget = Budget.objects.get(team=portal.team, period="weekly", member=None)
    assert budget.units == 500 and budget.created_by == portal.admin
    client.post(_url(portal.team), {"period": "weekly", "units": "600", "member": ""})
    assert Budget.objects.get(pk=budget.pk).units == 600, "same scope and period: replaced"
    client.post(
        _url(portal.team), {"period": "daily", "units": "5", "member": str(portal.member.pk)}
    )
    assert Budget.objects.filter(member=portal.member, period="daily").exists()

    answer = client.post(f"{_url(portal.team)}{budget.code}/delete/")
    assert answer.status_code == 302 and not Budget.objects.filter(pk=budget.pk).exists()


def test_budget_form_refuses_an_outsider_as_member(client, portal):
    client.force_login(portal.owner)
    answer = client.post(
        _url(portal.team), {"period": "daily", "units": "5", "member": str(portal.outsider.pk)}
    )
    assert answer.status_code == 422 and not Budget.objects.exists()


@pytest.mark.parametrize("who", ["member", "viewer"])
def test_non_admins_cannot_write_budgets(client, portal, who):
    budget = Budget.objects.create(team=portal.team, period="daily", units=Decimal("5"))
    client.force_login(getattr(portal, who))
    assert client.post(_url(portal.team), {"period": "daily", "units": "9"}).status_code == 403
    assert client.post(f"{_url(portal.team)}{budget.code}/delete/").status_code == 403
    assert Budget.objects.get(pk=budget.pk).units == 5


def test_outsider_gets_404_and_anonymous_goes_to_login(client, portal):
    budget = Budget.objects.create(team=portal.team, period="daily", units=Decimal("5"))
    assert client.get(_url(portal.team)).status_code == 302
    client.force_login(portal.outsider)
    assert client.get(_url(portal.team)).status_code == 404
    assert client.post(f"{_url(portal.team)}{budget.code}/delete/").status_code == 404
    # Another team's budget through one's own team URL: 404 too.
    assert client.post(f"{_url(portal.other_team)}{budget.code}/delete/").status_code == 404


def test_wrong_methods_get_405(client, portal):
    budget = Budget.objects.create(team=portal.team, period="daily", units=Decimal("5"))
    client.force_login(portal.owner)
    assert client.put(_url(portal.team)).status_code == 405
    assert client.get(f"{_url(portal.team)}{budget.code}/delete/").status_code == 405


def test_htmx_requests_get_the_partial_with_a_notice(client, portal):
    client.force_login(portal.owner)
    partial = client.get(_url(portal.team), headers={"HX-Request": "true"})
    assert partial.status_code == 200
    assert "<html" not in partial.content.decode() and 'id="budgets"' in partial.content.decode()
    saved = client.post(
        _url(portal.team), {"period": "monthly", "units": "100"}, headers={"HX-Request": "true"}
    )
    text = saved.content.decode()
    assert saved.status_code == 200 and "<html" not in text
    assert "Team monthly budget set to 100 units." in text


def test_banner_include_shows_reached_thresholds(client, portal):
    Budget.objects.create(team=portal.team, period="monthly", units=Decimal("100"))
    _spend(portal.team, "95", at=timezone.now())
    budget_alerts_check(team_pk=portal.team.pk)
    client.force_login(portal.member)
    text = client.get(_url(portal.team)).content.decode()
    assert "Team monthly budget: 90 % reached (95 of 100 units)" in text
