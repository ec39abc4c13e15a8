"""The poller process (``manage.py kling_poll``): one cycle by hand, several pollers at once
never reading one (account, family) group in the same cycle nor applying a task twice, a
killed poller's claims expiring so another takes over, and SIGTERM ending the loop only after
the cycle it is in. Real threads, a real process and real commits (SQLite too)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.utils import timezone

from tasks_app.models import Deduction, Status, Task
from tasks_app.polling import tasks_claim, tasks_poll
from tests.cluster_support import (  # noqa: F401 - fast_passwords is an autouse fixture
    T2V,
    fast_passwords,
    in_flight_tasks,
    make_due,
    sandbox_account,
)
from tests.processes import STRIPPED

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[1]


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


def test_kling_poll_once_finishes_due_tasks_and_says_what_it_did(portal, fresh_sandbox):
    account = sandbox_account(fresh_sandbox, portal.team)
    in_flight_tasks(portal.team, portal.member, account, 3)
    fresh_sandbox.advance(2)

    out = StringIO()
    call_command("kling_poll", "--once", stdout=out)

    assert "claimed 3, requests 1, applied 3, errors 0, groups 1" in out.getvalue()
    assert set(Task.objects.values_list("status", flat=True)) == {Status.SUCCEED}
    assert Deduction.objects.count() == 3


def test_kling_poll_refuses_a_bad_interval(portal):
    with pytest.raises(CommandError, match="--interval must be a positive number"):
        call_command("kling_poll", "--interval", "0")
    assert not Task.objects.exists()


def test_several_pollers_never_read_one_group_in_the_same_cycle(portal, fresh_sandbox):
    accounts = [sandbox_account(fresh_sandbox, portal.team) for _ in range(2)]
    now = timezone.now()
    groups = {}
    for account in accounts:
        for family in ("text2video", "image2video", "avatar"):
            rows = Task.objects.bulk_create(
                Task(
                    team=portal.team,
                    family=family,
                    kling_account=account,
                    status=Status.SUBMITTED,
                    next_poll_at=now,
                )
                for _ in range(15)
            )
            groups.update({row.pk: (account.pk, family) for row in rows})
    claims: list[list[int]] = []

    def claim():
        tasks, _lease = tasks_claim()
        claims.append([t.pk for t in tasks])

    assert _run_threads([claim] * 4) == []

    everything = [pk for batch in claims for pk in batch]
    assert len(everything) == len(set(everything)) == 90, "every task claimed exactly once"
    readers = defaultdict(set)
    for poller, batch in enumerate(claims):
        for pk in batch:
            readers[groups[pk]].add(poller)
    assert len(readers) == 6
    assert all(len(pollers) == 1 for pollers in readers.values()), readers


def test_a_group_under_a_live_claim_is_left_to_its_poller(portal, fresh_sandbox):
    account = sandbox_account(fresh_sandbox, portal.team)
    first = in_flight_tasks(portal.team, portal.member, account, 2)
    claimed, _lease = tasks_claim()  # a poller's cycle is reading this group now
    assert {t.pk for t in claimed} == {t.pk for t in first}

    # More tasks of the same group become due, and a task of another account's group.
    later = in_flight_tasks(portal.team, portal.member, account, 2)
    other_account = sandbox_account(fresh_sandbox, portal.team)
    other = in_flight_tasks(portal.team, portal.member, other_account, 1)
    fresh_sandbox.advance(2)

    report = tasks_poll()

    assert report.groups == 1 and report.claimed == 1, "only the free group is read"
    assert Task.objects.get(pk=other[0].pk).status == Status.SUCCEED
    assert set(
        Task.objects.filter(pk__in=[t.pk for t in later]).values_list("status", flat=True)
    ) == {Status.SUBMITTED}


def test_a_killed_pollers_claims_expire_and_another_poller_takes_over(portal, fresh_sandbox):
    account = sandbox_account(fresh_sandbox, portal.team)
    tasks = in_flight_tasks(portal.team, portal.member, account, 4)
    fresh_sandbox.advance(2)
    claimed, _lease = tasks_claim()  # then the poller is SIGKILLed: its claims stay
    assert len(claimed) == 4

    assert tasks_poll().claimed == 0, "claims of the dead poller still hold"

    later = timezone.now() + timedelta(seconds=settings.POLL_CLAIM_SECONDS + 1)
    reports = []
    errors = _run_threads([lambda: reports.append(tasks_poll(now=later))] * 2)
    assert errors == []
    assert sorted(r.claimed for r in reports) == [0, 4]
    assert sorted(r.groups for r in reports) == [0, 1], "one poller read the group"
    for task in Task.objects.filter(pk__in=[t.pk for t in tasks]):
        assert task.status == Status.SUCCEED and task.claimed_until is None
        assert Deduction.objects.filter(task=task).count() == 1


@pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3",
    reason="the poller process is pointed at the test database by SQLITE_PATH",
)
def test_sigterm_stops_the_poller_mid_cycle_and_the_next_cycle_finishes_billing_once(
    portal, fresh_sandbox, tmp_path
):
    """SIGTERM reaches a poller inside a slow cycle: it exits 0 at the next group boundary
    (``poll_cycle``'s stop event), releases its claims, and whatever it had not applied is
    applied by the next cycle — each task charged exactly once."""
    account = sandbox_account(fresh_sandbox, portal.team)
    tasks = in_flight_tasks(portal.team, portal.member, account, 2)
    fresh_sandbox.advance(2)
    fresh_sandbox.config.latency = 2.0  # each Kling answer takes 2 s: the cycle is slow
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED}
    env.update(
        SQLITE_PATH=settings.DATABASES["default"]["NAME"],
        DJANGO_SETTINGS_MODULE="klingweb.settings",
        SECRET_KEY=settings.SECRET_KEY,
        FERNET_KEYS=",".join(settings.FERNET_KEYS),
    )
    log = tmp_path / "poller.log"
    with log.open("w") as out:
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "manage.py", "kling_poll", "--interval", "0.5"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Wait until the poller is inside a cycle: it holds the claim of our tasks.
        deadline = time.monotonic() + 60
        while not Task.objects.filter(pk=tasks[0].pk, claimed_until__isnull=False).exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    output = log.read_text()
    assert returncode == 0, output
    assert "poller: stopped after 1 cycles" in output
    rows = Task.objects.filter(pk__in=[t.pk for t in tasks])
    assert all(task.claimed_until is None for task in rows), "its claims released"
    applied_before = sum(task.status == Status.SUCCEED for task in rows)
    make_due(tasks)
    assert tasks_poll().applied == len(tasks) - applied_before, "the next cycle does the rest"
    for task in Task.objects.filter(pk__in=[t.pk for t in tasks]):
        assert task.status == Status.SUCCEED
        assert Deduction.objects.filter(task=task).count() == 1
    make_due(tasks)
    assert tasks_poll().applied == 0


def test_a_task_held_by_a_dead_submit_worker_does_not_hold_up_its_group(portal, fresh_sandbox):
    account = sandbox_account(fresh_sandbox, portal.team)
    stuck, *others = in_flight_tasks(portal.team, portal.member, account, 3)
    # Accepted by Kling, then its worker died before releasing the submit claim (5 min).
    Task.objects.filter(pk=stuck.pk).update(claimed_until=timezone.now() + timedelta(minutes=5))
    fresh_sandbox.advance(2)

    report = tasks_poll()

    assert report.claimed == 2 and report.applied == 2
    assert {t.status for t in Task.objects.filter(pk__in=[t.pk for t in others])} == {
        Status.SUCCEED
    }
    assert Task.objects.get(pk=stuck.pk).status == Status.SUBMITTED, "its turn comes later"
