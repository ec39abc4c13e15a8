"""The callback receiver: tokens, Standard Webhooks signatures, bad bodies, and duplicate,
out-of-order and late deliveries (kling-docs/callback-protocol.txt, KLING_API.md §4)."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core import signing
from django.urls import reverse
from django.utils import timezone
from standardwebhooks import Webhook

from tasks_app import submission
from tasks_app.callbacks import callback_token_for, callback_url_for
from tasks_app.models import Deduction, Status, Task
from tests.jobs_support import CallbackJobs, callback_jobs_for
from tests.test_tasks_submission import deliver_callbacks, queued

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.fixture(autouse=True)
def fast_and_isolated(settings, tmp_path):
    """Cheap password hashing; uploads in a temporary MEDIA_ROOT; no webhook secret."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.KLING_WEBHOOK_SECRET = ""
    settings.PUBLIC_BASE_URL = "https://portal.example.com"


@pytest.fixture
def task(portal) -> Task:
    """A task Kling has accepted (task_id known)."""
    return Task.objects.create(
        team=portal.team,
        creator=portal.member,
        family="text2video",
        status=Status.SUBMITTED,
        task_id="kt-1",
        model_name="kling-v1-6",
        mode="std",
    )


def body_for(
    task: Task, status: str, *, units: str | None = None, updated: int = 1_700_000_000_000, **extra
) -> dict:
    """A callback body as the vendor sends it."""
    body = {
        "task_id": task.task_id,
        "task_status": status,
        "task_status_msg": "",
        "created_at": 1_700_000_000_000,
        "updated_at": updated,
        "task_info": {"external_task_id": str(task.code)},
        "task_result": {},
    }
    if status == "succeed":
        body["task_result"] = {
            "videos": [{"id": "v-1", "url": "https://cdn.example/v.mp4", "duration": "5"}]
        }
    if units is not None:
        body["final_unit_deduction"] = units
    body.update(extra)
    return body


def callback_path(task: Task) -> str:
    return reverse("tasks-callback", kwargs={"token": callback_token_for(task)})


#: Set for each test by ``confirmations_run_inline``.
_jobs: CallbackJobs | None = None


@pytest.fixture(autouse=True)
def confirmations_run_inline(monkeypatch, django_capture_on_commit_callbacks, kling_settings):
    """Each POST runs what the receiver enqueues on commit (the query confirming a final
    callback) at once, as an idle cluster would. Kling is the sandbox: it does not know
    this module's made-up ``kt-1``, so such a final callback cannot be confirmed and is
    applied as it came, marked for the poller (``needs_confirmation``)."""
    global _jobs
    kling_settings.PUBLIC_BASE_URL = "https://portal.example.com"
    _jobs = callback_jobs_for(monkeypatch, django_capture_on_commit_callbacks)
    yield
    _jobs = None


def post(client, path: str, body, **headers):
    return _jobs.post(client, path, body, **headers)


class TestTokens:
    def test_callback_url_carries_a_signed_token(self, task, settings):
        url = callback_url_for(task)
        assert url.startswith("https://portal.example.com/kling/callback/")
        assert str(task.code) in url
        settings.PUBLIC_BASE_URL = ""
        assert callback_url_for(task) is None

    def test_good_token_applies_the_body(self, client, task):
        started = time.monotonic()
        response = post(client, callback_path(task), body_for(task, "processing"))
        assert time.monotonic() - started < 1.0
        assert response.status_code == 200 and response.json() == {"ok": True}
        task.refresh_from_db()
        assert task.status == Status.PROCESSING
        assert task.events.get().source == "callback"

    @pytest.mark.parametrize(
        "token",
        [
            "garbage",
            "00000000-0000-0000-0000-000000000000:forged",
        ],
    )
    def test_bad_token_is_404(self, client, task, token):
        response = post(
            client,
            reverse("tasks-callback", kwargs={"token": token}),
            body_for(task, "succeed", units="5"),
        )
        assert response.status_code == 404
        task.refresh_from_db()
        assert task.status == Status.SUBMITTED

    def test_token_signed_for_another_purpose_is_404(self, client, task):
        other = signing.Signer(salt="something-else").sign(str(task.code))
        assert (
            post(
                client,
                reverse("tasks-callback", kwargs={"token": other}),
                body_for(task, "succeed"),
            ).status_code
            == 404
        )

    def test_tampered_token_of_another_task_is_404(self, client, task, portal):
        other = Task.objects.create(team=portal.team, family="text2video", status=Status.SUBMITTED)
        signature = callback_token_for(task).split(":", 1)[1]
        forged = f"{other.code}:{signature}"
        assert (
            post(
                client,
                reverse("tasks-callback", kwargs={"token": forged}),
                body_for(other, "succeed"),
            ).status_code
            == 404
        )

    def test_token_of_a_deleted_task_is_404(self, client, task):
        path = callback_path(task)
        task.delete()
        assert post(client, path, {"task_status": "succeed"}).status_code == 404

    def test_token_is_bound_to_its_task(self, client, task, portal):
        other = Task.objects.create(
            team=portal.team, family="text2video", status=Status.SUBMITTED, task_id="kt-other"
        )
        # A body about another task posted with this task's token changes neither.
        response = post(client, callback_path(task), body_for(other, "succeed", units="9"))
        assert response.status_code == 400
        for t in (task, other):
            t.refresh_from_db()
            assert t.status == Status.SUBMITTED
        assert not Deduction.objects.exists()

    def test_external_task_id_must_match_when_task_id_unknown(self, client, portal):
        fresh = Task.objects.create(team=portal.team, family="text2video", status=Status.QUEUED)
        body = body_for(fresh, "submitted", task_id="kt-new")
        body["task_info"]["external_task_id"] = "someone-else"
        assert post(client, callback_path(fresh), body).status_code == 400
        body["task_info"]["external_task_id"] = str(fresh.code)
        assert post(client, callback_path(fresh), body).status_code == 200
        fresh.refresh_from_db()
        assert fresh.task_id == "kt-new" and fresh.status == Status.SUBMITTED

    def test_get_is_405(self, client, task):
        assert client.get(callback_path(task)).status_code == 405


class TestBadBodies:
    @pytest.mark.parametrize(
        "raw",
        [
            b"{not json",
            b"[1, 2, 3]",
            b'"succeed"',
            b"{}",
            b'{"task_status": 5}',
            b'{"task_status": "exploded"}',
            b"\xff\xfe",
        ],
    )
    def test_malformed_body_is_400_and_changes_nothing(self, client, task, raw):
        response = post(client, callback_path(task), raw)
        assert response.status_code == 400
        task.refresh_from_db()
        assert task.status == Status.SUBMITTED
        assert not task.events.exists()

    def test_body_over_1_mb_is_413(self, client, task):
        body = body_for(task, "succeed", units="5", padding="x" * (1024 * 1024))
        assert post(client, callback_path(task), body).status_code == 413
        task.refresh_from_db()
        assert task.status == Status.SUBMITTED


class TestWebhookSignature:
    def _signed(self, body: dict, *, secret=SECRET, at: datetime | None = None, msg_id="msg_1"):
        data = json.dumps(body)
        at = at or datetime.now(tz=UTC)
        signature = Webhook(secret).sign(msg_id, at, data)
        headers = {
            "HTTP_WEBHOOK_ID": msg_id,
            "HTTP_WEBHOOK_TIMESTAMP": str(int(at.timestamp())),
            "HTTP_WEBHOOK_SIGNATURE": signature,
        }
        return data, headers

    def test_signed_callback_accepted(self, client, task, settings):
        settings.KLING_WEBHOOK_SECRET = SECRET
        data, headers = self._signed(body_for(task, "processing"))
        assert post(client, callback_path(task), data, **headers).status_code == 200
        task.refresh_from_db()
        assert task.status == Status.PROCESSING

    def test_unsigned_callback_refused(self, client, task, settings):
        settings.KLING_WEBHOOK_SECRET = SECRET
        assert post(client, callback_path(task), body_for(task, "processing")).status_code == 401
        task.refresh_from_db()
        assert task.status == Status.SUBMITTED

    def test_wrong_secret_tampered_body_or_old_timestamp_refused(self, client, task, settings):
        settings.KLING_WEBHOOK_SECRET = SECRET
        other_secret = "whsec_" + base64.b64encode(b"z" * 32).decode()
        data, headers = self._signed(body_for(task, "processing"), secret=other_secret)
        assert post(client, callback_path(task), data, **headers).status_code == 401
        data, headers = self._signed(body_for(task, "processing"))
        assert (
            post(
                client, callback_path(task), data.replace("processing", "succeed"), **headers
            ).status_code
            == 401
        )
        data, headers = self._signed(
            body_for(task, "processing"), at=datetime.now(tz=UTC) - timedelta(minutes=10)
        )
        assert post(client, callback_path(task), data, **headers).status_code == 401
        headers["HTTP_WEBHOOK_SIGNATURE"] = "garbage-without-comma"
        assert post(client, callback_path(task), data, **headers).status_code == 401
        task.refresh_from_db()
        assert task.status == Status.SUBMITTED


class TestDeliveryOrder:
    def test_duplicate_succeed_records_one_deduction(self, client, task):
        path = callback_path(task)
        for _ in range(3):
            assert post(client, path, body_for(task, "succeed", units="12.5")).status_code == 200
        task.refresh_from_db()
        assert task.status == Status.SUCCEED
        assert task.final_unit_deduction == Decimal("12.5")
        assert Deduction.objects.filter(task=task).count() == 1
        assert task.events.filter(status=Status.SUCCEED).count() == 1

    def test_out_of_order_never_moves_backwards(self, client, task):
        path = callback_path(task)
        assert (
            post(
                client, path, body_for(task, "succeed", units="3", updated=1_700_000_003_000)
            ).status_code
            == 200
        )
        assert (
            post(client, path, body_for(task, "processing", updated=1_700_000_001_000)).status_code
            == 200
        )
        assert (
            post(client, path, body_for(task, "submitted", updated=1_700_000_000_000)).status_code
            == 200
        )
        task.refresh_from_db()
        assert task.status == Status.SUCCEED
        assert list(task.events.values_list("status", flat=True)) == ["succeed"]

    def test_processing_then_late_submitted(self, client, task):
        path = callback_path(task)
        post(client, path, body_for(task, "processing"))
        post(client, path, body_for(task, "submitted"))
        task.refresh_from_db()
        assert task.status == Status.PROCESSING

    def test_failed_after_succeed_is_ignored(self, client, task):
        path = callback_path(task)
        post(client, path, body_for(task, "succeed", units="3"))
        post(client, path, body_for(task, "failed", units="0", task_status_msg="late"))
        task.refresh_from_db()
        assert task.status == Status.SUCCEED and task.task_status_msg == ""
        assert Deduction.objects.filter(task=task).count() == 1

    def test_late_callback_for_a_refused_task_changes_nothing(self, client, portal):
        refused = Task.objects.create(
            team=portal.team, family="text2video", status=Status.ERROR, error_code=1201
        )
        assert (
            post(
                client,
                callback_path(refused),
                body_for(refused, "succeed", units="3", task_id="kt-x"),
            ).status_code
            == 200
        )
        refused.refresh_from_db()
        assert refused.status == Status.ERROR
        assert not Deduction.objects.exists()


class TestWithTheSandbox:
    def test_duplicated_sandbox_callbacks_charge_once(
        self, client, portal, kling_settings, fresh_sandbox
    ):
        kling_settings.PUBLIC_BASE_URL = "http://127.0.0.1:9"
        fresh_sandbox.config.callback_duplicate_rate = 1.0
        task = queued(portal.team, portal.member)
        assert submission.task_submit(task_pk=task.pk) == submission.SUBMITTED
        task.refresh_from_db()
        fresh_sandbox.advance(2)
        statuses = deliver_callbacks(client, fresh_sandbox, task, jobs=_jobs)
        assert len(statuses) >= 4 and set(statuses) == {200}
        # And once more, in reverse order, as a late redelivery would.
        for entry in reversed(
            [e for e in fresh_sandbox.callbacks_log if e["task_id"] == task.task_id]
        ):
            post(client, callback_path(task), entry["body"])
        task.refresh_from_db()
        assert task.status == Status.SUCCEED
        assert Deduction.objects.filter(task=task).count() == 1
        assert task.events.filter(status=Status.SUCCEED).count() == 1
        assert task.finished_at <= timezone.now()


@pytest.mark.django_db(transaction=True)
def test_the_sandbox_calls_the_running_receiver(live_server, portal, kling_settings, fresh_sandbox):
    """Real delivery: the sandbox POSTs to the portal's callback URL over loopback HTTP."""
    kling_settings.PUBLIC_BASE_URL = live_server.url
    task = queued(portal.team, portal.member)  # its submission job runs inline on commit
    task.refresh_from_db()
    assert task.status == Status.SUBMITTED, task.error_message
    fresh_sandbox.advance(2)
    assert fresh_sandbox.wait_callbacks(10)
    delivered = [e for e in fresh_sandbox.callbacks_log if e["task_id"] == task.task_id]
    assert delivered and {e["http_status"] for e in delivered} == {200}
    task.refresh_from_db()
    assert task.status == Status.SUCCEED
    assert Deduction.objects.filter(task=task).count() == 1
