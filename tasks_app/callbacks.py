"""The callback receiver: Kling POSTs a task object here each time a task's status changes.

Protocol: ``kling-docs/callback-protocol.txt`` and KLING_API.md §4 "Callbacks". The
``callback_url`` sent with each create call carries a token signed with Django's signing
(``SECRET_KEY``, a salt of its own) and bound to one task's ``code``, so a callback can only
ever touch the task it was issued for. A token expires ``settings.KLING_CALLBACK_MAX_AGE``
(3 days) after the later of the task's creation and submission (``callback_token_expired``):
the vendor calls back within minutes or hours of a status change, and after that the poller
alone keeps the task up to date, so a token that leaks later opens nothing. When ``settings.KLING_WEBHOOK_SECRET`` is set, the
Standard Webhooks signature (``webhook-id``/``webhook-timestamp``/``webhook-signature``)
is verified too. Bodies of both designs are accepted (KLING_API_2026.md §6).

A callback is a trigger, a query is the truth: the vendor's callback carries a subset of
the task (no ``watermark_url``, no ``url_1..url_3``, no element data), so a final one
(succeed/failed) is confirmed by a query in a background job (``callback_confirm``) whose
full answer goes to ``task_apply_remote``; when no query can confirm it, the callback
itself is applied and the poller confirms it later (``Task.needs_confirmation``).
``task_apply_remote`` is idempotent and monotonic and records one deduction, so
duplicates, out-of-order and late deliveries change nothing wrong. Polling stays the
fallback: delivery is at least once and retries are undocumented.
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
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from klingweb.kling import KlingTask, parse_task
from klingweb.kling.models import is_new_design
from tasks_app.models import FINISHED, VENDOR_STATUSES, Deduction, Status, Task
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
    """POST /kling/callback/<token>/: take a vendor callback for the token's task.

    Bodies of both designs are accepted (KLING_API_2026.md §6): the legacy task object
    (``task_id``, ``task_status``, ``final_unit_deduction``…) and the 2026 one (``id``,
    ``status`` submitted|processing|succeeded|failed, ``billing[]``…). A callback is a
    trigger; a query is the truth: a body with a non-final status is applied at once
    (``task_apply_remote``); a final one (succeed/failed) enqueues
    ``tasks_app.jobs.task_confirm`` on commit, which asks Kling for the whole task
    (``callback_confirm``), since the vendor's callback carries a subset (no
    ``watermark_url``, no ``url_1..url_3``, no element data). This view never calls Kling.
    A final callback for a task already finished and confirmed changes nothing.

    Answers: 200 ``{"ok": true}`` once taken (also when it changes nothing: a duplicate,
    an older status, a finished task); 405 for another method; 404 for a bad, forged or
    expired token (``callback_token_expired``); 413 for a body over 1 MB; 401 when a webhook
    secret is configured and the Standard Webhooks signature is missing or wrong; 400 for a
    body that is not a JSON object with a known status (``task_status``
    submitted|processing|succeed|failed, or the 2026 ``status``), or whose ``task_id`` /
    ``external_task_id`` (2026: ``id`` / ``external_id``) names another task, or whose
    charge in units (``final_unit_deduction``, or the 2026 ``billing[charge_type=unit]``
    amounts) is not a finite number in [0, 10^8) with at most ``UNITS_PLACES`` (8) decimal places
    (``callback_units``). Nothing changes unless the answer is 200.

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
    if not isinstance(data, dict):
        return _bad("Body is not a task object (no task_status).")
    remote = _check_body(task, data)
    if isinstance(remote, JsonResponse):
        return remote
    if remote.task_status not in FINISHED:
        task_apply_remote(task_pk=task.pk, remote=remote, source="callback")
        return JsonResponse({"ok": True})
    if task.status in FINISHED and task.status != Status.LOST and not task.needs_confirmation:
        # A query already gave the whole task. A lost task's late answer is confirmed by a
        # query like any other (tasks_app.jobs.task_confirm) and charged once.
        return JsonResponse({"ok": True})
    from django_q.tasks import async_task

    task_pk = task.pk
    transaction.on_commit(lambda: async_task("tasks_app.jobs.task_confirm", task_pk, data))
    return JsonResponse({"ok": True})


def _check_body(task: Task, data: dict) -> KlingTask | JsonResponse:
    """``data`` parsed (``parse_task``) when it is a task object of either design that may
    be applied to ``task``, else the 400 answer ``task_callback`` gives."""
    new_design = is_new_design(data)
    status_key = "status" if new_design else "task_status"
    if not isinstance(data.get(status_key), str):
        return _bad(f"Body is not a task object (no {status_key}).")
    units_refused = (
        "final_unit_deduction is not a plausible number of units ({}): a finite, "
        f"non-negative number below 10^8 with at most {UNITS_PLACES} decimal places."
    )
    units = None
    if not new_design:
        if data["task_status"] not in VENDOR_STATUSES:
            return _bad("Unknown task_status.")
        try:
            units = callback_units(data.get("final_unit_deduction"))
        except ValueError as exc:
            log.warning("callback for task %s: final_unit_deduction refused (%s)", task.code, exc)
            return _bad(units_refused.format(exc))
    try:
        remote = parse_task(data)
    except Exception as exc:  # the parser's own errors: a malformed vendor object
        return _bad(f"Body is not a task object ({exc.__class__.__name__}).")
    if remote.task_status not in VENDOR_STATUSES:
        return _bad(f"Unknown {status_key}.")
    if new_design and remote.final_unit_deduction is not None:
        try:
            units = callback_units(str(remote.final_unit_deduction))
        except ValueError as exc:
            log.warning("callback for task %s: billing units refused (%s)", task.code, exc)
            return _bad(units_refused.format(exc).replace("final_unit_deduction", "billing"))
    if units != remote.final_unit_deduction:  # both None, or the same number
        return _bad("final_unit_deduction is not a plausible number of units.")
    if task.task_id and remote.task_id and remote.task_id != task.task_id:
        return _bad("task_id does not match this callback's task.")
    if remote.external_task_id and remote.external_task_id != task.external_task_id:
        return _bad("external_task_id does not match this callback's task.")
    return remote


#: Outcomes of ``callback_confirm``.
CONFIRMED = "confirmed"  # the vendor's query answered with the finished task: applied
UNCONFIRMED = "unconfirmed"  # no query answer: the callback applied, the poller confirms
ALREADY = "already"  # the task was finished and confirmed before: nothing to do


def _vendor_answer(task: Task, callback: KlingTask) -> KlingTask:
    """Ask Kling for ``task`` as a whole: the unified query ``GET /tasks?task_ids=`` for a
    2026-design task (its callback is of that design), else the family's single query
    ``GET <family path>/{task_id}`` (the client looks a task without ``task_id`` up by its
    ``external_task_id`` the way its vendor page allows). Raises ``KlingError`` (NOT_FOUND
    when the vendor does not list it), and whatever building the account's client raises."""
    from klingweb.accounts.services import account_for_team, kling_client_for
    from klingweb.kling import DESIGN_2026, ErrorClass, KlingError
    from tasks_app.families import get_family

    account = task.kling_account or account_for_team(team=task.team)
    client = kling_client_for(account)
    task_id = callback.task_id or task.task_id
    if callback.design == DESIGN_2026:
        ids = {"task_ids": [task_id]} if task_id else {"external_task_ids": [task.external_task_id]}
        for found in client.get_tasks(**ids):
            if found.task_id == task_id or found.external_task_id == task.external_task_id:
                return found
        raise KlingError(
            f"Task {task_id or task.external_task_id} not listed by GET /tasks.",
            http_status=200,
            error_class=ErrorClass.NOT_FOUND,
        )
    family = get_family(task.family).client_family
    if task_id:
        return client.get_task(family, task_id=task_id)
    return client.get_task(family, external_task_id=task.external_task_id)


def callback_confirm(*, task_pk: int, body: dict) -> str:
    """Confirm a final callback by a query (the job ``task_confirm``; KLING_API_2026.md §6:
    a callback's ``task_result`` is a subset of the task).

    ``body``: the callback's JSON object, as ``task_callback`` accepted it. Asks Kling for
    the task (``_vendor_answer``); a finished answer is applied with ``task_apply_remote``
    (source ``"callback"``) → ``CONFIRMED``. When the vendor cannot confirm — unreachable,
    an error answer, a paused or unusable account, or a query that does not show the task
    finished yet — the callback body itself is applied unconfirmed (as it comes, marked
    ``needs_confirmation`` so the next poll cycle asks again) → ``UNCONFIRMED``. A task
    already finished and confirmed → ``ALREADY`` (no call). Nothing is charged twice
    (``task_apply_remote``). Raises ``Task.DoesNotExist`` for a deleted task.
    """
    callback = parse_task(body)
    task = Task.objects.select_related("team", "kling_account").get(pk=task_pk)
    if task.status in FINISHED and not task.needs_confirmation:
        return ALREADY
    answer: KlingTask | None = None
    try:
        answer = _vendor_answer(task, callback)
    except Exception as exc:  # the vendor or our account: the poller confirms later
        log.warning("callback for task %s: could not confirm with a query: %s", task.code, exc)
    if answer is not None and answer.is_finished:
        task_apply_remote(task_pk=task_pk, remote=answer, source="callback")
        return CONFIRMED
    if answer is not None:
        log.info(
            "callback for task %s said %s, Kling's query still says %s",
            task.code,
            callback.task_status,
            answer.task_status,
        )
    task_apply_remote(task_pk=task_pk, remote=callback, source="callback", confirmed=False)
    return UNCONFIRMED
