"""Exactly once under concurrency: duplicate callbacks, callbacks racing polls, two pollers,
and a poll run repeated after a crash mid-cycle. Real threads, real commits (SQLite too)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connections
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.conf import Conf

from klingweb.accounts.services import kling_client_for
from tasks_app.callbacks import callback_token_for
from tasks_app.models import Deduction, Status, Task
from tasks_app.polling import tasks_claim, tasks_poll
from tasks_app.services import task_apply_remote
from tasks_app.submission import task_queue, task_refuse
from tests.cluster_support import (  # noqa: F401 - fast_passwords is an autouse fixture
    T2V,
    fast_passwords,
    in_flight_tasks,
    sandbox_account,
    vendor_units,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _run_threads(targets) -> list[str]:
    """Start every callable at once (a barrier), join, return the errors raised."""
    errors: list[str] = []
    barrier = threading.Barrier(len(targets))

    def wrap(fn):
        try:
            barrier.wait(timeout=10)
            fn()
        except Exception as exc:  # reported to the test
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=wrap, args=(fn,)) for fn in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def _assert_one_deduction_each(sandbox, tasks) -> None:
    units = vendor_units(sandbox)
    counts = Counter(Deduction.objects.values_list("task_id", flat=True))
    for task in Task.objects.filter(pk__in=[t.pk for t in tasks]):
        assert task.status == Status.SUCCEED
        assert counts[task.pk] == 1, f"task {task.pk} has {counts[task.pk]} ledger rows"
        assert Deduction.objects.get(task=task).units == units[task.task_id]


def test_two_pollers_never_claim_the_same_task(portal):
    now = timezone.now()
    Task.objects.bulk_create(
        Task(team=portal.team, family="text2video", status=Status.SUBMITTED, next_poll_at=now)
        for _ in range(60)
    )
    claims: list[list[int]] = []

    def claim():
        tasks, _lease = tasks_claim()
        claims.append([t.pk for t in tasks])

    assert _run_threads([claim] * 4) == []
    everything = [pk for batch in claims for pk in batch]
    assert len(everything) == len(set(everything)) == 60


def test_duplicate_callbacks_and_polls_at_once_record_one_deduction(
    portal, fresh_sandbox, live_server, monkeypatch
):
    monkeypatch.setattr(Conf, "SYNC", True)  # each final callback's confirming query, inline
    account = sandbox_account(fresh_sandbox, portal.team)
    tasks = []
    client = kling_client_for(account)
    for _ in range(6):
        task = Task.objects.create(
            team=portal.team,
            creator=portal.member,
            family="text2video",
            kling_account=account,
            params=dict(T2V),
        )
        url = live_server.url + reverse(
            "tasks-callback", kwargs={"token": callback_token_for(task)}
        )
        remote = client.create_task(
            "text2video", {**T2V, "external_task_id": task.external_task_id, "callback_url": url}
        )
        task_apply_remote(task_pk=task.pk, remote=remote, source="submit")
        Task.objects.filter(pk=task.pk).update(next_poll_at=timezone.now())
        tasks.append(task)
    fresh_sandbox.config.callback_duplicate_rate = 1.0  # every callback arrives twice

    def finish_and_deliver():
        fresh_sandbox.advance(2)  # processing + succeed callbacks, each twice, at once

    def poll():
        for _ in range(3):
            tasks_poll()

    def post_final_copies():
        # The same final body POSTed again while the sandbox delivers its own.
        browser = Client()
        for task in tasks:
            remote = client.get_task("text2video", task_id=Task.objects.get(pk=task.pk).task_id)
            url = reverse("tasks-callback", kwargs={"token": callback_token_for(task)})
            browser.post(url, data=remote.raw, content_type="application/json")

    errors = _run_threads([finish_and_deliver, poll, poll, post_final_copies])
    assert errors == []
    assert fresh_sandbox.wait_callbacks(timeout=20)
    tasks_poll()  # whatever is still in flight (a poll that ran before the advance)

    log = [e for e in fresh_sandbox.callbacks_log if e["url"].startswith(live_server.url)]
    assert len(log) >= 12 and all(e["http_status"] == 200 for e in log)
    _assert_one_deduction_each(fresh_sandbox, tasks)


def test_poll_repeated_after_a_crash_mid_cycle_doubles_nothing(portal, fresh_sandbox):
    account = sandbox_account(fresh_sandbox, portal.team)
    tasks = in_flight_tasks(portal.team, portal.member, account, 8)
    fresh_sandbox.advance(2)

    # A cycle claims every task, applies half of them, then its process dies: no release.
    claimed, _lease = tasks_claim()
    assert len(claimed) == 8
    client = kling_client_for(account)
    for task in claimed[:4]:
        remote = client.get_task("text2video", task_id=task.task_id)
        task_apply_remote(task_pk=task.pk, remote=remote, source="poll")

    # Another cluster's cycle right after: the other four are still under the dead claim.
    assert tasks_poll().claimed == 0
    # Once the claims expire, a cycle picks them up; two clusters at that moment, even.
    later = timezone.now() + timedelta(seconds=settings.POLL_CLAIM_SECONDS + 1)
    reports = []
    errors = _run_threads([lambda: reports.append(tasks_poll(now=later))] * 2)
    assert errors == []
    assert sorted(r.claimed for r in reports) == [0, 4]
    _assert_one_deduction_each(fresh_sandbox, tasks)

    # And a full repeat of the crashed cycle's applies changes nothing.
    for task in claimed:
        remote = client.get_task("text2video", task_id=task.task_id)
        task_apply_remote(task_pk=task.pk, remote=remote, source="poll")
    _assert_one_deduction_each(fresh_sandbox, tasks)


def test_callback_and_apply_racing_in_many_threads_record_once(portal, fresh_sandbox, monkeypatch):
    monkeypatch.setattr(Conf, "SYNC", True)  # each final callback's confirming query, inline
    account = sandbox_account(fresh_sandbox, portal.team)
    tasks = in_flight_tasks(portal.team, portal.member, account, 3)
    fresh_sandbox.advance(2)
    client = kling_client_for(account)
    remotes = {t.pk: client.get_task("text2video", task_id=t.task_id) for t in tasks}
    browser_urls = {
        t.pk: reverse("tasks-callback", kwargs={"token": callback_token_for(t)}) for t in tasks
    }

    def deliver(task):
        def run():
            Client().post(
                browser_urls[task.pk], data=remotes[task.pk].raw, content_type="application/json"
            )

        return run

    def apply(task):
        return lambda: task_apply_remote(task_pk=task.pk, remote=remotes[task.pk], source="poll")

    targets = []
    for task in tasks:
        targets += [deliver(task), deliver(task), apply(task), apply(task)]
    assert _run_threads(targets) == []
    _assert_one_deduction_each(fresh_sandbox, tasks)


def test_refusal_racing_acceptance_has_one_winner(portal, fresh_sandbox):
    """Late refusals and the vendor's acceptance of one queued task, all at once: the task
    ends either submitted or refused, never both, with one status-history entry each."""
    account = sandbox_account(fresh_sandbox, portal.team)
    portal.team.kling_account = account
    portal.team.save()
    client = kling_client_for(account)
    tasks = []
    for _ in range(4):
        task = task_queue(team=portal.team, user=portal.member, family="text2video", params=T2V)
        remote = client.create_task(
            "text2video", {**T2V, "external_task_id": task.external_task_id}
        )
        tasks.append((task, remote))

    def apply(task, remote):
        return lambda: task_apply_remote(task_pk=task.pk, remote=remote, source="submit")

    def refuse(task):
        return lambda: task_refuse(task_pk=task.pk, code=1201, message="bad", request_id="r")

    targets = []
    for task, remote in tasks:
        targets += [apply(task, remote), refuse(task), apply(task, remote), refuse(task)]
    assert _run_threads(targets) == []
    for task, _remote in tasks:
        task.refresh_from_db()
        events = list(task.events.values_list("status", flat=True))
        assert events in (["queued", "submitted"], ["queued", "error"]), events
        assert task.status == events[-1]
        assert (task.error_code == 1201) == (task.status == Status.ERROR)
