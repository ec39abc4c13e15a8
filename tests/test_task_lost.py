"""Tasks the vendor no longer knows (issue 14 item 3): a sent task Kling answers "not found"
(1203) for on ``POLL_LOST_AFTER_CHECKS`` consecutive checks spread over at least
``POLL_LOST_AFTER_SECONDS`` ends "Lost at vendor" — no charge, reservation released, history
entry, ``task.lost`` webhook; a found answer resets the count; a later answer is applied and
charged once; admins end a stale task by hand with a reason; usage counts lost tasks.

The sandbox runs over loopback and forgets a task with its fault knob
(``SandboxServer.forget``); the real poll cycle (``tasks_poll``, ``lost_recheck``) runs with
its ``now`` moved forward, so no test waits ten minutes.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from klingweb.accounts.models import KlingAccount, Region
from klingweb.accounts.services import account_set_api_key, kling_client_for
from klingweb.api.models import WebhookDelivery
from klingweb.api.webhooks import webhook_endpoint_create
from tasks_app.budgets import budget_status
from tasks_app.models import Budget, Deduction, Status, Task
from tasks_app.polling import lost_recheck, tasks_poll
from tasks_app.services import LATE_ANSWER_NOTE, task_apply_remote
from tests.cluster_support import (  # noqa: F401 - fast_passwords is an autouse fixture
    fast_passwords,
    in_flight_tasks,
    sandbox_account,
)
from tests.test_usage import parse_csv

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def lost_rules(settings):
    """Three checks over at least ten minutes (the defaults, set explicitly)."""
    settings.POLL_LOST_AFTER_CHECKS = 3
    settings.POLL_LOST_AFTER_SECONDS = 600
    return settings


@pytest.fixture
def one_task(portal, fresh_sandbox, lost_rules) -> Task:
    """One text-to-video task the sandbox accepted, in flight and due now."""
    account = sandbox_account(fresh_sandbox, portal.team)
    (task,) = in_flight_tasks(portal.team, portal.member, account, 1)
    return task


def poll_at(minutes: float, start) -> None:
    """One real poll cycle as if it ran ``minutes`` after ``start`` (every task is due:
    back-offs after "not found" are at most five minutes)."""
    report = tasks_poll(now=start + timedelta(minutes=minutes))
    assert report.claimed, "the task was due"


def page(client, user, task: Task) -> str:
    client.force_login(user)
    url = reverse("tasks-detail", kwargs={"team": task.team.code, "code": task.code})
    return client.get(url).content.decode()


def test_not_found_under_ten_minutes_keeps_it_running_then_it_ends_lost_uncharged(
    client, portal, fresh_sandbox, one_task, django_capture_on_commit_callbacks
):
    task = one_task
    budget = Budget.objects.create(team=portal.team, period="monthly", units=Decimal("1000"))
    assert budget_status(budget=budget).pending == task.estimated_units > 0
    webhook_endpoint_create(
        team=portal.team, user=portal.admin, url="https://hooks.example/k", events=["task.lost"]
    )
    fresh_sandbox.forget(task.task_id)
    start = timezone.now()
    for minutes in (0, 3, 6, 9):  # four "not found" answers, but within nine minutes
        poll_at(minutes, start)
    task.refresh_from_db()
    assert task.status == Status.SUBMITTED
    assert task.not_found_checks == 4 and task.error_code == 1203
    text = page(client, portal.member, task)
    assert "Kling answered “not found” on 4 consecutive checks" in text
    assert "The task is not lost" not in text

    with django_capture_on_commit_callbacks(execute=False):
        poll_at(10.5, start)  # the fifth answer, ten and a half minutes after the first
    task.refresh_from_db()
    assert task.status == Status.LOST
    assert task.get_status_display() == "Lost at vendor"
    assert not Deduction.objects.filter(task=task).exists(), "nothing is charged"
    assert budget_status(budget=budget).pending == 0, "the reservation is released"
    event = task.events.last()
    assert event.status == Status.LOST and "not found" in event.note
    assert WebhookDelivery.objects.filter(event_type="task.lost").count() == 1
    text = page(client, portal.member, task)
    assert "Lost at vendor" in text and "nothing charged" in text
    assert "End this task by hand" not in page(client, portal.admin, task), "already ended"
    # The normal poll set no longer holds it.
    assert tasks_poll(now=start + timedelta(minutes=30)).claimed == 0


def test_a_found_answer_resets_the_count(fresh_sandbox, one_task):
    task = one_task
    fresh_sandbox.forget(task.task_id)
    start = timezone.now()
    poll_at(0, start)
    poll_at(6, start)
    task.refresh_from_db()
    assert task.not_found_checks == 2 and task.not_found_since is not None
    fresh_sandbox.remember(task.task_id)
    poll_at(8, start)
    task.refresh_from_db()
    assert task.not_found_checks == 0 and task.not_found_since is None
    assert task.error_code is None
    # Forgotten again: the ten minutes start over from the next "not found".
    fresh_sandbox.forget(task.task_id)
    for minutes in (12, 16, 20):
        poll_at(minutes, start)
    task.refresh_from_db()
    assert task.status == Status.SUBMITTED and task.not_found_checks == 3
    poll_at(23, start)
    task.refresh_from_db()
    assert task.status == Status.LOST


def test_a_late_answer_after_lost_is_applied_and_charged_once(
    client, portal, fresh_sandbox, one_task
):
    task = one_task
    fresh_sandbox.forget(task.task_id)
    start = timezone.now()
    for minutes in (0, 6, 12):
        poll_at(minutes, start)
    task.refresh_from_db()
    assert task.status == Status.LOST
    lost_at = task.finished_at
    fresh_sandbox.advance(5)  # the vendor finished it after all, unseen (no callback)
    fresh_sandbox.remember(task.task_id)

    assert lost_recheck(now=lost_at + timedelta(minutes=5)).claimed == 0, "every 10 min only"
    report = lost_recheck(now=lost_at + timedelta(minutes=11))
    assert report.claimed == 1 and report.applied == 1
    task.refresh_from_db()
    assert task.status == Status.SUCCEED
    charged = Deduction.objects.filter(task=task)
    assert charged.count() == 1 and charged.get().units == task.final_unit_deduction > 0
    assert task.events.get(status=Status.SUCCEED).note.startswith(LATE_ANSWER_NOTE)
    assert "Kling answered after this task was marked lost at vendor" in page(
        client, portal.member, task
    )
    # The same answer applied again (a second re-ask, a duplicate callback): still once.
    remote = kling_client_for(task.kling_account).get_task("text2video", task_id=task.task_id)
    assert not task_apply_remote(task_pk=task.pk, remote=remote, source="callback")
    assert lost_recheck(now=lost_at + timedelta(minutes=30)).claimed == 0, "no longer lost"
    assert Deduction.objects.filter(task=task).count() == 1


TURBO_BODY = {"prompt": "a red kite", "settings": {"resolution": "720p", "duration": 5}}


def test_a_2026_design_task_missing_from_get_tasks_ends_lost(portal, fresh_sandbox, lost_rules):
    """KLING_API_2026.md §3: ``GET /tasks?task_ids=`` leaves out ids it does not know; a
    sent 3.0 task left out on three checks over ten minutes ends lost like a 1203."""
    key = f"key-{uuid.uuid4().hex}"
    fresh_sandbox.config.api_keys[key] = f"acct-{uuid.uuid4().hex[:8]}"
    account = KlingAccount(
        team=portal.team, name="Sandbox API key", region=Region.CUSTOM,
        custom_base_url=fresh_sandbox.base_url,
    )  # fmt: skip
    account_set_api_key(account=account, api_key=key)
    account.save()
    now = timezone.now()
    task = Task.objects.create(
        team=portal.team, creator=portal.member, family="t2v_3_0_turbo", params=TURBO_BODY,
        kling_account=account, status=Status.QUEUED, created_at=now,
    )  # fmt: skip
    remote = kling_client_for(account).create_task(
        "text_to_video_3_0_turbo",
        {**TURBO_BODY, "options": {"external_task_id": task.external_task_id}},
    )
    Task.objects.filter(pk=task.pk).update(
        task_id=remote.task_id, status=Status.SUBMITTED, submitted_at=now, next_poll_at=now,
        vendor_created_at=remote.created_at,
    )  # fmt: skip
    fresh_sandbox.forget(remote.task_id)
    for minutes in (0, 6):
        poll_at(minutes, now)
    task.refresh_from_db()
    assert task.status == Status.SUBMITTED and task.not_found_checks == 2
    poll_at(11, now)
    task.refresh_from_db()
    assert task.status == Status.LOST and not Deduction.objects.filter(task=task).exists()


def end_url(task: Task) -> str:
    return reverse("tasks-end", kwargs={"team": task.team.code, "code": task.code})


def test_an_admin_ends_a_stale_task_by_hand_with_a_reason(client, portal, one_task):
    task = one_task
    assert "End this task by hand" in page(client, portal.admin, task)
    assert "End this task by hand" not in page(client, portal.member, task)
    for user in (portal.member, portal.viewer):
        client.force_login(user)
        assert client.post(end_url(task), {"reason": "stale"}).status_code == 403
    client.force_login(portal.outsider)
    assert client.post(end_url(task), {"reason": "stale"}).status_code == 404
    client.force_login(portal.admin)
    assert client.get(end_url(task)).status_code == 405

    events = task.events.count()
    for reason, error in (
        ("   ", "Give a reason for ending this task."),
        ("x" * 501, "The reason is 501 characters long; at most 500 are kept."),
    ):
        response = client.post(end_url(task), {"reason": reason}, **HTMX)
        assert response.status_code == 200 and error in response.content.decode()
        task.refresh_from_db()
        assert task.status == Status.SUBMITTED and task.events.count() == events

    response = client.post(end_url(task), {"reason": "Kling support: lost in their outage"}, **HTMX)
    assert response.status_code == 200
    text = response.content.decode()
    assert "Lost at vendor" in text
    assert "Ended by hand by admin: Kling support: lost in their outage" in text
    task.refresh_from_db()
    assert task.status == Status.LOST and not Deduction.objects.filter(task=task).exists()
    event = task.events.last()
    assert event.source == "admin" and "admin" in event.note
    # Once ended it cannot be ended again; nothing changes.
    response = client.post(end_url(task), {"reason": "again"}, **HTMX)
    assert "only a task sent to Kling and not finished can be ended" in response.content.decode()
    assert task.events.count() == events + 1


def test_usage_counts_lost_tasks(client, portal, fresh_sandbox, one_task):
    task = one_task
    fresh_sandbox.forget(task.task_id)
    start = timezone.now()
    for minutes in (0, 6, 12):
        poll_at(minutes, start)
    task.refresh_from_db()
    assert task.status == Status.LOST
    client.force_login(portal.member)
    response = client.get(reverse("usage-team", kwargs={"team": portal.team.code}))
    totals = response.context["report"].totals
    assert totals.lost == 1 and totals.tasks_run == 1 and totals.units == 0
    assert "Lost at vendor" in response.content.decode()
    url = reverse("usage-team-export", kwargs={"team": portal.team.code, "table": "families"})
    rows = parse_csv(client.get(url))
    lost = rows[0].index("lost")
    assert rows[1][0] == "text2video" and rows[1][lost] == "1"
