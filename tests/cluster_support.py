"""Helpers of the background-cluster tests (tests/test_cluster_*.py).

Each test that talks to the sandbox gets a Kling account of its own (a fresh access key
registered in the session sandbox), so list pages hold only that test's tasks.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.utils import timezone

from klingweb.accounts.models import KlingAccount, Region
from klingweb.accounts.services import account_set_secret, kling_client_for
from tasks_app.budgets import estimate_units
from tasks_app.models import Status, Task


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Cheap password hashing: the ``portal`` cast is created for every test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


T2V = {
    "model_name": "kling-v1",
    "prompt": "a red kite over the sea",
    "mode": "std",
    "duration": "5",
}


def sandbox_account(sandbox, team) -> KlingAccount:
    """A new Kling account of ``team`` on the sandbox (its own access key and tasks)."""
    access_key = f"ak-{uuid.uuid4().hex[:12]}"
    secret_key = f"sk-{uuid.uuid4().hex}"
    sandbox.config.accounts[access_key] = secret_key
    account = KlingAccount(
        team=team,
        name=f"Sandbox {access_key}",
        region=Region.CUSTOM,
        custom_base_url=sandbox.base_url,
        access_key=access_key,
    )
    account_set_secret(account=account, secret_key=secret_key)
    account.save()
    team.kling_account = account
    team.save(update_fields=["kling_account"])
    return account


def in_flight_tasks(
    team,
    creator,
    account: KlingAccount,
    count: int,
    *,
    family: str = "text2video",
    body: dict | None = None,
) -> list[Task]:
    """Create ``count`` tasks in the sandbox (through the real client) and the matching
    ``Task`` rows, ``submitted`` and due now, as ``task_submit`` would leave them."""
    body = dict(T2V if body is None else body)
    now = timezone.now()
    tasks = [
        Task(
            team=team,
            creator=creator,
            family=family,
            params=body,
            model_name=body.get("model_name", ""),
            mode=body.get("mode", ""),
            kling_account=account,
            estimated_units=estimate_units(family=family, params=body),
            status=Status.QUEUED,
            created_at=now,
        )
        for _ in range(count)
    ]
    Task.objects.bulk_create(tasks)
    client = kling_client_for(account)
    for task in tasks:
        remote = client.create_task(family, {**body, "external_task_id": task.external_task_id})
        task.task_id = remote.task_id
        task.status = Status.SUBMITTED
        task.vendor_created_at = remote.created_at
        task.vendor_updated_at = remote.updated_at
        task.submitted_at = now
        task.next_poll_at = now
    Task.objects.bulk_update(
        tasks,
        [
            "task_id",
            "status",
            "vendor_created_at",
            "vendor_updated_at",
            "submitted_at",
            "next_poll_at",
        ],
        batch_size=500,
    )
    return tasks


def make_due(tasks_or_qs) -> None:
    """Make tasks due for polling now (as the clock would, a few seconds later)."""
    pks = [t.pk for t in tasks_or_qs]
    Task.objects.filter(pk__in=pks).update(next_poll_at=timezone.now(), claimed_until=None)


def vendor_units(sandbox) -> dict[str, Decimal]:
    """The sandbox's ``final_unit_deduction`` per task_id."""
    return {t["task_id"]: Decimal(t["final_unit_deduction"]) for t in sandbox.tasks_snapshot()}
