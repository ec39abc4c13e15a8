"""Polling legacy tasks through the unified ``GET /tasks`` where — and only where — the vendor
serves them there, learnt per Kling account (``tasks_app.finder``; KLING_API_2026.md §3 is
silent on it). Against the sandbox with its default (``/tasks`` answers 2026-design tasks
only) and with ``unified_serves_legacy`` switched on; tasks go through the real form, the
real submit job and real poll cycles."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from klingweb.accounts.models import KlingAccount
from klingweb.sandbox.validation import validate_create
from tasks_app import polling
from tasks_app.finder import UNIFIED_NO_FOR
from tasks_app.models import Deduction, Status, Task
from tests.conftest import use_api_key
from tests.test_tasks_submission import NO_CALLBACKS_HERE, create

T2V_FORM = {
    "model_name": "kling-v1-6",
    "prompt": "a red kite over the sea",
    "mode": "std",
    "aspect_ratio": "16:9",
    "duration": "5",
}
FOREIGN_BODY = {"model_name": "kling-v1", "prompt": "theirs", "mode": "std", "duration": "5"}


@pytest.fixture
def vendor_account(settings, fresh_sandbox, monkeypatch, portal) -> str:
    """The operator default account on the sandbox with only an API key, in a vendor account
    of this test's own (so foreign tasks added here never reach another test); django-q jobs
    inline, callbacks to nowhere. Returns the sandbox account's name."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)
    account = f"ak-{uuid.uuid4().hex[:12]}"
    fresh_sandbox.config.accounts[account] = f"sk-{uuid.uuid4().hex}"
    use_api_key(settings, fresh_sandbox, f"key-{uuid.uuid4().hex}", account)
    settings.PUBLIC_BASE_URL = NO_CALLBACKS_HERE
    return account


def legacy_tasks(client, portal, count: int, capture) -> list[Task]:
    """``count`` legacy text-to-video tasks submitted through the form (sent at once)."""
    client.force_login(portal.member)
    tasks = [create(client, portal.team, "text2video", T2V_FORM, capture) for _ in range(count)]
    assert all(task.task_id for task in Task.objects.filter(pk__in=[t.pk for t in tasks]))
    return tasks


def cycle(capture, *, now=None) -> polling.PollReport:
    """One poll cycle with every unfinished task due at ``now`` (default: the present)."""
    now = now or timezone.now()
    Task.objects.exclude(status=Status.SUCCEED).update(next_poll_at=now - timedelta(seconds=1))
    with capture(execute=True):
        return polling.tasks_poll(now=now)


def charged_once(tasks: list[Task]) -> None:
    """Each task succeeded with its video and exactly one ledger row of the vendor's units."""
    for task in tasks:
        task.refresh_from_db()
        assert task.status == Status.SUCCEED, (task.status, task.error_message)
        assert task.result["videos"][0]["url"]
        [row] = Deduction.objects.filter(task=task)
        assert row.units == task.final_unit_deduction and row.units > 0


def test_default_sandbox_probe_costs_one_request_then_none_for_a_day(
    client, portal, vendor_account, fresh_sandbox, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    tasks = legacy_tasks(client, portal, 1, capture)
    fresh_sandbox.advance(3)

    first = cycle(capture)

    assert (first.id_queries, first.requests, first.single_queries) == (1, 2, 0), (
        "the probe, then one list page"
    )
    charged_once(tasks)
    account = KlingAccount.objects.get(is_operator_default=True)
    assert account.unified_serves_legacy is False

    later = legacy_tasks(client, portal, 1, capture)  # in flight: due each cycle
    an_hour = cycle(capture, now=timezone.now() + timedelta(hours=1))
    assert (an_hour.id_queries, an_hour.requests) == (0, 1), "a 'no' stands: pages only"

    a_day = cycle(capture, now=timezone.now() + UNIFIED_NO_FOR + timedelta(minutes=1))
    assert (a_day.id_queries, a_day.requests) == (1, 2), "a day on, asked again"
    assert Task.objects.get(pk=later[0].pk).status in (Status.SUBMITTED, Status.PROCESSING)
    fresh_sandbox.advance(3)
    cycle(capture, now=timezone.now() + UNIFIED_NO_FOR + timedelta(minutes=2))
    charged_once(tasks + later)  # nothing charged twice across the cycles


def test_switch_on_legacy_tasks_found_by_id_whatever_else_is_in_the_account(
    client, portal, vendor_account, fresh_sandbox, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    fresh_sandbox.config.unified_serves_legacy = True  # reset_faults puts it back
    tasks = legacy_tasks(client, portal, 2, capture)

    alone = cycle(capture)
    info = validate_create("text2video", dict(FOREIGN_BODY))
    for _ in range(2000):  # another system's tasks, newer than ours: 4 list pages
        fresh_sandbox.state.create(vendor_account, "text2video", dict(FOREIGN_BODY), dict(info))
    fresh_sandbox.advance(3)
    crowded = cycle(capture)

    assert (alone.requests, alone.id_queries) == (1, 1)
    assert (crowded.requests, crowded.id_queries, crowded.single_queries) == (1, 1, 0), (
        "one GET /tasks, no list page, with 2,000 foreign tasks too"
    )
    charged_once(tasks)
    assert KlingAccount.objects.get(is_operator_default=True).unified_serves_legacy is True


def test_legacy_task_missing_from_tasks_but_on_the_pages_finishes_and_is_not_lost(
    client, portal, vendor_account, fresh_sandbox, monkeypatch, settings,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    capture = django_capture_on_commit_callbacks
    settings.POLL_LOST_AFTER_CHECKS = 1
    settings.POLL_LOST_AFTER_SECONDS = 1
    fresh_sandbox.config.unified_serves_legacy = True
    served, hidden = legacy_tasks(client, portal, 2, capture)
    # The vendor's /tasks lags for one task (it answers the other): only the pages have it.
    answer = fresh_sandbox.state.tasks_by_ids
    monkeypatch.setattr(
        fresh_sandbox.state,
        "tasks_by_ids",
        lambda account, ids, *, external: answer(
            account, [i for i in ids if i != hidden.task_id], external=external
        ),
    )

    in_flight = cycle(capture)
    hidden.refresh_from_db()
    assert (in_flight.id_queries, in_flight.requests - in_flight.id_queries) == (1, 1)
    assert in_flight.single_queries == 0 and in_flight.lost == 0
    assert hidden.status != Status.LOST and hidden.not_found_checks == 0

    fresh_sandbox.advance(3)
    done = cycle(capture, now=timezone.now() + timedelta(minutes=20))

    assert done.lost == 0
    charged_once([served, hidden])


def test_kling_sandbox_switch_is_off_unless_asked(monkeypatch):
    from klingweb.management.commands.kling_sandbox import resolve_options
    from klingweb.sandbox import SandboxConfig

    monkeypatch.delenv("KLING_SANDBOX_UNIFIED_SERVES_LEGACY", raising=False)
    assert SandboxConfig().unified_serves_legacy is False
    assert resolve_options({})["unified_serves_legacy"] is False
    assert resolve_options({"unified_serves_legacy": True})["unified_serves_legacy"] is True
    monkeypatch.setenv("KLING_SANDBOX_UNIFIED_SERVES_LEGACY", "1")
    assert resolve_options({})["unified_serves_legacy"] is True
