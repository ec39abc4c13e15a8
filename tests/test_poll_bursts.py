"""Bursts in one cycle (issue 15 item 4): many tasks finishing together are applied by one
poll cycle in chunks of one transaction each (``tasks_app.services.apply_batch``), each
chunk with a few statements for all its tasks (``tasks_apply_remote``), each task charged
exactly once, with the team's budget check and alert job done once per team, not once per
task; a task that cannot be applied does not undo the rest of its chunk, and a task
finished (or charged) elsewhere while the cycle held it is not charged again."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
from django.core import mail
from django.utils import timezone

from klingweb.accounts.services import kling_client_for
from klingweb.api.models import WebhookDelivery
from klingweb.api.webhooks import webhook_endpoint_create
from tasks_app import polling
from tasks_app.jobs import check_budget_alerts
from tasks_app.ledger import deduction_append
from tasks_app.models import Budget, BudgetAlert, Deduction, Status, Task, TaskEvent
from tasks_app.polling import _Cycle, tasks_claim, tasks_poll
from tasks_app.services import apply_batch, task_apply_remote
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


def test_a_burst_of_two_teams_over_several_chunks_is_charged_once_and_alerted_once_per_team(
    portal, fresh_sandbox, small_chunks, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    blue = sandbox_account(fresh_sandbox, portal.team)
    red = sandbox_account(fresh_sandbox, portal.other_team)
    blues = in_flight_tasks(portal.team, portal.member, blue, 90)  # three chunks of 40
    reds = in_flight_tasks(portal.other_team, portal.outsider, red, 50)  # two
    endpoint, _ = webhook_endpoint_create(
        team=portal.team,
        user=portal.admin,
        url="https://hooks.example/in",
        events=["task.succeeded"],
    )
    fresh_sandbox.advance(2)
    vendor = vendor_units(fresh_sandbox)
    for team, tasks in ((portal.team, blues), (portal.other_team, reds)):
        Budget.objects.create(
            team=team, period="monthly", units=sum(vendor[t.task_id] for t in tasks)
        )
    jobs = record_jobs(monkeypatch, django_capture_on_commit_callbacks)

    with django_capture_on_commit_callbacks(execute=True):
        report = tasks_poll()

    assert report.applied == 140 and report.errors == 0
    # Each chunk went through tasks_apply_remote together (no fall back to one by one).
    assert not [r for r in caplog.records if r.name == "tasks_app.services"], caplog.text
    everyone = blues + reds
    ledger = {d.task.task_id: d.units for d in Deduction.objects.select_related("task")}
    assert ledger == {t.task_id: vendor[t.task_id] for t in everyone}, "one row each, as billed"
    assert TaskEvent.objects.filter(status=Status.SUCCEED).count() == 140
    # The blue team's endpoint hears of each of its tasks once; nothing for the red team.
    events = sorted(
        WebhookDelivery.objects.filter(endpoint=endpoint).values_list("event_id", flat=True)
    )
    assert events == sorted(f"task.succeeded.{t.code}" for t in blues)
    assert WebhookDelivery.objects.count() == 90
    # One alert job per team; each threshold recorded and mailed once per team.
    checks = [args for func, args in jobs.queued if func == "tasks_app.jobs.check_budget_alerts"]
    assert sorted(checks) == sorted([(portal.team.pk,), (portal.other_team.pk,)])
    for team in (portal.team, portal.other_team):
        alerts = BudgetAlert.objects.filter(budget__team=team).values_list("threshold", flat=True)
        assert sorted(alerts) == [80, 90, 100]
    for _ in range(2):  # the jobs (a retried job, the periodic check) mail once per team
        for args in checks:
            check_budget_alerts(*args)
    mailed = sorted(sorted(message.to) for message in mail.outbox)
    assert mailed == [["admin@example.com", "owner@example.com"], ["outsider@example.com"]]

    # The same answers again (a second cycle) charge and announce nothing more.
    Task.objects.update(needs_confirmation=True)
    make_due(everyone)
    with django_capture_on_commit_callbacks(execute=True):
        again = tasks_poll()
    assert again.applied == 0 and again.errors == 0
    assert Deduction.objects.count() == 140 and WebhookDelivery.objects.count() == 90


def test_tasks_finished_by_callbacks_while_a_cycle_holds_them_are_not_charged_again(
    portal, fresh_sandbox, small_chunks
):
    account = sandbox_account(fresh_sandbox, portal.team)
    tasks = in_flight_tasks(portal.team, portal.member, account, 50)
    fresh_sandbox.advance(2)
    claimed, lease = tasks_claim()
    assert len(claimed) == 50
    # While the cycle holds its (now stale) rows, callbacks finish and charge a few tasks,
    # and reconciliation has already charged one more by hand.
    client = kling_client_for(account)
    early = claimed[3:48:9]
    for task in early:
        remote = client.get_task("text2video", task_id=task.task_id)
        assert task_apply_remote(task_pk=task.pk, remote=remote, source="callback")
    by_hand = claimed[20]
    deduction_append(
        task=by_hand, units=Decimal("1"), recorded_at=timezone.now(), corrects=None, note="staff"
    )
    cycle = _Cycle(polling.PollReport(), lease, timezone.now())

    with apply_batch() as batch:
        cycle.poll_group(account, "text2video", claimed, batch)

    assert cycle.report.applied == 50 - len(early) and cycle.report.errors == 0
    assert Task.objects.filter(status=Status.SUCCEED).count() == 50
    counts = Counter(Deduction.objects.values_list("task_id", flat=True))
    assert set(counts) == {t.pk for t in tasks} and set(counts.values()) == {1}
    vendor = vendor_units(fresh_sandbox)
    for row in Deduction.objects.exclude(task_id=by_hand.pk).select_related("task"):
        assert row.units == vendor[row.task.task_id]
    finishes = Counter(
        TaskEvent.objects.filter(status=Status.SUCCEED).values_list("task_id", flat=True)
    )
    assert set(finishes.values()) == {1}, "one finish in each task's history"
    sources = Counter(
        TaskEvent.objects.filter(status=Status.SUCCEED).values_list("source", flat=True)
    )
    assert sources == {"callback": len(early), "poll": 50 - len(early)}
