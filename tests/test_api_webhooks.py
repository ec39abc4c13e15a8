"""Outbound webhooks: a loopback receiver (allow-listed) gets a signed ``task.succeeded``
that verifies with ``standardwebhooks``; a failing receiver is retried with backoff and shows
in the delivery log; a loopback receiver not on the allow-list is never contacted."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import reverse
from django.utils import timezone
from standardwebhooks import Webhook

from klingweb.api.models import DeliveryStatus, WebhookDelivery
from klingweb.api.webhooks import webhook_endpoint_create, webhooks_retry_due
from tasks_app.models import Task
from tests.test_api import T2V, api, make_key, post_task
from tests.test_tasks_submission import NO_CALLBACKS_HERE, poll


class Receiver:
    """A loopback HTTP server recording POSTs and answering ``status``."""

    def __init__(self, status: int = 204):
        self.status = status
        self.requests: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.origin = self.url.rsplit("/", 1)[0]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def kling(kling_settings, monkeypatch, portal):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)
    kling_settings.PUBLIC_BASE_URL = NO_CALLBACKS_HERE
    return kling_settings


def finish_a_task(portal, sandbox, capture) -> Task:
    response = post_task(api(make_key(portal.team, "member")), T2V, capture)
    task = Task.objects.get(code=response.json()["code"])
    sandbox.advance(2)
    with capture(execute=True):
        poll(task)
    task.refresh_from_db()
    return task


def test_task_succeeded_is_delivered_signed(
    portal, kling, fresh_sandbox, receiver, django_capture_on_commit_callbacks
):
    kling.WEBHOOK_ALLOWED_ORIGINS = [receiver.origin]
    endpoint, secret = webhook_endpoint_create(
        team=portal.team, user=portal.admin, url=receiver.url, events=["task.succeeded"]
    )
    task = finish_a_task(portal, fresh_sandbox, django_capture_on_commit_callbacks)
    assert task.status == "succeed"
    assert len(receiver.requests) == 1
    headers, body = receiver.requests[0]
    payload = Webhook(secret).verify(body, headers)  # raises when the signature is wrong
    assert payload["type"] == "task.succeeded"
    assert payload["data"]["code"] == str(task.code) and payload["data"]["task_id"] == task.task_id
    assert headers["webhook-id"] == f"task.succeeded.{task.code}"
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.response_status == 204
    # The same event again (a duplicate callback, a re-run hook) sends nothing new.
    from klingweb.api.webhooks import tasks_finished_hook

    with django_capture_on_commit_callbacks(execute=True):
        tasks_finished_hook(tasks=[task])
    assert len(receiver.requests) == 1


def test_failing_endpoint_is_retried_with_backoff_and_logged(
    client, portal, kling, fresh_sandbox, receiver, django_capture_on_commit_callbacks
):
    kling.WEBHOOK_ALLOWED_ORIGINS = [receiver.origin]
    receiver.status = 500
    endpoint, secret = webhook_endpoint_create(
        team=portal.team, user=portal.admin, url=receiver.url, events=["task.succeeded"]
    )
    finish_a_task(portal, fresh_sandbox, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    assert delivery.response_status == 500
    first_wait = delivery.next_attempt_at - timezone.now()
    assert timedelta(seconds=20) < first_wait <= timedelta(seconds=40)
    assert webhooks_retry_due() == 0  # not due yet

    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert webhooks_retry_due() == 1
    delivery.refresh_from_db()
    assert delivery.attempts == 2 and delivery.status == DeliveryStatus.PENDING
    assert delivery.next_attempt_at - timezone.now() > first_wait  # the wait grew
    ids = {headers["webhook-id"] for headers, _ in receiver.requests}
    assert len(receiver.requests) == 2 and len(ids) == 1  # a retry keeps its event id

    receiver.status = 200
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    webhooks_retry_due()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.attempts == 3

    client.force_login(portal.admin)
    page = client.get(reverse("api-webhooks", kwargs={"team": portal.team.code})).content.decode()
    assert "answered HTTP 500" not in page  # the log shows the last attempt
    assert "Delivered" in page and receiver.url in page


def test_gives_up_after_a_day(portal, kling, receiver, django_capture_on_commit_callbacks):
    kling.WEBHOOK_ALLOWED_ORIGINS = [receiver.origin]
    receiver.status = 503
    endpoint, _ = webhook_endpoint_create(
        team=portal.team, user=portal.admin, url=receiver.url, events=["task.failed"]
    )
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint,
        event_id="task.failed.x",
        event_type="task.failed",
        payload={"type": "task.failed"},
        created_at=timezone.now() - timedelta(hours=23, minutes=59, seconds=50),
    )
    from klingweb.api.webhooks import webhook_deliver

    assert webhook_deliver(delivery.pk) == DeliveryStatus.FAILED
    delivery.refresh_from_db()
    assert delivery.next_attempt_at is None and delivery.response_status == 503


def test_loopback_not_on_the_allow_list_is_never_contacted(
    portal, kling, receiver, django_capture_on_commit_callbacks
):
    kling.WEBHOOK_ALLOWED_ORIGINS = []
    endpoint, _ = webhook_endpoint_create(
        team=portal.team, user=portal.admin, url=receiver.url, events=["task.succeeded"]
    )
    from klingweb.api.webhooks import webhook_send_test

    with django_capture_on_commit_callbacks(execute=True):
        webhook_send_test(endpoint=endpoint)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert receiver.requests == []
    assert delivery.status == DeliveryStatus.FAILED and "non-public" in delivery.last_error


def test_admin_adds_endpoint_secret_once_and_sends_test(
    client, portal, kling, receiver, django_capture_on_commit_callbacks
):
    kling.WEBHOOK_ALLOWED_ORIGINS = [receiver.origin]
    url = reverse("api-webhooks", kwargs={"team": portal.team.code})
    client.force_login(portal.admin)
    page = client.post(url, {"url": receiver.url, "events": ["task.succeeded", "task.failed"]})
    text = page.content.decode()
    secret = text.split('id="new-secret-text">')[1].split("<")[0]
    assert secret.startswith("whsec_") and secret not in client.get(url).content.decode()
    endpoint = portal.team.webhook_endpoints.get()
    test_url = reverse(
        "api-webhook-test", kwargs={"team": portal.team.code, "endpoint": endpoint.code}
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(test_url).status_code == 302
    headers, body = receiver.requests[0]
    assert Webhook(secret).verify(body, headers)["type"] == "webhook.test"
    client.force_login(portal.member)
    assert client.get(url).status_code == 403
    client.force_login(portal.outsider)
    assert client.post(test_url).status_code == 404
    assert json.loads(body)["data"]["endpoint"] == str(endpoint.code)


def test_rotated_secret_old_one_verifies_during_grace_only(
    client, portal, kling, receiver, django_capture_on_commit_callbacks
):
    from klingweb.api.webhooks import webhook_send_test

    kling.WEBHOOK_ALLOWED_ORIGINS = [receiver.origin]
    endpoint, old = webhook_endpoint_create(
        team=portal.team, user=portal.admin, url=receiver.url, events=["task.succeeded"]
    )
    client.force_login(portal.admin)
    rotate = reverse(
        "api-webhook-rotate", kwargs={"team": portal.team.code, "endpoint": endpoint.code}
    )
    page = client.post(rotate).content.decode()
    new = page.split('id="new-secret-text">')[1].split("<")[0]
    assert new.startswith("whsec_") and new != old
    endpoint.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        webhook_send_test(endpoint=endpoint)
    headers, body = receiver.requests[-1]
    assert Webhook(new).verify(body, headers) and Webhook(old).verify(body, headers)

    endpoint.previous_secret_until = timezone.now() - timedelta(seconds=1)
    endpoint.save()
    with django_capture_on_commit_callbacks(execute=True):
        webhook_send_test(endpoint=endpoint)
    headers, body = receiver.requests[-1]
    assert Webhook(new).verify(body, headers)
    with pytest.raises(Exception, match="(?i)signature"):
        Webhook(old).verify(body, headers)


def test_budget_threshold_is_delivered_signed_once_when_a_task_passes_80_percent(
    portal, kling, fresh_sandbox, receiver, django_capture_on_commit_callbacks
):
    from decimal import Decimal

    from tasks_app.budgets import budget_alerts_check
    from tasks_app.models import Budget, BudgetAlert

    kling.WEBHOOK_ALLOWED_ORIGINS = [receiver.origin]
    kling.KLING_CURRENCY = "EUR"
    endpoint, secret = webhook_endpoint_create(
        team=portal.team, user=portal.admin, url=receiver.url, events=["budget.threshold"]
    )
    # The text2video task is estimated and charged 1.5 units: 86 % of 1.75.
    budget = Budget.objects.create(team=portal.team, period="monthly", units=Decimal("1.75"))
    task = finish_a_task(portal, fresh_sandbox, django_capture_on_commit_callbacks)
    assert task.status == "succeed"
    assert 80 <= task.final_unit_deduction * 100 / budget.units < 90

    assert len(receiver.requests) == 1
    headers, body = receiver.requests[0]
    payload = Webhook(secret).verify(body, headers)  # raises when the signature is wrong
    assert payload["type"] == "budget.threshold"
    data = payload["data"]
    assert data["threshold"] == 80
    assert data["budget"]["code"] == str(budget.code)
    assert data["budget"]["label"] == "Team monthly budget"
    assert data["budget"]["measure"] == "units" and data["budget"]["period"] == "monthly"
    assert Decimal(data["spent_units"]) == task.final_unit_deduction
    assert Decimal(data["spent_money"]) > 0 and data["currency"] == "EUR"
    assert data["limit"] == "1.75"
    assert data["period_start"] < data["period_end"]
    assert headers["webhook-id"].startswith(f"budget.threshold.{budget.code}.")
    assert WebhookDelivery.objects.get(endpoint=endpoint).status == DeliveryStatus.SUCCEEDED

    # The periodic check, run again, announces nothing new: the alert fired once.
    with django_capture_on_commit_callbacks(execute=True):
        budget_alerts_check(team_pk=portal.team.pk)
    assert len(receiver.requests) == 1
    assert BudgetAlert.objects.filter(budget=budget).count() == 1


def test_a_task_kling_refuses_at_submit_is_delivered_as_task_failed(
    portal, kling, fresh_sandbox, receiver, django_capture_on_commit_callbacks
):
    kling.WEBHOOK_ALLOWED_ORIGINS = [receiver.origin]
    endpoint, secret = webhook_endpoint_create(
        team=portal.team, user=portal.admin, url=receiver.url, events=["task.failed"]
    )
    # The form lets an unknown video_id through; the sandbox refuses it (1201) at submit.
    body = {"family": "video_extend", "video_id": "no-such-video"}
    response = post_task(
        api(make_key(portal.team, "member")), body, django_capture_on_commit_callbacks
    )
    assert response.status_code == 202, response.content
    task = Task.objects.get(code=response.json()["code"])
    assert task.status == "error" and task.error_code == 1201

    assert len(receiver.requests) == 1
    headers, raw = receiver.requests[0]
    payload = Webhook(secret).verify(raw, headers)
    assert payload["type"] == "task.failed"
    assert payload["data"]["code"] == str(task.code) and payload["data"]["status"] == "error"
    assert payload["data"]["error"]["code"] == 1201
    assert headers["webhook-id"] == f"task.failed.{task.code}"
    # A second refusal attempt of the same task (a late job) moves nothing and sends nothing.
    from tasks_app.submission import task_refuse

    with django_capture_on_commit_callbacks(execute=True):
        assert not task_refuse(task_pk=task.pk, code=1201, message="again", request_id="r")
    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 1
    assert len(receiver.requests) == 1
