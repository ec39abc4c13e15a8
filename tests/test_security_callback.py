"""Attacks on the callback receiver (``POST /kling/callback/<token>/``).

Forged, cross-task, replayed and expired tokens; oversized bodies refused by their
``Content-Length`` before a byte is read (in-process, and over a real socket); malformed
bodies of every kind answered 400, never 500; Standard Webhooks signatures that do not match.
Each refusal changes nothing; a replayed delivery is harmless (one ledger row).
"""

from __future__ import annotations

import base64
import http.client
import json
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from standardwebhooks import Webhook

from tasks_app.callbacks import (
    CALLBACK_SALT,
    callback_token_expired,
    callback_token_for,
)
from tasks_app.models import Deduction, Status, Task
from tests.jobs_support import CallbackJobs, callback_jobs_for

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()


@pytest.fixture(autouse=True)
def isolated(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.KLING_WEBHOOK_SECRET = ""
    settings.PUBLIC_BASE_URL = "https://portal.example.com"
    settings.KLING_CALLBACK_MAX_AGE = timedelta(days=3)


def make_task(portal, task_id: str = "kt-sec-1", team=None) -> Task:
    return Task.objects.create(
        team=team or portal.team,
        creator=portal.member,
        family="text2video",
        status=Status.SUBMITTED,
        task_id=task_id,
        model_name="kling-v1-6",
        mode="std",
        submitted_at=timezone.now(),
    )


def body(task: Task, status: str = "succeed", units: str | None = "10", **extra) -> dict:
    data = {
        "task_id": task.task_id,
        "task_status": status,
        "task_status_msg": "",
        "created_at": 1_700_000_000_000,
        "updated_at": 1_700_000_100_000,
        "task_info": {"external_task_id": str(task.code)},
        "task_result": {},
    }
    if status == "succeed":
        data["task_result"] = {
            "videos": [{"id": "v-1", "url": "https://cdn.example/v.mp4", "duration": "5"}]
        }
    if units is not None:
        data["final_unit_deduction"] = units
    data.update(extra)
    return data


def path_for(task: Task, token: str | None = None) -> str:
    return reverse("tasks-callback", kwargs={"token": token or callback_token_for(task)})


#: Set for each test by ``confirmations_run_inline``.
_jobs: CallbackJobs | None = None


@pytest.fixture(autouse=True)
def confirmations_run_inline(monkeypatch, django_capture_on_commit_callbacks, kling_settings):
    """Each POST runs what the receiver enqueues on commit (the query confirming a final
    callback) at once. Kling is the sandbox, which does not know these made-up tasks: a
    final callback is then applied as it came (``needs_confirmation``)."""
    global _jobs
    kling_settings.PUBLIC_BASE_URL = "https://portal.example.com"
    _jobs = callback_jobs_for(monkeypatch, django_capture_on_commit_callbacks)
    yield
    _jobs = None


def post(client, path: str, data, **headers):
    return _jobs.post(client, path, data, **headers)


def state(task: Task) -> tuple:
    task.refresh_from_db()
    return (task.status, task.result, task.final_unit_deduction, task.deductions.count())


# --- Tokens -----------------------------------------------------------------------------------


class TestTokens:
    def test_forged_tokens_are_404_and_change_nothing(self, client, portal):
        task = make_task(portal)
        before = state(task)
        code = str(task.code)
        good = callback_token_for(task)
        forged = [
            code,  # no signature
            f"{code}:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # made-up signature
            good[:-1] + ("A" if good[-1] != "A" else "B"),  # one character changed
            signing.Signer(salt="another.salt").sign(code),  # signed for another purpose
            signing.Signer(key="not-our-secret-key", salt=CALLBACK_SALT).sign(code),
            signing.dumps(code, salt=CALLBACK_SALT),  # another signing format
            "x" * 4000,
            "%00",
        ]
        for token in forged:
            response = post(client, f"/kling/callback/{token}/", body(task))
            assert response.status_code == 404, token
        assert state(task) == before

    def test_token_of_one_task_cannot_touch_another(self, client, portal):
        mine = make_task(portal, "kt-a")
        theirs = make_task(portal, "kt-b", team=portal.other_team)
        before = state(theirs)
        # Task A's token with task B's vendor ids in the body: refused (400), nothing moves.
        for data in (
            body(theirs),
            body(mine, task_id="kt-b"),
            body(mine, task_info={"external_task_id": str(theirs.code)}),
        ):
            assert post(client, path_for(mine), data).status_code == 400
        assert state(theirs) == before
        assert state(mine)[3] == 0
        # A token whose signed code is swapped for another task's code does not verify.
        sig = callback_token_for(mine).split(":", 1)[1]
        swapped = f"{theirs.code}:{sig}"
        assert post(client, path_for(theirs, swapped), body(theirs)).status_code == 404

    def test_replayed_delivery_is_harmless(self, client, portal):
        task = make_task(portal)
        data = body(task, units="12.5")
        statuses = [post(client, path_for(task), data).status_code for _ in range(5)]
        assert statuses == [200] * 5
        task.refresh_from_db()
        assert task.status == Status.SUCCEED
        assert Deduction.objects.filter(task=task).count() == 1
        # A replay of an earlier status after the end moves nothing back, bills nothing.
        assert post(client, path_for(task), body(task, "processing", units=None)).status_code == 200
        assert state(task)[0] == Status.SUCCEED
        assert Deduction.objects.filter(task=task).count() == 1

    def test_expired_token_is_404(self, client, portal, settings):
        task = make_task(portal)
        Task.objects.filter(pk=task.pk).update(
            created_at=timezone.now() - timedelta(days=3, minutes=1),
            submitted_at=timezone.now() - timedelta(days=3, minutes=1),
        )
        task.refresh_from_db()
        assert callback_token_expired(task)
        before = state(task)
        assert post(client, path_for(task), body(task)).status_code == 404
        assert state(task) == before
        # The age counts from the later of creation and submission (a task held back by a
        # pause is submitted, and its token handed out, later).
        Task.objects.filter(pk=task.pk).update(submitted_at=timezone.now() - timedelta(days=2))
        assert post(client, path_for(task), body(task)).status_code == 200
        # The limit is a setting.
        settings.KLING_CALLBACK_MAX_AGE = timedelta(days=1)
        assert post(client, path_for(task), body(task)).status_code == 404

    def test_fresh_token_within_the_limit_is_accepted(self, client, portal):
        task = make_task(portal)
        Task.objects.filter(pk=task.pk).update(
            created_at=timezone.now() - timedelta(days=2, hours=23),
            submitted_at=None,
        )
        assert post(client, path_for(task), body(task, "processing", units=None)).status_code == 200

    def test_other_methods_are_405(self, client, portal):
        task = make_task(portal)
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            assert client.generic(method, path_for(task)).status_code == 405


# --- Bodies -----------------------------------------------------------------------------------


class ExplodingInput:
    """A WSGI input that fails the test if anything reads it."""

    def read(self, *args):
        raise AssertionError("the body was read")

    readline = read


class TestBodies:
    def test_declared_length_over_1_mb_is_413_without_reading(self, portal):
        task = make_task(portal)
        client = Client()
        for length in (1024 * 1024 + 1, 50 * 1024 * 1024, 10**12):
            response = client.generic(
                "POST",
                path_for(task),
                b"",
                content_type="application/json",
                CONTENT_LENGTH=str(length),
                **{"wsgi.input": ExplodingInput()},
            )
            assert response.status_code == 413, length
        assert state(task)[0] == Status.SUBMITTED

    def test_real_body_over_1_mb_is_413(self, client, portal):
        task = make_task(portal)
        padded = json.dumps({**body(task), "pad": "x" * (1024 * 1024)})
        assert post(client, path_for(task), padded).status_code == 413
        assert state(task)[0] == Status.SUBMITTED

    @pytest.mark.parametrize(
        "raw",
        [
            b"",
            b"not json",
            b"\xff\xfe\x00garbage",
            b"[]",
            b'"a string"',
            b"null",
            b"{}",
            b'{"task_status": 5}',
            b'{"task_status": "hacked"}',
            b'{"task_status": "succeed", "task_result": "not an object"}',
            b'{"task_status": "succeed", "task_result": {"videos": "nope"}}',
            b'{"task_status": "succeed", "task_result": {"videos": [1, null, "x"]}}',
            b'{"task_status": "succeed", "final_unit_deduction": "abc"}',
            b'{"task_status": "succeed", "final_unit_deduction": {"a": 1}}',
            b'{"task_status": "succeed", "created_at": "yesterday", "updated_at": []}',
            b'{"task_status": "succeed", "task_info": "x"}',
            b'{"task_status": "succeed", "task_id": 12345}',
            b"[" * 100_000 + b"]" * 100_000,
            b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
            b'{"task_status": "succeed", "final_unit_deduction": "1e999999"}',
            b'{"task_status": "succeed", "final_unit_deduction": "NaN"}',
            b'{"task_status": "succeed", "final_unit_deduction": "-5"}',
        ],
    )
    def test_malformed_bodies_are_refused_cleanly(self, portal, raw):
        task = make_task(portal)
        client = Client(raise_request_exception=False)
        before = state(task)
        response = post(client, path_for(task), raw)
        assert response.status_code in (200, 400), (raw[:80], response.status_code)
        if response.status_code == 400:
            assert state(task) == before
        else:
            # Accepted only as a well-formed task object; never a wrong bill.
            task.refresh_from_db()
            assert all(d.units >= 0 for d in task.deductions.all())


# --- Standard Webhooks ------------------------------------------------------------------------


def signed(data: dict, secret: str = SECRET, *, msg_id: str = "msg_1", at=None):
    raw = json.dumps(data)
    when = at or timezone.now()
    signature = Webhook(secret).sign(msg_id, when, raw)
    headers = {
        "HTTP_WEBHOOK_ID": msg_id,
        "HTTP_WEBHOOK_TIMESTAMP": str(int(when.timestamp())),
        "HTTP_WEBHOOK_SIGNATURE": signature,
    }
    return raw, headers


class TestWebhookSignature:
    @pytest.fixture(autouse=True)
    def secret(self, settings):
        settings.KLING_WEBHOOK_SECRET = SECRET

    def test_valid_signature_is_accepted(self, client, portal):
        task = make_task(portal)
        raw, headers = signed(body(task, "processing", units=None))
        assert post(client, path_for(task), raw, **headers).status_code == 200

    @pytest.mark.parametrize(
        "tamper",
        [
            "unsigned",
            "other secret",
            "body changed",
            "id changed",
            "timestamp changed",
            "too old",
            "from the future",
            "garbage signature",
            "empty signature",
            "not a number timestamp",
            "v2 scheme",
        ],
    )
    def test_signature_that_does_not_match_is_401(self, client, portal, tamper):
        task = make_task(portal)
        data = body(task)
        raw, headers = signed(data)
        if tamper == "unsigned":
            headers = {}
        elif tamper == "other secret":
            raw, headers = signed(data, OTHER_SECRET)
        elif tamper == "body changed":
            raw = raw.replace('"10"', '"1000"')
        elif tamper == "id changed":
            headers["HTTP_WEBHOOK_ID"] = "msg_2"
        elif tamper == "timestamp changed":
            headers["HTTP_WEBHOOK_TIMESTAMP"] = str(int(headers["HTTP_WEBHOOK_TIMESTAMP"]) - 1)
        elif tamper == "too old":
            raw, headers = signed(data, at=timezone.now() - timedelta(minutes=10))
        elif tamper == "from the future":
            raw, headers = signed(data, at=timezone.now() + timedelta(minutes=10))
        elif tamper == "garbage signature":
            headers["HTTP_WEBHOOK_SIGNATURE"] = "v1,@@@not-base64@@@ nonsense"
        elif tamper == "empty signature":
            headers["HTTP_WEBHOOK_SIGNATURE"] = ""
        elif tamper == "not a number timestamp":
            headers["HTTP_WEBHOOK_TIMESTAMP"] = "soon"
        elif tamper == "v2 scheme":
            headers["HTTP_WEBHOOK_SIGNATURE"] = headers["HTTP_WEBHOOK_SIGNATURE"].replace(
                "v1,", "v2,"
            )
        client = Client(raise_request_exception=False)
        before = state(task)
        assert post(client, path_for(task), raw, **headers).status_code == 401
        assert state(task) == before

    def test_a_signed_body_of_one_task_replayed_to_another_is_refused(self, client, portal):
        first, second = make_task(portal, "kt-1"), make_task(portal, "kt-2")
        raw, headers = signed(body(first))
        assert post(client, path_for(second), raw, **headers).status_code == 400
        assert state(second)[0] == Status.SUBMITTED

    def test_replayed_signed_delivery_bills_once(self, client, portal):
        task = make_task(portal)
        raw, headers = signed(body(task, units="7"))
        for _ in range(3):
            assert post(client, path_for(task), raw, **headers).status_code == 200
        assert Deduction.objects.filter(task=task).count() == 1


# --- Over a real socket -------------------------------------------------------------------------


def test_oversized_callback_is_refused_before_the_body_is_sent(live_server, portal):
    """The receiver answers 413 from the headers alone: the client never sends the body."""
    task = make_task(portal)
    url = urlsplit(live_server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    started = time.monotonic()
    conn.putrequest("POST", path_for(task))
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(200 * 1024 * 1024))
    conn.endheaders(b"{")
    response = conn.getresponse()
    assert response.status == 413, response.read()[:3000]
    assert time.monotonic() - started < 5
    conn.close()
    assert state(task)[0] == Status.SUBMITTED
