"""Vendor calls under concurrency (issue 12): admin actions that need Kling's answer run as
jobs, once, however many times they are clicked or delivered.

Real threads against the test database (``transaction=True``): on PostgreSQL the racing
inserts meet the partial unique constraint, on SQLite the busy timeout; either way one call
is started and one job does the work.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from klingweb.accounts import services
from klingweb.accounts.jobs import connection_test
from klingweb.accounts.models import (
    KlingAccount,
    Region,
    VendorCall,
    VendorCallKind,
    VendorCallStatus,
)
from tests.conftest import SANDBOX_AK, SANDBOX_SK

pytestmark = pytest.mark.django_db(transaction=True)

CLICKS = 4


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """A fast hasher: the ``portal`` cast has five users."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def queued(monkeypatch) -> list:
    """Jobs enqueued with ``async_task`` (recorded, not run)."""
    calls: list = []
    monkeypatch.setattr(
        "django_q.tasks.async_task", lambda func, *args, **kwargs: calls.append((func, args))
    )
    return calls


@pytest.fixture
def account(portal, fresh_sandbox) -> KlingAccount:
    row = KlingAccount(
        team=portal.team,
        name="Sandbox",
        region=Region.CUSTOM,
        custom_base_url=fresh_sandbox.base_url,
        access_key=SANDBOX_AK,
    )
    services.account_set_secret(account=row, secret_key=SANDBOX_SK)
    row.save()
    return row


def _at_once(work, count: int) -> list:
    """Run ``work()`` in ``count`` threads released together; returns their results."""
    barrier = threading.Barrier(count)
    results: list = []
    errors: list = []

    def run() -> None:
        try:
            barrier.wait()
            results.append(work())
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    return results


def test_simultaneous_clicks_start_one_call_and_one_job(portal, account, queued):
    def click():
        call, _started = services.vendor_call_start(
            team=portal.team,
            kind=VendorCallKind.ACCOUNT_TEST,
            subject=str(account.code),
            user=portal.admin,
            job="klingweb.accounts.jobs.connection_test",
        )
        return call.pk

    pks = _at_once(click, CLICKS)
    assert len(pks) == CLICKS and len(set(pks)) == 1
    assert VendorCall.objects.count() == 1
    assert queued == [("klingweb.accounts.jobs.connection_test", (pks[0],))]


def test_a_job_delivered_twice_at_once_asks_kling_once(portal, account, queued):
    call = VendorCall.objects.create(
        team=portal.team,
        kind=VendorCallKind.ACCOUNT_TEST,
        subject=str(account.code),
        created_by=portal.admin,
    )
    outcomes = _at_once(lambda: connection_test(call.pk), 2)
    assert sorted(outcomes) == [VendorCallStatus.DONE, "skipped"]
    call.refresh_from_db()
    assert call.status == VendorCallStatus.DONE
    assert call.result["packs"][0]["resource_pack_name"] == "Sandbox video pack"
