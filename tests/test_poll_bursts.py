"""Bursts in one cycle (issue 15 item 4): many tasks finishing together are applied by one
poll cycle in chunks of one transaction each (``tasks_app.services.apply_batch``), each
charged exactly once, with the team's budget check and alert job done once per team, not
once per task; a task that cannot be applied does not undo the rest of its chunk."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from tasks_app import polling
from tasks_app.models import Budget, BudgetAlert, Deduction, Status, Task
from tasks_app.polling import _Cycle, tasks_claim, tasks_poll
from tasks_app.services import apply_batch
from tests.cluster_support import (  # noqa: F401 - fast_passwords is an autouse fixture
    fast_passwords,
    in_flight_tasks,
    make_due,
    sandbox_account,
    vendor_units,
)
from tests.jobs_support import record_jobs

pytestmark = pytest.mark.django_db


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 40 answers, so a burst of 100 spans three transactions."""
    monkeypatch.setattr(polling, "APPLY_BATCH", 40)


def test_a_burst_is_applied_in_one_cycle_charged_once_with_one_budget_check_per_team(
    portal, fresh_sandbox, small_chunks, monkeypatch, django_capture_on_commit_callbacks
):
    account = sandbox_account(fresh_sandbox, portal.team)
    tasks = in_flight_tasks(portal.team, portal.member, account, 100)
    fresh_sandbox.advance(2)  # every task finishes at the vendor at once
    vendor = vendor_units(fresh_sandbox)
    # A budget the burst uses up exactly: 80, 90 and 100 % are crossed inside the cycle.
    # (The session's sandbox also holds earlier tests' tasks: only this burst's count.)
    burst = sum(vendor[t.task_id] for t in tasks)
    Budget.objects.create(team=portal.team, period="monthly", units=burst)
    jobs = record_jobs(monkeypatch, django_capture_on_commit_callbacks)

    with django_capture_on_commit_callbacks(execute=True):
        report = tasks_poll()

    assert report.applied == 100 and report.errors == 0
    assert Task.objects.filter(team=portal.team, status=Status.SUCCEED).count() == 100
    ledger = {d.task.task_id: d.units for d in Deduction.objects.select_related("task")}
    assert ledger == {t.task_id: vendor[t.task_id] for t in tasks}, "one row per task, as billed"
    alerts = sorted(BudgetAlert.objects.values_list("threshold", flat=True))
    assert alerts == [80, 90, 100], "each threshold recorded once, in the cycle that crossed it"
    names = jobs.names()
    assert names.count("tasks_app.jobs.check_budget_alerts") == 1, names
    assert names.count("tasks_app.jobs.keep_media_many") == 1, names
    keep = next(args for func, args in jobs.queued if func == "tasks_app.jobs.keep_media_many")
    assert sorted(keep[0]) == sorted(t.pk for t in tasks), "every result is kept"

    # The same answers again (a second cycle) change nothing and charge nothing.
    Task.objects.filter(team=portal.team).update(needs_confirmation=True)
    make_due(tasks)
    again = tasks_poll()
    assert Deduction.objects.count() == 100
    assert again.applied == 0


def test_a_task_that_cannot_be_applied_leaves_the_rest_of_its_chunk_applied(
    portal, fresh_sandbox, small_chunks
):
    account = sandbox_account(fresh_sandbox, portal.team)
    in_flight_tasks(portal.team, portal.member, account, 30)
    fresh_sandbox.advance(2)
    claimed, lease = tasks_claim()
    assert len(claimed) == 30
    gone = claimed[7]
    Task.objects.filter(pk=gone.pk).delete()  # the row vanished mid-cycle (team deleted…)
    cycle = _Cycle(polling.PollReport(), lease, timezone.now())

    with apply_batch() as batch:
        cycle.poll_group(account, "text2video", claimed, batch)

    assert cycle.report.applied == 29
    assert cycle.report.errors == 1 and str(gone.pk) in cycle.report.error_messages[0]
    assert Task.objects.filter(status=Status.SUCCEED).count() == 29
    assert Deduction.objects.count() == 29
    vendor = vendor_units(fresh_sandbox)
    total = sum(Deduction.objects.values_list("units", flat=True), Decimal(0))
    assert total == sum(vendor[t.task_id] for t in claimed if t.pk != gone.pk)
