"""Polling: tasks finish on their own, list pages instead of N queries, faults never fail a
task, stale flags, paused accounts, status never moving backwards."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from klingweb.kling import parse_task
from tasks_app.models import Deduction, Status, Task
from tasks_app.polling import poll_interval, tasks_poll
from tasks_app.services import task_apply_remote
from tasks_app.submission import task_queue
from tests.cluster_support import (  # noqa: F401 - fast_passwords is an autouse fixture
    T2V,
    fast_passwords,
    in_flight_tasks,
    make_due,
    sandbox_account,
    vendor_units,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def account(portal, fresh_sandbox):
    return sandbox_account(fresh_sandbox, portal.team)


@pytest.fixture
def long_tasks(fresh_sandbox):
    """Tasks created during the test take an hour on the sandbox clock (until advanced)."""
    before = fresh_sandbox.config.task_seconds
    fresh_sandbox.config.task_seconds = 3600.0
    yield fresh_sandbox
    fresh_sandbox.config.task_seconds = before


def test_polled_tasks_finish_with_exactly_one_deduction_each(portal, fresh_sandbox, account):
    ok = in_flight_tasks(portal.team, portal.member, account, 2)
    failed = in_flight_tasks(
        portal.team, portal.member, account, 1, body={**T2V, "prompt": "sandbox:fail"}
    )
    charged = in_flight_tasks(
        portal.team, portal.member, account, 1, body={**T2V, "prompt": "sandbox:fail-charged"}
    )
    fresh_sandbox.advance(2)

    report = tasks_poll()

    assert report.claimed == 4 and report.applied == 4 and report.errors == 0
    assert report.requests == 1, "four tasks of one family cost one list page"
    assert report.single_queries == 0
    statuses = {t.pk: t.status for t in Task.objects.all()}
    assert [statuses[t.pk] for t in ok] == [Status.SUCCEED, Status.SUCCEED]
    assert statuses[failed[0].pk] == Status.FAILED
    assert statuses[charged[0].pk] == Status.FAILED
    units = vendor_units(fresh_sandbox)
    for task in Task.objects.all():
        rows = list(Deduction.objects.filter(task=task))
        if units[task.task_id] > 0:
            assert len(rows) == 1 and rows[0].units == units[task.task_id]
            assert rows[0].member == portal.member
        else:
            assert rows == [], "a failed task the vendor did not charge costs nothing"
    # A second cycle finds nothing due and changes nothing.
    again = tasks_poll()
    assert again.claimed == 0 and again.requests == 0
    assert Deduction.objects.count() == 3


def test_list_pages_find_tasks_across_pages_then_single_queries_fill_gaps(
    portal, long_tasks, account
):
    tasks = in_flight_tasks(portal.team, portal.member, account, 520)

    first = tasks_poll()
    assert first.claimed == 520
    assert first.requests == 2, "520 tasks in flight cost ⌈520/500⌉ = 2 list pages"
    assert first.found_in_pages == 520 and first.single_queries == 0
    assert Task.objects.filter(status=Status.SUBMITTED).count() == 520

    # The oldest task (on page 2) claims a creation time newer than everything on page 1:
    # the pages stop early and one single query finds it.
    oldest = Task.objects.get(pk=tasks[0].pk)
    Task.objects.filter(pk=oldest.pk).update(vendor_created_at=timezone.now() + timedelta(hours=1))
    make_due([oldest])
    gap = tasks_poll()
    assert gap.claimed == 1
    assert (gap.requests, gap.found_in_pages, gap.single_queries) == (2, 0, 1)
    assert gap.errors == 0

    long_tasks.advance(3601)
    make_due(tasks)
    last = tasks_poll()
    assert last.applied == 520 and last.requests == 2 and last.errors == 0
    assert Task.objects.filter(status=Status.SUCCEED).count() == 520
    assert Deduction.objects.count() == 520
    units = vendor_units(long_tasks)
    expected = sum(units[t.task_id] for t in Task.objects.all())
    assert Deduction.objects.aggregate(s=Sum("units"))["s"] == expected


def test_server_errors_back_off_and_never_fail_a_task(portal, fresh_sandbox, account):
    tasks = in_flight_tasks(portal.team, portal.member, account, 3)
    fresh_sandbox.config.error_rate = 1.0  # every request answers 5000/5001
    started = timezone.now()

    report = tasks_poll()

    assert report.errors >= 1 and report.applied == 0
    for task in Task.objects.all():
        assert task.status == Status.SUBMITTED
        assert task.poll_errors == 1
        assert task.claimed_until is None
        assert task.next_poll_at > started + timedelta(seconds=4)
    assert tasks_poll().claimed == 0, "backed off: not due in the next cycle"

    fresh_sandbox.reset_faults()
    fresh_sandbox.advance(2)
    make_due(tasks)
    assert tasks_poll().applied == 3
    assert set(Task.objects.values_list("status", flat=True)) == {Status.SUCCEED}
    assert Deduction.objects.count() == 3


def test_concurrency_refusals_on_create_keep_tasks_queued(portal, fresh_sandbox, account):
    task = task_queue(team=portal.team, user=portal.member, family="text2video", params=dict(T2V))
    Task.objects.filter(pk=task.pk).update(retry_at=timezone.now())
    fresh_sandbox.config.create_concurrency_rate = 1.0  # every create answers 1303

    call_command("kling_poll", "--once", stdout=StringIO())

    task.refresh_from_db()
    assert task.status == Status.QUEUED, "1303 keeps the task queued, never failed"
    fresh_sandbox.reset_faults()
    Task.objects.filter(pk=task.pk).update(retry_at=timezone.now(), claimed_until=None)
    call_command("kling_poll", "--once", stdout=StringIO())
    task.refresh_from_db()
    assert task.status == Status.SUBMITTED and task.task_id


def test_paused_account_is_skipped(portal, fresh_sandbox, account):
    in_flight_tasks(portal.team, portal.member, account, 2)
    account.paused_at = timezone.now()
    account.paused_code = 1102
    account.save()

    report = tasks_poll()

    assert report.requests == 0 and report.skipped_paused == 2
    task = Task.objects.first()
    assert task.status == Status.SUBMITTED and task.claimed_until is None
    assert task.next_poll_at > timezone.now() + timedelta(seconds=30)


def test_young_tasks_are_polled_every_five_seconds_older_ones_less(portal, long_tasks, account):
    assert poll_interval(age_seconds=10, stale=False) == 5
    assert poll_interval(age_seconds=119, stale=False) == 5
    assert 5 < poll_interval(age_seconds=300, stale=False) < 60
    assert poll_interval(age_seconds=3000, stale=False) == 60
    assert poll_interval(age_seconds=9000, stale=True) == 300

    young, old = in_flight_tasks(portal.team, portal.member, account, 2)
    Task.objects.filter(pk=old.pk).update(submitted_at=timezone.now() - timedelta(minutes=30))
    before = timezone.now()
    tasks_poll()
    young.refresh_from_db()
    old.refresh_from_db()
    assert young.next_poll_at <= before + timedelta(seconds=5.5)
    assert old.next_poll_at >= before + timedelta(seconds=45)
    assert young.poll_attempts == old.poll_attempts == 1


def test_unfinished_task_is_flagged_stale_and_still_polled_slowly(
    portal, long_tasks, account, client, django_user_model
):
    (task,) = in_flight_tasks(portal.team, portal.member, account, 1)
    Task.objects.filter(pk=task.pk).update(submitted_at=timezone.now() - timedelta(hours=3))

    tasks_poll()

    task.refresh_from_db()
    assert task.is_stale and task.status == Status.SUBMITTED, "stale, not failed"
    assert task.next_poll_at >= timezone.now() + timedelta(seconds=200)

    staff = django_user_model.objects.create_user("ops", "ops@example.com", "pw", is_staff=True)
    client.force_login(staff)
    page = client.get("/ops/stale/")
    assert page.status_code == 200 and task.task_id in page.content.decode()
    client.force_login(portal.owner)
    assert client.get("/ops/stale/").status_code == 404

    long_tasks.advance(3601)
    make_due([task])
    tasks_poll()
    task.refresh_from_db()
    assert task.status == Status.SUCCEED and not task.is_stale


def _remote(task: Task, status: str, units: str = "1") -> object:
    return parse_task(
        {
            "task_id": task.task_id or "t-1",
            "task_status": status,
            "task_status_msg": "",
            "created_at": 1_700_000_000_000,
            "updated_at": 1_700_000_100_000,
            "final_unit_deduction": units,
            "task_info": {"external_task_id": str(task.code)},
            "task_result": {"videos": [{"id": "v", "url": "https://example.invalid/v.mp4"}]}
            if status == "succeed"
            else {},
        }
    )


def test_status_never_moves_backwards(portal):
    task = Task.objects.create(
        team=portal.team, family="text2video", status=Status.PROCESSING, task_id="t-1"
    )
    assert not task_apply_remote(task_pk=task.pk, remote=_remote(task, "submitted"), source="poll")
    task.refresh_from_db()
    assert task.status == Status.PROCESSING

    assert task_apply_remote(
        task_pk=task.pk, remote=_remote(task, "succeed", "2"), source="callback"
    )
    for late in ("processing", "submitted", "failed", "succeed"):
        assert not task_apply_remote(
            task_pk=task.pk, remote=_remote(task, late, "9"), source="poll"
        )
    task.refresh_from_db()
    assert task.status == Status.SUCCEED and task.final_unit_deduction == Decimal("2")
    assert list(Deduction.objects.values_list("units", flat=True)) == [Decimal("2")]
