"""The ledger against the vendor: nightly reconciliation (report, never rewrite), the staff
correction path, and ``kling_sync`` imports that never double-count."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone
from django_q.models import Schedule

from klingweb.accounts.services import kling_client_for
from tasks_app.models import Deduction, ReconciliationIssue, Status, Task
from tasks_app.polling import tasks_poll
from tasks_app.reconcile import ledger_reconcile
from tests.cluster_support import (  # noqa: F401 - fast_passwords is an autouse fixture
    T2V,
    fast_passwords,
    in_flight_tasks,
    sandbox_account,
    vendor_units,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ops", "ops@example.com", "pw", is_staff=True)


def _finished_tasks(portal, sandbox, n=3):
    account = sandbox_account(sandbox, portal.team)
    tasks = in_flight_tasks(portal.team, portal.member, account, n)
    sandbox.advance(2)
    assert tasks_poll().applied == n
    return account, tasks


def test_reconciliation_in_step_opens_nothing(portal, fresh_sandbox):
    _finished_tasks(portal, fresh_sandbox)
    report = ledger_reconcile()
    assert (report.checked, report.ok, report.opened, report.errors) == (3, 3, 0, 0)
    assert report.requests == 1, "one list page for three tasks"


def test_difference_is_reported_then_corrected_by_staff_with_a_new_row(
    client, portal, fresh_sandbox, staff
):
    _, tasks = _finished_tasks(portal, fresh_sandbox)
    wrong = Deduction.objects.get(task=tasks[0])
    Deduction.objects.filter(pk=wrong.pk).update(units=Decimal("0.25"))  # a ledger gone wrong
    vendor = vendor_units(fresh_sandbox)[tasks[0].task_id]

    first = ledger_reconcile()
    again = ledger_reconcile()

    assert (first.opened, again.opened, again.updated) == (1, 0, 1)
    issue = ReconciliationIssue.objects.get()
    assert issue.kind == "mismatch" and issue.difference == vendor - Decimal("0.25")
    assert Deduction.objects.get(pk=wrong.pk).units == Decimal("0.25"), "never rewritten"

    # The staff page lists it; the team's own owner (not staff) does not even see the page.
    client.force_login(portal.owner)
    assert client.get("/ops/reconciliation/").status_code == 404
    assert (
        client.post(f"/ops/reconciliation/{issue.code}/", {"action": "correct"}).status_code == 404
    )
    client.logout()
    assert client.get("/ops/reconciliation/").status_code == 302
    client.force_login(staff)
    page = client.get("/ops/reconciliation/")
    assert page.status_code == 200 and tasks[0].task_id in page.content.decode()
    assert client.get(f"/ops/reconciliation/{issue.code}/").status_code == 405
    partial = client.get("/ops/reconciliation/", headers={"HX-Request": "true"})
    assert "<html" not in partial.content.decode()

    answer = client.post(f"/ops/reconciliation/{issue.code}/", {"action": "correct"})

    assert answer.status_code == 302
    correction = Deduction.objects.get(corrects=wrong)
    assert correction.units == vendor - Decimal("0.25") and correction.task_id == tasks[0].pk
    total = Deduction.objects.filter(task=tasks[0]).aggregate(s=Sum("units"))["s"]
    assert total == vendor
    issue.refresh_from_db()
    assert issue.resolution == "corrected" and issue.resolved_by == staff
    assert ledger_reconcile().opened == 0, "in step after the correction"
    # Correcting twice appends nothing more.
    client.post(f"/ops/reconciliation/{issue.code}/", {"action": "correct"})
    assert Deduction.objects.filter(task=tasks[0]).count() == 2


def test_dismissing_leaves_the_ledger_alone(client, portal, fresh_sandbox, staff):
    _, tasks = _finished_tasks(portal, fresh_sandbox, n=1)
    Deduction.objects.filter(task=tasks[0]).update(units=Decimal("9"))
    ledger_reconcile()
    issue = ReconciliationIssue.objects.get()
    client.force_login(staff)
    answer = client.post(
        f"/ops/reconciliation/{issue.code}/", {"action": "dismiss"}, headers={"HX-Request": "true"}
    )
    text = answer.content.decode()
    assert "<html" not in text and "Issue dismissed; the ledger is unchanged." in text
    issue.refresh_from_db()
    assert issue.resolution == "dismissed" and Deduction.objects.count() == 1


def test_task_unknown_at_the_vendor_is_reported(portal, fresh_sandbox):
    account, _ = _finished_tasks(portal, fresh_sandbox, n=1)
    ghost = Task.objects.create(
        team=portal.team,
        family="text2video",
        kling_account=account,
        task_id="999999999999999999",
        status=Status.SUCCEED,
        finished_at=timezone.now(),
    )
    report = ledger_reconcile()
    assert report.opened == 1 and report.ok == 1
    assert ReconciliationIssue.objects.get().task == ghost
    assert ReconciliationIssue.objects.get().kind == "not_found"


# --- kling_sync --------------------------------------------------------------------------


def test_kling_sync_imports_other_tools_tasks_once(portal, fresh_sandbox):
    account, known = _finished_tasks(portal, fresh_sandbox, n=2)
    client = kling_client_for(account)
    # Made by another tool on the same account: two finished, one charged failure, one running.
    for prompt in ("elsewhere 1", "elsewhere 2", "sandbox:fail-charged"):
        client.create_task("text2video", {**T2V, "prompt": prompt})
    client.create_task("avatar", {"image": "https://example.invalid/a.png", "audio_id": "au-1"})
    fresh_sandbox.advance(2)
    fresh_sandbox.config.task_seconds = 3600.0
    try:
        running = client.create_task("text2video", {**T2V, "external_task_id": "made-by-cli-7"})
    finally:
        fresh_sandbox.config.task_seconds = 1.0

    out = StringIO()
    call_command("kling_sync", "--team", str(portal.team.code), stdout=out)

    assert "5 imported, 2 already known" in out.getvalue()
    imported = Task.objects.filter(imported=True)
    assert imported.count() == 5
    assert imported.filter(family="avatar").count() == 1
    in_flight = imported.get(task_id=running.task_id)
    assert in_flight.status == Status.SUBMITTED and in_flight.next_poll_at is not None
    units = vendor_units(fresh_sandbox)
    for task in Task.objects.filter(status__in=[Status.SUCCEED, Status.FAILED]):
        rows = Deduction.objects.filter(task=task)
        assert rows.count() == (1 if units[task.task_id] > 0 else 0)
        if rows:
            assert rows.get().units == units[task.task_id]
    # Charged when Kling finished them, not when imported (usage days, budget periods).
    updated = {t["task_id"]: t["updated_at"] for t in fresh_sandbox.tasks_snapshot()}
    for row in Deduction.objects.filter(task__imported=True).select_related("task"):
        assert round(row.recorded_at.timestamp() * 1000) == updated[row.task.task_id]
    ledger = Deduction.objects.aggregate(s=Sum("units"))["s"]

    out = StringIO()
    call_command("kling_sync", "--team", portal.team.name, stdout=out)
    assert "0 imported, 7 already known" in out.getvalue()
    assert Deduction.objects.aggregate(s=Sum("units"))["s"] == ledger


def test_kling_sync_since_skips_older_tasks(portal, fresh_sandbox):
    account = sandbox_account(fresh_sandbox, portal.team)
    kling_client_for(account).create_task("text2video", dict(T2V))
    out = StringIO()
    call_command("kling_sync", "--team", str(portal.team.code), "--since", "2999-01-01", stdout=out)
    assert "0 imported" in out.getvalue() and "1 older" in out.getvalue()
    assert not Task.objects.exists()


# --- schedules ------------------------------------------------------------------------------


def test_setup_schedules_is_idempotent(settings):
    call_command("setup_schedules", stdout=StringIO())
    nightly = Schedule.objects.get(name="klingweb-reconcile").next_run
    call_command("setup_schedules", stdout=StringIO())
    names = sorted(Schedule.objects.values_list("name", flat=True))
    assert names == [
        "klingweb-budget-alerts",
        "klingweb-element-presets",
        "klingweb-media-sweep",
        "klingweb-reconcile",
        "klingweb-resource-packs",
        "klingweb-webhook-retries",
    ]
    assert Schedule.objects.count() == 6  # the second run created nothing new
    assert Schedule.objects.get(name="klingweb-reconcile").next_run == nightly
    assert settings.Q_CLUSTER["retry"] > settings.Q_CLUSTER["timeout"]
