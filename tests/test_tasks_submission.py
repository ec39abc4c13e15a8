"""Submission against the Kling sandbox over real HTTP: the happy path end to end, and the
error paths of KLING_API.md §2 (1201 refusal, 1303 then success, 1102 and credential pauses,
a timeout resolved by the lookup on external_task_id)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from django.urls import reverse
from django.utils import timezone

from klingweb.accounts import services as account_services
from klingweb.accounts.models import KlingAccount, Region
from klingweb.accounts.services import account_set_secret, kling_client_for
from tasks_app import submission
from tasks_app.families import get_family
from tasks_app.models import IN_FLIGHT, Deduction, Status, Task
from tasks_app.services import task_apply_remote
from tests.conftest import SANDBOX_AK, SANDBOX_SK
from tests.jobs_support import CallbackJobs
from tests.test_tasks_forms import png_upload

NO_CALLBACKS_HERE = "http://127.0.0.1:9"  # nothing listens: the sandbox logs the bodies


@pytest.fixture(autouse=True)
def fast_and_isolated(settings, tmp_path):
    """Cheap password hashing; uploads in a temporary MEDIA_ROOT."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def sync_jobs(monkeypatch):
    """django-q2 runs enqueued jobs inline (``Conf.SYNC``)."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture
def kling(kling_settings, sync_jobs, portal):
    """The operator default account on the sandbox, callbacks on, jobs inline."""
    kling_settings.PUBLIC_BASE_URL = NO_CALLBACKS_HERE
    return kling_settings


def create(client, team, family, data, django_capture_on_commit_callbacks) -> Task:
    """POST the create form as a member would, running the on-commit job; return the task."""
    before = set(Task.objects.values_list("pk", flat=True))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("tasks-create", kwargs={"team": team.code, "family": family}), data
        )
    assert response.status_code == 302, response.content.decode()[-2000:]
    return Task.objects.exclude(pk__in=before).get()


def queued(team, user, family="text2video", **params) -> Task:
    """A queued task built the way the form would, without running its job."""
    body = {"model_name": "kling-v1-6", "prompt": "a fox", "mode": "std", "duration": "5"}
    body.update(params)
    return submission.task_queue(
        team=team, user=user, family=family, params=body, prompt=body.get("prompt", "")
    )


def poll(task: Task) -> None:
    """What the poller does for one task: a single query, applied."""
    task.refresh_from_db()
    remote = kling_client_for(task.kling_account).get_task(
        get_family(task.family).client_family, task_id=task.task_id
    )
    task_apply_remote(task_pk=task.pk, remote=remote, source="poll")


def deliver_callbacks(client, sandbox, task: Task, *, jobs: CallbackJobs) -> list[int]:
    """Post the callbacks the sandbox tried to deliver for ``task`` to our receiver, each
    followed by the jobs it enqueued (the confirming query), as a cluster would run them."""
    sandbox.wait_callbacks(5)
    statuses = []
    for entry in sandbox.callbacks_log:
        if entry["task_id"] == task.task_id:
            response = jobs.post(client, urlsplit(entry["url"]).path, entry["body"])
            statuses.append(response.status_code)
    return statuses


def sandbox_tasks(sandbox, task: Task) -> list[dict]:
    return [t for t in sandbox.tasks_snapshot() if t["external_task_id"] == str(task.code)]


def make_due(task: Task) -> None:
    """Bring a queued task's retry time (``retry_at``) to just before now."""
    Task.objects.filter(pk=task.pk).update(retry_at=timezone.now() - timedelta(seconds=1))


# -- the happy path ---------------------------------------------------------------------


class TestEndToEnd:
    def test_form_to_succeed_through_callbacks(
        self, client, portal, kling, fresh_sandbox, django_capture_on_commit_callbacks
    ):
        client.force_login(portal.member)
        task = create(
            client,
            portal.team,
            "text2video",
            {
                "model_name": "kling-v1-6",
                "prompt": "a red fox",
                "mode": "std",
                "aspect_ratio": "16:9",
                "duration": "5",
            },
            django_capture_on_commit_callbacks,
        )
        task.refresh_from_db()
        assert task.status == Status.SUBMITTED
        assert task.task_id and task.submit_attempts == 1 and task.claimed_until is None
        assert task.next_poll_at > timezone.now()
        remote = sandbox_tasks(fresh_sandbox, task)
        assert len(remote) == 1 and remote[0]["callback_url"].startswith(
            NO_CALLBACKS_HERE + "/kling/callback/"
        )

        fresh_sandbox.advance(2)
        jobs = CallbackJobs(django_capture_on_commit_callbacks)
        assert set(deliver_callbacks(client, fresh_sandbox, task, jobs=jobs)) == {200}
        task.refresh_from_db()
        assert task.status == Status.SUCCEED
        assert task.result["videos"][0]["url"]
        assert Deduction.objects.filter(task=task).count() == 1
        statuses = list(task.events.values_list("status", flat=True))
        assert statuses == ["queued", "submitted", "processing", "succeed"]
        page = client.get(
            reverse("tasks-detail", kwargs={"team": portal.team.code, "code": task.code})
        )
        assert "<video controls" in page.content.decode()

    def test_every_family_is_accepted_by_the_sandbox(
        self, client, portal, kling, fresh_sandbox, django_capture_on_commit_callbacks
    ):
        client.force_login(portal.member)
        forms = {
            "avatar": {"mode": "std", "image_file": png_upload(), "audio_id": "tts-1"},
            "multi_shot": {"frontal_image_file": png_upload(300, 700)},
            "text2video": {
                "model_name": "kling-v1-6",
                "prompt": "p",
                "mode": "pro",
                "aspect_ratio": "9:16",
                "duration": "10",
                "cfg_scale": "0.4",
            },
            "image2video": {
                "model_name": "kling-v1-6",
                "mode": "std",
                "duration": "5",
                "image_url": "https://example.com/a.png",
                "image_tail_file": png_upload(),
            },
        }
        tasks = {
            family: create(client, portal.team, family, data, django_capture_on_commit_callbacks)
            for family, data in forms.items()
        }
        for family, task in tasks.items():
            task.refresh_from_db()
            assert task.status == Status.SUBMITTED, (family, task.error_code, task.error_message)
        fresh_sandbox.advance(2)
        for task in tasks.values():
            poll(task)
            task.refresh_from_db()
            assert task.status == Status.SUCCEED
        # A succeeded v1.6 video can be extended from its own page.
        source = tasks["text2video"]
        video_id = source.result["videos"][0]["id"]
        page = client.get(
            reverse("tasks-detail", kwargs={"team": portal.team.code, "code": source.code})
        )
        assert f"?video_id={video_id}" in page.content.decode()
        extension = create(
            client,
            portal.team,
            "video_extend",
            {"source_video": video_id, "prompt": "more"},
            django_capture_on_commit_callbacks,
        )
        extension.refresh_from_db()
        assert extension.status == Status.SUBMITTED
        fresh_sandbox.advance(2)
        poll(extension)
        extension.refresh_from_db()
        assert extension.status == Status.SUCCEED

    def test_vendor_failure_is_shown_and_uncharged(self, portal, kling, fresh_sandbox):
        task = queued(portal.team, portal.member, prompt="sandbox:fail please")
        assert submission.task_submit(task_pk=task.pk) == submission.SUBMITTED
        fresh_sandbox.advance(2)
        poll(task)
        task.refresh_from_db()
        assert task.status == Status.FAILED and task.task_status_msg
        assert not Deduction.objects.filter(task=task).exists()

    def test_second_submit_does_nothing(self, portal, kling, fresh_sandbox):
        task = queued(portal.team, portal.member)
        assert submission.task_submit(task_pk=task.pk) == submission.SUBMITTED
        assert submission.task_submit(task_pk=task.pk) == submission.NOT_CLAIMED
        assert len(sandbox_tasks(fresh_sandbox, task)) == 1

    def test_claimed_task_is_left_alone(self, portal, kling, fresh_sandbox):
        task = queued(portal.team, portal.member)
        Task.objects.filter(pk=task.pk).update(claimed_until=timezone.now() + timedelta(minutes=1))
        assert submission.task_submit(task_pk=task.pk) == submission.NOT_CLAIMED
        assert sandbox_tasks(fresh_sandbox, task) == []

    def test_lost_job_is_picked_up_by_the_safety_net(self, portal, kling, fresh_sandbox):
        task = queued(portal.team, portal.member)  # its on-commit job never ran
        assert submission.tasks_submit_due() == 0  # not due yet (grace period)
        make_due(task)
        assert submission.tasks_submit_due() == 1
        task.refresh_from_db()
        assert task.status == Status.SUBMITTED


# -- refusals and retries ---------------------------------------------------------------


class TestErrors:
    def test_1201_refusal_ends_the_task_with_the_vendor_message(
        self, client, portal, kling, fresh_sandbox, django_capture_on_commit_callbacks
    ):
        client.force_login(portal.member)
        # The form lets an unknown pasted video_id through; the vendor decides (and refuses).
        task = create(
            client,
            portal.team,
            "video_extend",
            {"video_id": "no-such-video"},
            django_capture_on_commit_callbacks,
        )
        task.refresh_from_db()
        assert task.status == Status.ERROR
        assert task.error_code == 1201
        assert "video_id" in task.error_message
        assert task.error_request_id
        assert task.finished_at is not None and task.next_poll_at is None
        assert list(task.events.values_list("status", flat=True)) == ["queued", "error"]
        body = client.get(
            reverse("tasks-detail", kwargs={"team": portal.team.code, "code": task.code})
        ).content.decode()
        assert "code 1201" in body and task.error_request_id in body
        assert not Deduction.objects.filter(task=task).exists()

    def test_1303_keeps_it_queued_with_growing_backoff_then_succeeds(
        self, portal, kling, fresh_sandbox
    ):
        fresh_sandbox.config.create_concurrency_rate = 1.0
        task = queued(portal.team, portal.member)
        delays = []
        for _ in range(3):
            make_due(task)
            before = timezone.now()
            assert submission.task_submit(task_pk=task.pk) == submission.RETRY
            task.refresh_from_db()
            assert task.status == Status.QUEUED and task.claimed_until is None
            assert task.error_code == 1303
            delays.append((task.retry_at - before).total_seconds())
        assert 2 <= delays[0] < delays[1] < delays[2]
        assert sandbox_tasks(fresh_sandbox, task) == []

        fresh_sandbox.reset_faults()
        make_due(task)
        assert submission.tasks_submit_due() == 1
        task.refresh_from_db()
        assert task.status == Status.SUBMITTED and task.error_code is None
        assert task.submit_attempts == 4
        assert len(sandbox_tasks(fresh_sandbox, task)) == 1

    def test_5000_is_retried_later(self, client, portal, kling, fresh_sandbox):
        fresh_sandbox.config.error_rate = 1.0
        task = queued(portal.team, portal.member)
        assert submission.task_submit(task_pk=task.pk) == submission.RETRY
        task.refresh_from_db()
        assert task.status == Status.QUEUED and task.error_code in (5000, 5001)
        assert task.retry_at > timezone.now() and task.next_poll_at is None
        # Its page says why it waits and when it is tried again.
        client.force_login(portal.member)
        body = client.get(
            reverse("tasks-detail", kwargs={"team": portal.team.code, "code": task.code})
        ).content.decode()
        when = timezone.localtime(task.retry_at).strftime("%H:%M:%S")
        assert "Waiting to be sent" in body and f"retried after {when}" in body

    def test_server_error_waits_end_once_kling_answers_again(self, portal, kling, fresh_sandbox):
        fresh_sandbox.config.error_rate = 1.0
        failed = queued(portal.team, portal.member)
        assert submission.task_submit(task_pk=failed.pk) == submission.RETRY
        fresh_sandbox.reset_faults()
        fresh_sandbox.config.create_concurrency_rate = 1.0
        limited = queued(portal.team, portal.member)
        assert submission.task_submit(task_pk=limited.pk) == submission.RETRY
        fresh_sandbox.reset_faults()
        # Both wait out a long backoff (as after several failures: up to 5 minutes).
        later = timezone.now() + timedelta(minutes=5)
        Task.objects.filter(pk__in=[failed.pk, limited.pk]).update(retry_at=later)
        fresh = queued(portal.team, portal.member)
        make_due(fresh)

        assert submission.tasks_submit_due() == 1  # Kling accepts the fresh one again...
        failed.refresh_from_db()
        limited.refresh_from_db()
        assert failed.retry_at <= timezone.now(), "...so the 5xx wait ends now"
        assert limited.retry_at == later, "a 1303 wait keeps its backoff"
        assert submission.tasks_submit_due() == 1
        failed.refresh_from_db()
        limited.refresh_from_db()
        assert failed.status == Status.SUBMITTED and failed.retry_at is None
        assert limited.status == Status.QUEUED and limited.error_code == 1303

    def test_late_refusal_of_an_accepted_task_changes_nothing(self, portal, kling, fresh_sandbox):
        task = queued(portal.team, portal.member)
        assert submission.task_submit(task_pk=task.pk) == submission.SUBMITTED
        assert not submission.task_refuse(
            task_pk=task.pk, code=1201, message="too late", request_id="req-late"
        )
        task.refresh_from_db()
        assert task.status == Status.SUBMITTED and task.error_code is None
        assert list(task.events.values_list("status", flat=True)) == ["queued", "submitted"]

    def test_missing_upload_is_refused(self, portal, kling, fresh_sandbox):
        task = queued(portal.team, portal.member, family="multi_shot")
        Task.objects.filter(pk=task.pk).update(
            params={
                "element_frontal_image": {"$file": f"uploads/{portal.team.code}/image/gone.png"}
            }
        )
        assert submission.task_submit(task_pk=task.pk) == submission.REFUSED
        task.refresh_from_db()
        assert task.status == Status.ERROR and "missing from storage" in task.error_message


# -- pauses -----------------------------------------------------------------------------


class _Answer1102(BaseHTTPRequestHandler):
    """A Kling look-alike whose every answer is 1102 (resource pack used up)."""

    calls = 0

    def _answer(self):
        type(self).calls += 1
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps(
            {
                "code": 1102,
                "message": "resource pack exhausted",
                "request_id": "req-1102",
                "data": None,
            }
        ).encode()
        self.send_response(429)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def broke_kling():
    """A loopback server answering 1102 to everything (the sandbox has no such knob)."""
    _Answer1102.calls = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer1102)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def team_account(team, base_url, access_key, secret_key) -> KlingAccount:
    account = KlingAccount(
        team=team,
        name="Team keys",
        region=Region.CUSTOM,
        custom_base_url=base_url,
        access_key=access_key,
    )
    account_set_secret(account=account, secret_key=secret_key)
    account.save()
    team.kling_account = account
    team.save()
    return account


class TestPauses:
    def test_1102_pauses_the_account_and_admins_see_why(
        self, client, portal, kling, fresh_sandbox, broke_kling
    ):
        account = team_account(
            portal.team, broke_kling, "ak-broke", "sk-broke-0123456789abcdef0123456789"
        )
        task = queued(portal.team, portal.member)
        assert submission.task_submit(task_pk=task.pk) == submission.PAUSED
        account.refresh_from_db()
        assert account.is_paused and account.paused_code == 1102
        assert account.paused_request_id == "req-1102"
        assert "resource pack is used up" in account.paused_message
        task.refresh_from_db()
        assert task.status == Status.QUEUED and task.claimed_until is None

        # Nothing more is sent while paused, not even by the safety net.
        calls = _Answer1102.calls
        make_due(task)
        assert submission.tasks_submit_due() == 0
        assert submission.task_submit(task_pk=task.pk) == submission.PAUSED
        assert _Answer1102.calls == calls

        client.force_login(portal.admin)
        body = client.get(reverse("tasks-list", kwargs={"team": portal.team.code})).content.decode()
        assert "code 1102" in body and "req-1102" in body

        # The admin fixes the account (here: real keys on the sandbox) and clears the pause.
        account.custom_base_url = fresh_sandbox.base_url
        account.access_key = SANDBOX_AK
        account_set_secret(account=account, secret_key=SANDBOX_SK)
        account.paused_at = None
        account.save()
        make_due(task)
        assert submission.tasks_submit_due() == 1
        task.refresh_from_db()
        assert task.status == Status.SUBMITTED

    def test_wrong_credentials_pause_with_the_reason(self, portal, kling, fresh_sandbox):
        account = team_account(
            portal.team, fresh_sandbox.base_url, SANDBOX_AK, "not-the-secret-0123456789abcdef012345"
        )
        task = queued(portal.team, portal.member)
        assert submission.task_submit(task_pk=task.pk) == submission.PAUSED
        account.refresh_from_db()
        assert account.is_paused and 1000 <= account.paused_code <= 1004
        assert "credentials" in account.paused_message
        task.refresh_from_db()
        assert task.status == Status.QUEUED
        assert sandbox_tasks(fresh_sandbox, task) == []


# -- timeouts ---------------------------------------------------------------------------


@pytest.fixture
def short_timeouts(kling, monkeypatch):
    """Fresh clients with a short read timeout (the shared client cache is set aside)."""
    monkeypatch.setattr(account_services, "_clients", {})
    kling.KLING_READ_TIMEOUT = 0.8
    return kling


class TestTimeouts:
    def test_timeout_is_resolved_by_the_lookup_not_a_second_create(
        self, portal, short_timeouts, fresh_sandbox
    ):
        task = queued(portal.team, portal.member)
        # The create answer comes too late (1.5 s > 0.8 s); by the time the client looks the
        # task up on external_task_id the sandbox answers at once.
        fresh_sandbox.config.latency = 1.5
        timer = threading.Timer(0.4, fresh_sandbox.reset_faults)
        timer.start()
        try:
            assert submission.task_submit(task_pk=task.pk) == submission.SUBMITTED
        finally:
            timer.cancel()
        task.refresh_from_db()
        # The sandbox clock runs on meanwhile: the task may already be further along.
        assert task.status in IN_FLIGHT | {Status.SUCCEED} and task.task_id
        assert len(sandbox_tasks(fresh_sandbox, task)) == 1

    def test_unknown_outcome_waits_then_our_lookup_finds_it(
        self, portal, short_timeouts, fresh_sandbox
    ):
        task = queued(portal.team, portal.member)
        fresh_sandbox.config.latency = 1.0  # every answer too late, lookups included
        assert submission.task_submit(task_pk=task.pk) == submission.RETRY
        task.refresh_from_db()
        assert task.status == Status.QUEUED and task.error_code is None
        assert len(sandbox_tasks(fresh_sandbox, task)) == 1  # it did reach the vendor

        fresh_sandbox.reset_faults()
        make_due(task)
        assert submission.task_submit(task_pk=task.pk) == submission.FOUND
        task.refresh_from_db()
        assert task.status in IN_FLIGHT | {Status.SUCCEED}
        assert task.task_id == sandbox_tasks(fresh_sandbox, task)[0]["task_id"]
        assert len(sandbox_tasks(fresh_sandbox, task)) == 1


# -- the retry_at migration ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_migration_moves_queued_retry_times_to_retry_at(portal):
    """Tasks queued before 0002 kept their retry time in ``next_poll_at``: after the
    migration a queued task is retried when it was going to be, and an in-flight task's
    poll time is left alone."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before = [("tasks_app", "0001_initial")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps.get_model("tasks_app", "Task")
        when = timezone.now() + timedelta(minutes=3)
        queued_pk = old.objects.create(
            team_id=portal.team.pk, family="text2video", status="queued", next_poll_at=when
        ).pk
        flying_pk = old.objects.create(
            team_id=portal.team.pk, family="text2video", status="submitted", next_poll_at=when
        ).pk
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())  # back to the full schema
    waiting = Task.objects.get(pk=queued_pk)
    flying = Task.objects.get(pk=flying_pk)
    assert waiting.retry_at == when and waiting.next_poll_at is None
    assert flying.next_poll_at == when and flying.retry_at is None
    assert list(Task.objects.due_for_submit(when)) == [waiting]
