"""The callback receiver: Kling POSTs a task object here each time a task's status changes.

Protocol: ``kling-docs/callback-protocol.txt`` and KLING_API.md §4 "Callbacks". The
``callback_url`` sent with each create call carries a token signed with Django's signing
(``SECRET_KEY``, a salt of its own) and bound to one task's ``code``, so a callback can only
ever touch the task it was issued for. A token expires ``settings.KLING_CALLBACK_MAX_AGE``
(3 days) after the later of the task's creation and submission (``callback_token_expired``):
the vendor calls back within minutes or hours of a status change, and after that the poller
alone keeps the task up to date, so a token that leaks later opens nothing. When ``settings.KLING_WEBHOOK_SECRET`` is set, the
Standard Webhooks signature (``webhook-id``/``webhook-timestamp``/``webhook-signature``)
is verified too. The body goes to ``task_apply_remote`` (idempotent, monotonic, one
deduction), so duplicates, out-of-order and late deliveries change nothing wrong.
Polling stays the fallback: delivery is at least once and retries are undocumented.
"""

from __future__ import annotations

import binascii
import json
import logging
import uuid
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from klingweb.kling import parse_task
from tasks_app.models import VENDOR_STATUSES, Deduction, Task
from tasks_app.services import task_apply_remote

log = logging.getLogger(__name__)

#: Salt of callback tokens: a token signed for any other purpose does not verify here.
CALLBACK_SALT = "tasks_app.callbacks.task-callback"
#: Largest callback body accepted, in bytes (a task object is a few kB).
CALLBACK_MAX_BYTES = 1024 * 1024
#: Above any real task's cost (Kling credit units) and below the ledger column's 12 digits.
MAX_UNITS = 10**8
#: Decimal places of a cost: the ledger's (``Deduction.units``), which holds the vendor's
#: ``final_unit_deduction`` exactly.
UNITS_PLACES = Deduction._meta.get_field("units").decimal_places


def callback_token_for(task: Task) -> str:
    """The signed token of ``task``'s callback URL: ``"<task code>:<signature>"``.

    Signed with ``django.core.signing.Signer`` (``SECRET_KEY``, salt ``CALLBACK_SALT``). The
    token carries no time stamp: its expiry is computed from the task's own times
    (``callback_token_expired``), so tokens already given to the vendor keep their form.
    """
    return signing.Signer(salt=CALLBACK_SALT).sign(str(task.code))


def callback_token_expired(task: Task, *, now=None) -> bool:
    """True when ``task``'s callback token is too old to be accepted: more than
    ``settings.KLING_CALLBACK_MAX_AGE`` (a ``timedelta``, default 3 days) has passed since the
    later of ``created_at`` and ``submitted_at`` (a task held back by a pause is submitted,
    and its token handed to the vendor, later than it was created)."""
    max_age = getattr(settings, "KLING_CALLBACK_MAX_AGE", None) or timedelta(days=3)
    issued = max(t for t in (task.created_at, task.submitted_at) if t is not None)
    return (now or timezone.now()) - issued > max_age


def task_for_token(token: str) -> Task | None:
    """The task a callback token was issued for, or None (bad or forged token, gone task,
    expired token: ``callback_token_expired``)."""
    try:
        code = signing.Signer(salt=CALLBACK_SALT).unsign(token)
        code = uuid.UUID(code)
    except (signing.BadSignature, ValueError):
        return None
    task = Task.objects.filter(code=code).first()
    if task is not None and callback_token_expired(task):
        log.info("callback for task %s: token expired", task.code)
        return None
    return task


def callback_url_for(task: Task) -> str | None:
    """The absolute ``callback_url`` for ``task``, or None without ``PUBLIC_BASE_URL``
    (then the poller alone learns the task's progress)."""
    base = (getattr(settings, "PUBLIC_BASE_URL", "") or "").rstrip("/")
    if not base:
        return None
    return base + reverse("tasks-callback", kwargs={"token": callback_token_for(task)})


def _signature_ok(request: HttpRequest, body: bytes) -> bool:
    """Verify the Standard Webhooks signature with ``KLING_WEBHOOK_SECRET``."""
    from standardwebhooks import Webhook, WebhookVerificationError

    webhook = Webhook(settings.KLING_WEBHOOK_SECRET)
    headers = {
        name: request.headers.get(name, "")
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    try:
        webhook.verify(body, headers, json_parse=False)
    except (WebhookVerificationError, ValueError, binascii.Error, UnicodeDecodeError):
        return False
    return True


def callback_units(value: object) -> Decimal | None:
    """The vendor's ``final_unit_deduction`` (a string, KLING_API.md §4; a JSON number is
    accepted too) as a ``Decimal`` of Kling units; None when absent (``null`` or ``""``).

    Raises ``ValueError`` unless it is a finite number in [0, ``MAX_UNITS``) with at most
    ``UNITS_PLACES`` (8) decimal places: ``"NaN"``, ``"Infinity"``, ``"-1"``, ``"1.000000001"``,
    ``true``, ``"ten"``. The typed parser (``klingweb.kling.to_decimal``) reads such values
    as "no cost", which would let a task succeed with nothing charged.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("not a number")
    try:
        units = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError("not a number") from None
    if not units.is_finite() or not 0 <= units < MAX_UNITS:
        raise ValueError("not a finite number of units in range")
    if units != units.quantize(Decimal(1).scaleb(-UNITS_PLACES)):
        raise ValueError(f"more than {UNITS_PLACES} decimal places")
    return units


def _bad(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"ok": False, "error": message}, status=status)


@csrf_exempt
def task_callback(request: HttpRequest, token: str) -> HttpResponse:
    """POST /kling/callback/<token>/: apply a vendor callback body to the token's task.

    Answers: 200 ``{"ok": true}`` once applied (also when it changed nothing: a duplicate,
    an older status, a finished task); 405 for another method; 404 for a bad, forged or
    expired token (``callback_token_expired``); 413 for a body over 1 MB; 401 when a webhook secret is configured and the
    Standard Webhooks signature is missing or wrong; 400 for a body that is not a JSON
    object with a known ``task_status`` (submitted|processing|succeed|failed), or whose ``task_id`` / ``external_task_id`` names
    another task, or whose ``final_unit_deduction`` is not a finite number in [0, 10^8) with at
    most 3 decimal places (``callback_units``). Nothing changes unless the answer is 200.

    No session or CSRF (the vendor is the caller); the token is the authority.
    """
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    task = task_for_token(token)
    if task is None:
        raise Http404("Unknown callback.")
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > CALLBACK_MAX_BYTES:
        return _bad("Body too large.", status=413)
    body = request.body
    if len(body) > CALLBACK_MAX_BYTES:
        return _bad("Body too large.", status=413)
    if getattr(settings, "KLING_WEBHOOK_SECRET", "") and not _signature_ok(request, body):
        log.warning("callback for task %s: bad webhook signature", task.code)
        return _bad("Bad webhook signature.", status=401)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        return _bad("Body is not JSON.")
    if not isinstance(data, dict) or not isinstance(data.get("task_status"), str):
        return _bad("Body is not a task object (no task_status).")
    if data["task_status"] not in VENDOR_STATUSES:
        return _bad("Unknown task_status.")

    try:
        units = callback_units(data.get("final_unit_deduction"))
    except ValueError as exc:
        log.warning("callback for task %s: final_unit_deduction refused (%s)", task.code, exc)
        return _bad(
            f"final_unit_deduction is not a plausible number of units ({exc}): a finite, "
            f"non-negative number below 10^8 with at most {UNITS_PLACES} decimal places."
        )

    try:
        remote = parse_task(data)
    except Exception as exc:  # the parser's own errors: a malformed vendor object
        return _bad(f"Body is not a task object ({exc.__class__.__name__}).")
    if units != remote.final_unit_deduction:  # both None, or the same number
        return _bad("final_unit_deduction is not a plausible number of units.")
    if task.task_id and remote.task_id and remote.task_id != task.task_id:
        return _bad("task_id does not match this callback's task.")
    if remote.external_task_id and remote.external_task_id != task.external_task_id:
        return _bad("external_task_id does not match this callback's task.")
    task_apply_remote(task_pk=task.pk, remote=remote, source="callback")
    return JsonResponse({"ok": True})
