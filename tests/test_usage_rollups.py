"""Usage rollups and cached reports (issue 15 item 3): the daily rollups are written with the
ledger rows (the real poll → apply path, against the sandbox), so the reports that read them
(long team ranges, the company page) show the ledger's figures; a duplicate apply does not
count twice; a cached report shows a new charge at once (ledger version); ``rollups_rebuild``
reproduces the rollups from the ledger; ``rollups_check`` reports a difference and leaves
it alone."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from klingweb.reporting.figures import Scope, usage_figures
from klingweb.reporting.periods import period_resolve
from tasks_app import polling
from tasks_app.ledger import deduction_append
from tasks_app.models import Deduction, Status, Task, UsageDay, UsageRollup
from tasks_app.polling import tasks_poll
from tasks_app.reconcile import rollups_reconcile
from tasks_app.rollups import rollups_check
from tests.cluster_support import (  # noqa: F401 - fast_passwords is an autouse fixture
    fast_passwords,
    in_flight_tasks,
    make_due,
    sandbox_account,
    vendor_units,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 7 answers: a burst spans several transactions, each charging both teams."""
    monkeypatch.setattr(polling, "APPLY_BATCH", 7)


def ledger_units(team) -> Decimal:
    """Every unit the ledger holds for ``team``."""
    return Deduction.objects.filter(team=team).aggregate(s=Sum("units"))["s"] or Decimal("0")


def rollup_snapshot() -> list[tuple]:
    """Every rollup row's key and sums (both tables), sorted."""
    fields = ("team_id", "day", "member_id", "family", "model_name", "mode", "task_status")
    rows = UsageRollup.objects.values_list(
        *fields, "currency", "units", "amount", "priced_units", "charged", "rows"
    )
    days = UsageDay.objects.values_list(
        "team_id", "day", "family", "units", "failed_units", "amount", "priced_units", "charged"
    )
    return sorted(tuple(map(str, r)) for r in [*rows, *days])


@pytest.fixture
def charged(portal, fresh_sandbox, small_chunks):
    """Two teams' tasks finished at the vendor and charged by one poll cycle (chunks mixing
    both teams); returns the tasks."""
    tasks = []
    for team, creator in ((portal.team, portal.member), (portal.other_team, portal.outsider)):
        account = sandbox_account(fresh_sandbox, team)
        tasks += in_flight_tasks(team, creator, account, 10)
    fresh_sandbox.advance(2)
    report = tasks_poll()
    assert report.applied == 20 and report.errors == 0
    return tasks


def test_reports_from_rollups_show_the_ledger_figures_and_a_duplicate_apply_counts_once(
    client, portal, fresh_sandbox, charged
):
    vendor = vendor_units(fresh_sandbox)
    mine = [t for t in charged if t.team_id == portal.team.pk]
    assert ledger_units(portal.team) == sum(vendor[t.task_id] for t in mine)
    assert rollups_check() == []

    # The same answers again (a lost lease, a second poller): nothing charged, nothing added.
    before = rollup_snapshot()
    Task.objects.filter(pk__in=[t.pk for t in charged]).update(needs_confirmation=True)
    make_due(charged)
    again = tasks_poll()
    assert again.applied == 0
    assert rollup_snapshot() == before
    assert rollups_check() == []

    # The 90-day team page reads the rollups; every figure equals the ledger's.
    client.force_login(portal.member)
    url = reverse("usage-team", kwargs={"team": portal.team.code})
    report = client.get(url, {"period": "90d"}).context["report"]
    assert report.totals.units == ledger_units(portal.team)
    assert report.totals.charged_tasks == 10 and report.totals.succeeded == 10
    period = report.period
    scope = Scope(team_id=portal.team.pk)
    ledger = usage_figures(scope=scope, period=period, source="ledger")
    rollups = usage_figures(scope=scope, period=period, source="rollups")
    for name in ("totals", "families", "per_day", "per_day_money", "models", "top", "top_money"):
        assert getattr(rollups, name) == getattr(ledger, name), name
    assert [(g.key, g.units, g.money, g.charged_tasks) for g in rollups.groups] == [
        (g.key, g.units, g.money, g.charged_tasks) for g in ledger.groups
    ]
    member = usage_figures(
        scope=Scope(team_id=portal.team.pk, member_username=portal.member.username, family=""),
        period=period,
        source="rollups",
    )
    assert member.totals.units == ledger_units(portal.team)


def test_a_cached_report_shows_a_new_charge_at_once(client, portal, fresh_sandbox, charged):
    client.force_login(portal.member)
    url = reverse("usage-team", kwargs={"team": portal.team.code})
    pages = {key: client.get(url, {"period": key}).context["report"] for key in ("7d", "90d")}
    # Served again from the cache: the same figures.
    for key, report in pages.items():
        assert client.get(url, {"period": key}).context["report"].totals == report.totals
    account = sandbox_account(fresh_sandbox, portal.team)
    [task] = in_flight_tasks(portal.team, portal.member, account, 1)
    fresh_sandbox.advance(2)
    assert tasks_poll().applied == 1
    added = vendor_units(fresh_sandbox)[task.task_id]
    assert added > 0
    for key, report in pages.items():
        fresh = client.get(url, {"period": key}).context["report"]
        assert fresh.totals.units == report.totals.units + added, key
        assert fresh.totals.charged_tasks == report.totals.charged_tasks + 1, key
    # A correction (the reconciliation's path) shows at once too.
    primary = Deduction.objects.get(task=task)
    deduction_append(
        task=task, units=Decimal("-0.5"), recorded_at=timezone.now(), corrects=primary, note="t"
    )
    fresh = client.get(url, {"period": "7d"}).context["report"]
    assert fresh.totals.units == ledger_units(portal.team)
    assert rollups_check() == []


def test_rebuild_reproduces_the_rollups_and_is_idempotent(portal, charged):
    task = charged[0]
    deduction_append(
        task=task,
        units=Decimal("0.25"),
        recorded_at=timezone.now(),
        corrects=Deduction.objects.get(task=task),
        note="correction",
    )
    before = rollup_snapshot()
    assert before
    UsageRollup.objects.all().delete()
    UsageDay.objects.all().delete()
    assert len(rollups_check()) == len(before)
    call_command("rollups_rebuild")
    assert rollup_snapshot() == before
    call_command("rollups_rebuild", team=[str(portal.team.code)])
    assert rollup_snapshot() == before
    assert rollups_check() == []


def test_check_reports_a_difference_and_does_not_fix_it(portal, charged, capsys):
    row = UsageRollup.objects.filter(team=portal.team).first()
    UsageRollup.objects.filter(pk=row.pk).update(units=row.units + 1)
    differences = rollups_check()
    assert [d.key[0] for d in differences] == [portal.team.pk]
    with pytest.raises(SystemExit) as exited:
        call_command("rollups_check")
    assert exited.value.code == 1
    out = capsys.readouterr().out
    assert "1 difference(s)" in out and f"team {portal.team.pk}" in out
    assert rollups_reconcile() == differences  # the nightly job reports the same
    assert UsageRollup.objects.get(pk=row.pk).units == row.units + 1, "left alone"
    day = UsageDay.objects.filter(team=portal.team).first()
    UsageDay.objects.filter(pk=day.pk).update(charged=day.charged + 1)
    assert [d.grain for d in rollups_check()] == ["rollup", "day"]
    call_command("rollups_check", team=[str(portal.other_team.code)])  # exit 0: in step


def test_company_page_equals_the_ledger_for_teams_in_any_zone(client, portal, charged):
    # One team keeps the portal's zone (read from the rollups), one has another zone (read
    # from the ledger): both show the ledger's figures.
    portal.other_team.time_zone = "Asia/Tokyo"
    portal.other_team.save(update_fields=["time_zone"])
    call_command("rollups_rebuild", team=[str(portal.other_team.code)])
    portal.owner.is_staff = True
    portal.owner.save(update_fields=["is_staff"])
    client.force_login(portal.owner)
    report = client.get(reverse("usage-company"), {"period": "12m"}).context["report"]
    totals = {r.team["pk"]: r.total for r in report.teams}
    assert totals[portal.team.pk] == ledger_units(portal.team)
    assert totals[portal.other_team.pk] == ledger_units(portal.other_team)
    assert report.total == ledger_units(portal.team) + ledger_units(portal.other_team)
    money = {r.team["pk"]: r.money for r in report.teams}
    period = period_resolve(key="12m", tz=report.period.tz)
    for team in (portal.team, portal.other_team):
        figures = usage_figures(scope=Scope(team_id=team.pk), period=period, source="ledger")
        assert money[team.pk] == figures.totals.money
    assert Deduction.objects.filter(task_status=Status.SUCCEED).count() == 20


def test_the_migration_fills_the_rollups_of_an_existing_ledger(portal, charged):
    from importlib import import_module

    from django.apps import apps

    migration = import_module("tasks_app.migrations.0010_usage_rollups")
    before = rollup_snapshot()
    UsageRollup.objects.all().delete()
    UsageDay.objects.all().delete()
    migration.rollups_fill(apps, None)
    assert rollup_snapshot() == before
    assert rollups_check() == []
