"""Team API keys and the idempotency records of ``POST /api/v1/tasks``."""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


def new_key_prefix() -> str:
    """8 random hex characters: the public, looked-up part of a key (``kw_<prefix>_…``)."""
    return secrets.token_hex(4)


class ApiKeyScope(models.TextChoices):
    """What a key may do: ``read`` (GET only) or ``write`` (read + create tasks/elements).

    A write key only writes while its creator is still a member (not a viewer) of its team.
    """

    READ = "read", "Read only"
    WRITE = "write", "Read and write"


class ApiKey(models.Model):
    """A team API key, acting for the member who created it (``created_by``).

    The key itself (``kw_<prefix>_<secret>``, 43 random URL-safe characters of secret: 256
    bits) is shown once; only ``secret_hash`` (SHA-256 hex of the whole key) is stored,
    with ``prefix`` (8 characters, unique, for the lookup) and ``last4`` (for lists).
    ``last_used_at`` is refreshed at most once a minute; ``revoked_at`` set means 401.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="api_keys")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=10, choices=ApiKeyScope.choices, default=ApiKeyScope.WRITE)
    prefix = models.CharField(max_length=16, unique=True, default=new_key_prefix)
    last4 = models.CharField(max_length=4)
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"API key {self.name} (…{self.last4}) of {self.team}"

    @property
    def is_active(self) -> bool:
        """True until revoked."""
        return self.revoked_at is None


class IdempotencyRecord(models.Model):
    """One ``Idempotency-Key`` used with ``POST /api/v1/tasks`` or ``POST /api/v1/elements``:
    the SHA-256 of the request it came with (files included) and the task it created (for
    an element, the task that creates it). Unique per (API key, idempotency key)."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    body_hash = models.CharField(max_length=64)
    task = models.ForeignKey("tasks_app.Task", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="one_task_per_idempotency_key")
        ]

    def __str__(self) -> str:
        return f"Idempotency-Key {self.key} → task {self.task_id}"


class WebhookEvent(models.TextChoices):
    """Events a team's webhook endpoint may subscribe to (``type`` of the payload)."""

    TASK_SUCCEEDED = "task.succeeded", "Task succeeded"
    TASK_FAILED = "task.failed", "Task failed (or refused)"
    TASK_LOST = "task.lost", "Task lost at vendor (or ended by hand)"
    BUDGET_THRESHOLD = "budget.threshold", "Budget threshold reached (80, 90, 100 %)"


#: The type of the "send test" delivery (always sent, whatever the subscription).
WEBHOOK_TEST_EVENT = "webhook.test"


class WebhookEndpoint(models.Model):
    """A team's outbound webhook endpoint: ``url`` (http/https), ``events`` (a list of
    ``WebhookEvent`` values), and its Standard Webhooks signing secret (``whsec_…``,
    Fernet-encrypted in ``secret_encrypted``; shown once when made or rotated). After a
    rotation deliveries carry a second signature made with the previous secret until
    ``previous_secret_until``, so receivers can switch secrets without losing events."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(
        "accounts.Team", on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    secret_encrypted = models.TextField(help_text="Fernet token of the whsec_ secret.")
    # After a rotation the old secret also signs until ``previous_secret_until`` (grace).
    previous_secret_encrypted = models.TextField(blank=True)
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"Webhook {self.url} of {self.team}"


class DeliveryStatus(models.TextChoices):
    """``pending`` (not yet answered 2xx; retried while ``next_attempt_at`` is set),
    ``succeeded`` (answered 2xx), ``failed`` (given up after ~24 h or refused address)."""

    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Delivered"
    FAILED = "failed", "Given up"


class WebhookDelivery(models.Model):
    """One event for one endpoint; unique per (endpoint, ``event_id``), so an event is never
    sent twice except as a retry of this row. ``attempts``: requests made;
    ``response_status``/``last_error``/``duration_ms`` (milliseconds): of the last one."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event_id = models.CharField(max_length=100)
    event_type = models.CharField(max_length=40)
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    response_status = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="one_delivery_per_event")
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_due")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} → {self.endpoint_id} ({self.status})"
