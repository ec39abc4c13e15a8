"""Outbound webhooks: a team's endpoints hear about its tasks and budgets, signed with
Standard Webhooks. Events: ``task.succeeded``, ``task.failed`` (failed at Kling, or refused
by Kling when sent), ``task.lost`` (Kling no longer knows it, or an admin ended it by hand),
``budget.threshold`` (80/90/100 % of a budget, once per period).

- ``tasks_finished_hook(tasks=)``: named in ``settings.KLINGWEB_TASK_FINISHED_HOOKS`` and
  called by ``tasks_app.services.task_apply_remote`` inside its transaction when a task
  finishes (by ``tasks_apply_remote`` once for a poll cycle's chunk of finished tasks, and by
  ``tasks_app.submission.task_refuse`` when Kling refuses the create call);
  it only records deliveries (``webhooks_emit``) and enqueues their jobs on commit, so the
  task pipeline never waits for a receiver.
- ``budget_alert_hook(team=, status=, alerts=)``: named in
  ``settings.KLINGWEB_BUDGET_ALERT_HOOKS`` and called by ``tasks_app.budgets.
  budget_alerts_mail`` where the alert mail goes out (in the transaction that claims the
  alerts, so each is announced once): one ``budget.threshold`` event per threshold.
- ``webhook_deliver(delivery_pk)``: the job. Claims the row (conditional update of
  ``next_attempt_at``), POSTs the JSON payload with ``webhook-id`` (the event id, the same
  on every retry), ``webhook-timestamp`` and ``webhook-signature`` (``standardwebhooks``),
  10 s timeout, no redirects. 2xx → ``succeeded``. Anything else → retried with
  ``klingweb.kling.backoff.backoff_delay`` (30 s doubling to 1 h, +0–25 % jitter) until
  ``RETRY_FOR`` (24 h) after the event, then ``failed``.
- ``webhooks_retry_due()``: the periodic job (``KLINGWEB_PLUGIN_SCHEDULES``, every minute)
  delivering the retries that are due.

Addresses: the same guard as result fetching (``klingweb.security.PinnedTransport``): a
receiver must resolve to public addresses only, unless its origin is named in
``settings.WEBHOOK_ALLOWED_ORIGINS`` (operator allow-list, e.g. ``http://127.0.0.1:9000``).
A refused address is not retried.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from base64 import b64encode
from datetime import datetime, timedelta
from typing import Any

import httpx
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from klingweb.accounts.services import secret_decrypt, secret_encrypt
from klingweb.api.models import (
    WEBHOOK_TEST_EVENT,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from klingweb.kling.backoff import backoff_delay
from klingweb.security import FetchRefused, PinnedTransport, url_origin

log = logging.getLogger(__name__)

RETRY_FOR = timedelta(hours=24)
RETRY_BASE_SECONDS = 30.0
RETRY_MAX_SECONDS = 3600.0
TIMEOUT_SECONDS = 10.0
#: A claimed delivery is left alone this long (a worker killed mid-request frees it then).
CLAIM_SECONDS = 60
DELIVER_JOB = "klingweb.api.webhooks.webhook_deliver"
#: How long the previous secret still signs after a rotation.
ROTATE_GRACE = timedelta(hours=24)


def allowed_origins() -> frozenset:
    """Origins a webhook may reach on a private or loopback address (operator allow-list
    ``settings.WEBHOOK_ALLOWED_ORIGINS``)."""
    urls = getattr(settings, "WEBHOOK_ALLOWED_ORIGINS", []) or []
    return frozenset(origin for u in urls if (origin := url_origin(u)) is not None)


def webhook_endpoint_create(
    *, team: Any, user: Any, url: str, events: list[str]
) -> tuple[WebhookEndpoint, str]:
    """Add an endpoint to ``team``; returns it and its ``whsec_`` secret (shown once).

    Raises ``ValueError`` for a URL that is not http(s) or for unknown events."""
    if url_origin(url) is None:
        raise ValueError("The URL must start with http:// or https:// and name a host.")
    unknown = set(events) - set(WebhookEvent.values)
    if unknown or not events:
        raise ValueError(f"Choose events among {', '.join(WebhookEvent.values)}.")
    secret = _new_secret()
    endpoint = WebhookEndpoint.objects.create(
        team=team,
        url=url,
        events=sorted(set(events)),
        secret_encrypted=secret_encrypt(secret),
        created_by=user,
    )
    return endpoint, secret


def webhook_secret_rotate(*, endpoint: WebhookEndpoint, grace: timedelta = ROTATE_GRACE) -> str:
    """Give ``endpoint`` a new signing secret and return it (shown once); the old one keeps
    signing too (a second signature) for ``grace`` (default 24 h)."""
    secret = _new_secret()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_until = timezone.now() + grace
    endpoint.secret_encrypted = secret_encrypt(secret)
    endpoint.save(
        update_fields=["secret_encrypted", "previous_secret_encrypted", "previous_secret_until"]
    )
    return secret


def _new_secret() -> str:
    return "whsec_" + b64encode(secrets.token_bytes(32)).decode("ascii")


def webhooks_emit(
    *,
    team_id: int,
    event_type: str,
    event_id: str,
    data: dict,
    endpoints: list[WebhookEndpoint] | None = None,
) -> list[WebhookDelivery]:
    """Record one delivery of event ``event_id`` per subscribed endpoint of the team (or per
    endpoint of ``endpoints``), and enqueue their jobs on commit. An (endpoint, event id)
    already recorded is skipped: an event is never sent twice. Returns the new rows."""
    if endpoints is None:
        endpoints = [
            e for e in WebhookEndpoint.objects.filter(team_id=team_id) if event_type in e.events
        ]
    payload = {
        "type": event_type,
        "timestamp": timezone.now().isoformat(),
        "data": json.loads(json.dumps(data, cls=DjangoJSONEncoder)),
    }
    made = []
    for endpoint in endpoints:
        delivery, created = WebhookDelivery.objects.get_or_create(
            endpoint=endpoint,
            event_id=event_id,
            defaults={"event_type": event_type, "payload": payload},
        )
        if created:
            made.append(delivery)
            _enqueue_on_commit(delivery.pk)
    return made


def _enqueue_on_commit(delivery_pk: int) -> None:
    from django_q.tasks import async_task

    transaction.on_commit(lambda: async_task(DELIVER_JOB, delivery_pk))


def tasks_finished_hook(*, tasks: list[Any]) -> None:
    """``KLINGWEB_TASK_FINISHED_HOOKS`` entry, called with the tasks that have just finished
    (one, or a poll cycle's chunk): ``task.succeeded`` for a succeeded task, ``task.failed``
    for a failed or refused one, ``task.lost`` for one lost at the vendor (or ended by hand;
    a later vendor answer then sends its own event), to the subscribed endpoints of each
    task's team (one query for all the tasks' teams). Event id ``<type>.<task code>``.
    ``data``: code, family, status, vendor task_id, final_unit_deduction (units, decimal
    string), error code/message, finished_at."""
    endpoints: dict[int, list[WebhookEndpoint]] = {}
    for endpoint in WebhookEndpoint.objects.filter(team_id__in={t.team_id for t in tasks}):
        endpoints.setdefault(endpoint.team_id, []).append(endpoint)
    for task in tasks:
        if task.team_id in endpoints:
            _task_event(task, endpoints[task.team_id])


def _task_event(task: Any, endpoints: list[WebhookEndpoint]) -> None:
    if task.status == "succeed":
        event_type = WebhookEvent.TASK_SUCCEEDED
    elif task.status == "lost":
        event_type = WebhookEvent.TASK_LOST
    else:
        event_type = WebhookEvent.TASK_FAILED
    data = {
        "code": str(task.code),
        "family": task.family,
        "status": task.status,
        "task_id": task.task_id,
        "final_unit_deduction": (
            None if task.final_unit_deduction is None else str(task.final_unit_deduction)
        ),
        "error": (
            {"code": task.error_code, "message": task.error_message}
            if task.error_code is not None or task.error_message
            else None
        ),
        "finished_at": task.finished_at,
    }
    webhooks_emit(
        team_id=task.team_id,
        event_type=str(event_type),
        event_id=f"{event_type}.{task.code}",
        data=data,
        endpoints=[e for e in endpoints if str(event_type) in e.events],
    )


def budget_alert_hook(*, team: Any, status: Any, alerts: list[Any]) -> None:
    """``KLINGWEB_BUDGET_ALERT_HOOKS`` entry: one ``budget.threshold`` event per newly
    announced alert (``tasks_app.models.BudgetAlert``: a budget, a period, a threshold), to
    the team's subscribed endpoints. Event id ``budget.threshold.<budget code>.<period start
    as an epoch second>.<threshold>``: the same threshold of the same period never makes two
    events.

    ``data``: ``budget`` (``code``, ``label`` e.g. "Team monthly budget", ``period`` daily|
    weekly|monthly, ``measure`` units|money, ``member`` username or None), ``threshold``
    (percent: 80, 90 or 100), ``period_start``/``period_end`` (ISO datetimes, the team's time
    zone; the end is the reset moment), ``spent_units`` and ``spent_money`` (the ledger of
    the period, Kling units and money, decimal strings), ``limit`` (decimal string, in the
    budget's measure), ``currency`` (``KLING_CURRENCY``, the money's currency), ``at`` (when
    the threshold was recorded)."""
    from tasks_app.budgets import ledger_totals
    from tasks_app.prices import currency

    endpoints = [
        e
        for e in WebhookEndpoint.objects.filter(team_id=team.pk)
        if WebhookEvent.BUDGET_THRESHOLD in e.events
    ]
    if not endpoints:
        return
    budget = status.budget
    units, money = ledger_totals(budget=budget, start=status.period_start, end=status.resets_at)
    for alert in sorted(alerts, key=lambda a: a.threshold):
        data = {
            "budget": {
                "code": str(budget.code),
                "label": status.label,
                "period": budget.period,
                "measure": budget.measure,
                "member": budget.member.get_username() if budget.member_id else None,
            },
            "threshold": alert.threshold,
            "period_start": status.period_start,
            "period_end": status.resets_at,
            "spent_units": _decimal_text(units),
            "spent_money": _decimal_text(money),
            "limit": _decimal_text(budget.units),
            "currency": currency(),
            "at": alert.created_at,
        }
        start = int(alert.period_start.timestamp())
        webhooks_emit(
            team_id=team.pk,
            event_type=str(WebhookEvent.BUDGET_THRESHOLD),
            event_id=f"{WebhookEvent.BUDGET_THRESHOLD}.{budget.code}.{start}.{alert.threshold}",
            data=data,
            endpoints=endpoints,
        )


def _decimal_text(value: Any) -> str:
    """A Decimal as plain text without exponent or trailing zeros: ``"80"``, ``"11.2"``."""
    return format(value.normalize(), "f")


def webhook_send_test(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A ``webhook.test`` delivery to ``endpoint`` (the "send test" button)."""
    event_id = f"{WEBHOOK_TEST_EVENT}.{secrets.token_hex(8)}"
    return webhooks_emit(
        team_id=endpoint.team_id,
        event_type=WEBHOOK_TEST_EVENT,
        event_id=event_id,
        data={"endpoint": str(endpoint.code)},
        endpoints=[endpoint],
    )[0]


def _claim(delivery_pk: int, now: datetime) -> bool:
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    return (
        WebhookDelivery.objects.filter(pk=delivery_pk, status=DeliveryStatus.PENDING)
        .filter(due)
        .update(next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS))
        == 1
    )


def webhook_deliver(delivery_pk: int) -> str | None:
    """Send delivery ``delivery_pk`` once (the job); returns its new status, or None when
    it was not due or another worker holds it. Never raises for a receiver's failure."""
    now = timezone.now()
    if not _claim(delivery_pk, now):
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_pk)
    endpoint = delivery.endpoint
    body = json.dumps(delivery.payload, separators=(",", ":"))
    signer = Webhook(secret_decrypt(endpoint.secret_encrypted))
    headers = {
        "content-type": "application/json",
        "user-agent": "Klingweb-Webhooks/1",
        "webhook-id": delivery.event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign(delivery.event_id, now, body),
    }
    if endpoint.previous_secret_encrypted and (endpoint.previous_secret_until or now) > now:
        previous = Webhook(secret_decrypt(endpoint.previous_secret_encrypted))
        # Standard Webhooks: several space-separated signatures, any one may verify.
        headers["webhook-signature"] += " " + previous.sign(delivery.event_id, now, body)
    status, error, give_up = None, "", False
    started = time.monotonic()
    try:
        with httpx.Client(
            transport=PinnedTransport(allowed_origins()),
            timeout=TIMEOUT_SECONDS,
            follow_redirects=False,
        ) as client:
            response = client.post(endpoint.url, content=body.encode("utf-8"), headers=headers)
        status = response.status_code
        if not 200 <= status < 300:
            error = f"answered HTTP {status}"
    except FetchRefused as exc:
        error, give_up = str(exc), True
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    duration_ms = int((time.monotonic() - started) * 1000)
    attempts = delivery.attempts + 1
    fields: dict[str, Any] = {
        "attempts": attempts,
        "response_status": status,
        "last_error": error,
        "duration_ms": duration_ms,
    }
    if not error:
        fields.update(status=DeliveryStatus.SUCCEEDED, next_attempt_at=None, delivered_at=now)
    else:
        wait = backoff_delay(
            attempts, base=RETRY_BASE_SECONDS, cap=RETRY_MAX_SECONDS, jitter=(1.0, 1.25)
        )
        retry_at = now + timedelta(seconds=wait)
        if give_up or retry_at > delivery.created_at + RETRY_FOR:
            fields.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
        else:
            fields.update(next_attempt_at=retry_at)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**fields)
    return fields.get("status", DeliveryStatus.PENDING)


def webhooks_retry_due(*, limit: int = 200) -> int:
    """Deliver the pending deliveries whose retry time has come (the periodic job);
    returns how many were tried."""
    now = timezone.now()
    pks = list(
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    for pk in pks:
        try:
            webhook_deliver(pk)
        except Exception:
            log.exception("webhook delivery %s failed", pk)
    return len(pks)
