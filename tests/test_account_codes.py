"""Account-level answers and documented lookups (issue 13 item 9), against the sandbox.

- 1304 (IP allow-list policy) is about this server's address, not one task: it pauses the
  Kling account like 1100–1102 (admins see why; queued tasks wait) instead of ending each
  queued task as refused.
- AI multi-shot (and elements) document the single query by ``task_id`` only, and the
  sandbox answers an ``external_task_id`` there with 1203 as the vendor documents no such
  lookup: a create whose answer was lost is found on the list pages instead.
"""

from __future__ import annotations

import base64
import io
import threading
from datetime import timedelta

import httpx
import pytest
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from klingweb.accounts import services as account_services
from klingweb.accounts.models import KlingAccount
from klingweb.accounts.services import account_unpause, kling_client_for
from tasks_app import submission
from tasks_app.models import IN_FLIGHT, Status, Task

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def isolated(settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def kling(kling_settings, portal):
    kling_settings.PUBLIC_BASE_URL = ""  # the poller alone: no callbacks
    return kling_settings


@pytest.fixture
def short_timeouts(kling, monkeypatch):
    """Fresh clients with a short read timeout (the shared client cache is set aside)."""
    monkeypatch.setattr(account_services, "_clients", {})
    kling.KLING_READ_TIMEOUT = 0.8
    return kling


def make_due(*tasks: Task) -> None:
    Task.objects.filter(pk__in=[t.pk for t in tasks]).update(
        retry_at=timezone.now() - timedelta(seconds=1)
    )


def text2video(portal) -> Task:
    params = {"model_name": "kling-v1-6", "prompt": "a fox", "mode": "std", "duration": "5"}
    return submission.task_queue(
        team=portal.team, user=portal.member, family="text2video", params=params, prompt="p"
    )


def multi_shot(portal) -> Task:
    buf = io.BytesIO()
    Image.new("RGB", (400, 700), "#3355ff").save(buf, format="PNG")
    params = {"element_frontal_image": base64.b64encode(buf.getvalue()).decode()}
    return submission.task_queue(
        team=portal.team, user=portal.member, family="multi_shot", params=params
    )


def at_vendor(sandbox, task: Task) -> list[dict]:
    return [t for t in sandbox.tasks_snapshot() if t["external_task_id"] == str(task.code)]


class TestIpAllowList:
    def test_1304_pauses_the_account_and_every_queued_task_waits(
        self, client, portal, kling, fresh_sandbox
    ):
        tasks = [text2video(portal) for _ in range(3)]
        make_due(*tasks)
        fresh_sandbox.config.account_error_code = 1304
        assert submission.tasks_submit_due() == 0
        account = KlingAccount.objects.operator_default()
        assert account.is_paused and account.paused_code == 1304
        assert "IP allow-list" in account.paused_message
        for task in tasks:
            task.refresh_from_db()
            assert task.status == Status.QUEUED, (task.error_code, task.error_message)
            assert task.finished_at is None
        # One create was answered 1304; the others were not even sent.
        assert [t.error_code for t in tasks] == [1304, None, None]
        make_due(*tasks)
        assert submission.tasks_submit_due() == 0  # a paused account sends nothing
        assert Task.objects.filter(pk__in=[t.pk for t in tasks], status=Status.QUEUED).count() == 3

        client.force_login(portal.admin)
        page = client.get(reverse("tasks-list", kwargs={"team": portal.team.code})).content
        assert b"code 1304" in page and b"IP allow-list" in page
        client.force_login(portal.member)
        page = client.get(reverse("tasks-list", kwargs={"team": portal.team.code})).content
        assert b"new tasks wait in the queue" in page

        # The admin allows the server's address at Kling and lifts the pause: all go out.
        fresh_sandbox.config.account_error_code = None
        assert account_unpause(account=account)
        make_due(*tasks)
        assert submission.tasks_submit_due() == 3
        for task in tasks:
            task.refresh_from_db()
            assert task.status in IN_FLIGHT and len(at_vendor(fresh_sandbox, task)) == 1


class TestMultiShotLookup:
    def test_the_sandbox_documents_no_lookup_by_external_task_id(
        self, portal, kling, fresh_sandbox
    ):
        task = multi_shot(portal)
        assert submission.task_submit(task_pk=task.pk) == submission.SUBMITTED
        task.refresh_from_db()
        client = kling_client_for(task.kling_account)
        headers = {"Authorization": f"Bearer {client.token()}"}
        base = fresh_sandbox.base_url + "/v1/general/ai-multi-shot/"
        assert httpx.get(base + task.task_id, headers=headers).json()["code"] == 0
        assert httpx.get(base + str(task.code), headers=headers).json()["code"] == 1203
        # The client finds it by external_task_id all the same: on the list pages.
        found = client.get_multi_shot(external_task_id=str(task.code))
        assert found.task_id == task.task_id

    def test_a_lost_create_answer_is_found_on_the_list_pages(
        self, portal, short_timeouts, fresh_sandbox
    ):
        task = multi_shot(portal)
        # The create answer comes too late (1.5 s > 0.8 s); by the time the client looks
        # the task up, the sandbox answers at once.
        fresh_sandbox.config.latency = 1.5
        timer = threading.Timer(0.4, fresh_sandbox.reset_faults)
        timer.start()
        try:
            assert submission.task_submit(task_pk=task.pk) == submission.SUBMITTED
        finally:
            timer.cancel()
        task.refresh_from_db()
        assert task.status in IN_FLIGHT | {Status.SUCCEED} and task.task_id
        assert len(at_vendor(fresh_sandbox, task)) == 1  # never created twice

    def test_an_unknown_outcome_waits_then_the_list_pages_find_it(
        self, portal, short_timeouts, fresh_sandbox
    ):
        task = multi_shot(portal)
        fresh_sandbox.config.latency = 1.0  # every answer too late, lookups included
        assert submission.task_submit(task_pk=task.pk) == submission.RETRY
        task.refresh_from_db()
        assert task.status == Status.QUEUED
        assert len(at_vendor(fresh_sandbox, task)) == 1  # it did reach the vendor

        fresh_sandbox.reset_faults()
        make_due(task)
        assert submission.task_submit(task_pk=task.pk) == submission.FOUND
        task.refresh_from_db()
        assert task.task_id == at_vendor(fresh_sandbox, task)[0]["task_id"]
        assert len(at_vendor(fresh_sandbox, task)) == 1


class TestIpAllowListWhilePolling:
    def test_1304_on_a_poll_pauses_the_account_and_the_task_waits(
        self, client, portal, kling, fresh_sandbox
    ):
        from tasks_app.polling import tasks_poll

        task = text2video(portal)
        assert submission.task_submit(task_pk=task.pk) == submission.SUBMITTED
        fresh_sandbox.config.account_error_code = 1304  # every request refused, queries too
        later = timezone.now() + timedelta(minutes=1)
        tasks_poll(now=later)
        account = KlingAccount.objects.operator_default()
        assert account.is_paused and account.paused_code == 1304
        task.refresh_from_db()
        assert task.status in IN_FLIGHT and task.error_code == 1304  # waits, not failed
        client.force_login(portal.admin)
        page = client.get(reverse("tasks-list", kwargs={"team": portal.team.code})).content
        assert b"code 1304" in page

        # Allowed again and the pause lifted: the next cycle finishes the task.
        fresh_sandbox.config.account_error_code = None
        account_unpause(account=account)
        fresh_sandbox.advance(5)
        tasks_poll(now=later + timedelta(minutes=10))
        task.refresh_from_db()
        assert task.status == Status.SUCCEED
