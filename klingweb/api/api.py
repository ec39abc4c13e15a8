"""The REST API under ``/api/v1/`` (django-ninja): tasks, usage, signed result links.

Why django-ninja: the request and answer shapes are typed pydantic schemas from which the
OpenAPI 3 document (``/api/v1/openapi.json``) is generated, it brings Swagger UI's files in
its wheel (served by the portal itself at ``/api/v1/docs``, no CDN), and it is a thin layer
of function views — the house style — rather than a second framework (Django REST framework
would bring serializers, viewsets and its own auth/permission stack next to the access
helpers).

Authentication: ``Authorization: Bearer kw_…`` only (a team API key, ``klingweb.api.keys``);
no session, so no CSRF. Each key acts for the member who created it, within its own team:
another team's task codes are 404. Rate limit per key: ``settings.THROTTLE_RATES["api-key"]``
= ``(requests, seconds)``, fixed window in the shared throttle cache; over it → 429 with
``Retry-After`` (seconds). Errors: ``klingweb.api.errors.ApiError`` JSON.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import mimetypes
import posixpath
import time
from decimal import Decimal
from typing import Any
from uuid import UUID

from csp.decorators import csp_update
from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from ninja import Field, Header, NinjaAPI, Query, Schema, Status
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.openapi.docs import Swagger
from ninja.security import HttpBearer
from pydantic import ConfigDict

from klingweb.api.errors import ApiError
from klingweb.api.inputs import first_form_error, form_from_body
from klingweb.api.keys import ApiCaller, ApiKeyInvalid, api_key_authenticate
from klingweb.api.models import IdempotencyRecord
from klingweb.reporting.figures import Scope, usage_figures
from klingweb.reporting.periods import Period
from klingweb.security import safe_file_headers
from klingweb.storage import media_redirect
from klingweb.throttle import rate_exceeded
from tasks_app.budgets import BudgetExceeded, budget_label, team_zone
from tasks_app.families import UnknownFamily, get_family, registry
from tasks_app.forms import TaskFilterForm
from tasks_app.inputs import InputNeedsPublicAddress
from tasks_app.media import media_for_display
from tasks_app.models import Task, TaskMedia
from tasks_app.submission import task_queue_form

log = logging.getLogger(__name__)

#: The rate-limit scope of ``settings.THROTTLE_RATES`` (requests, seconds) per API key.
RATE_SCOPE = "api-key"
#: Seconds a signed result link stays valid.
MEDIA_LINK_SECONDS = 3600
MEDIA_LINK_SALT = "klingweb.api.media"
CURSOR_SALT = "klingweb.api.cursor"
PAGE_DEFAULT = 25
PAGE_MAX = 100
#: Longest ``Idempotency-Key`` accepted (characters).
IDEMPOTENCY_KEY_MAX = 255
#: Longest custom usage period (days).
USAGE_MAX_DAYS = 731


# -- authentication and rate limit ------------------------------------------------------


class ApiKeyBearer(HttpBearer):
    """``Authorization: Bearer <team API key>``; sets ``request.auth`` to an ``ApiCaller``.

    Raises ``ApiError`` 401 (bad, revoked, or its creator left) or 429 (rate limit)."""

    openapi_scheme = "bearer"

    def authenticate(self, request: HttpRequest, token: str) -> ApiCaller:
        """Check the key, then count the request against the key's rate limit."""
        try:
            caller = api_key_authenticate(token)
        except ApiKeyInvalid as exc:
            raise ApiError(401, "unauthorized", str(exc)) from None
        if rate_exceeded(RATE_SCOPE, caller.api_key.prefix):
            seconds = settings.THROTTLE_RATES[RATE_SCOPE][1]
            wait = max(1, math.ceil(seconds - time.time() % seconds))
            raise ApiError(
                429,
                "rate_limited",
                f"Too many requests with this API key; try again in {wait} s.",
                headers={"Retry-After": str(wait)},
            )
        return caller


api = NinjaAPI(
    title="Klingweb API",
    version="1",
    description=(
        "Create Kling generation tasks through your team's budgets and ledger, follow them, "
        "download the kept results, read usage. Authenticate with a team API key: "
        "`Authorization: Bearer kw_…` (team settings → API keys)."
    ),
    urls_namespace="api-v1",
    docs=Swagger(settings={"persistAuthorization": True}),
    docs_url="/docs",
    # Swagger UI sets inline styles on its elements; scripts stay 'self' only.
    docs_decorator=csp_update({"style-src": ["'unsafe-inline'"]}),
    openapi_url="/openapi.json",
    auth=ApiKeyBearer(),
)


def _error_response(request: HttpRequest, error: ApiError) -> HttpResponse:
    response = api.create_response(request, error.body(), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return _error_response(request, exc)


@api.exception_handler(NinjaValidationError)
def _validation_error(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    details = []
    for item in exc.errors:
        loc = [str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path")]
        field = loc[-1] if loc and loc[-1] != "payload" else None
        details.append({"code": "invalid", "message": str(item.get("msg", "")), "field": field})
    first = details[0] if details else {"message": "The request is not valid.", "field": None}
    message = first["message"] if not first["field"] else f"{first['field']}: {first['message']}"
    return _error_response(
        request, ApiError(400, "invalid", message, field=first["field"], details=details or None)
    )


@api.exception_handler(AuthenticationError)
def _authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _error_response(
        request,
        ApiError(401, "unauthorized", "Send a team API key: Authorization: Bearer kw_…"),
    )


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error_response(request, ApiError(404, "not_found", str(exc) or "Not found."))


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return _error_response(request, ApiError(exc.status_code, "invalid", str(exc)))


# -- schemas ----------------------------------------------------------------------------


class ErrorDetail(Schema):
    """One problem: machine code, the portal's message, the field it concerns."""

    code: str
    message: str
    field: str | None = None


class ErrorBody(ErrorDetail):
    """The ``error`` object; ``details`` lists every problem when there are several;
    ``budget`` names the budget a refusal is about."""

    details: list[ErrorDetail] | None = None
    budget: str | None = None


class ErrorOut(Schema):
    """Every error answer: ``{"error": {...}}``."""

    error: ErrorBody


class TaskIn(Schema):
    """``family`` (a registered family key, e.g. ``text2video``) and that family's create
    fields by the vendor's names (KLING_API.md §5): e.g. ``model_name``, ``prompt``,
    ``negative_prompt``, ``mode``, ``aspect_ratio``, ``duration``, ``cfg_scale``;
    file inputs (``image``, ``image_tail``, ``sound_file``, ``element_frontal_image``) as an
    http(s) URL or Base64; ``watermark_info`` as ``{"enabled": bool}``."""

    model_config = ConfigDict(extra="allow")
    family: str = Field(..., examples=["text2video"])


class TaskErrorOut(Schema):
    """Why a task failed: the vendor's code (None for a portal-side failure), message and
    request_id."""

    code: int | None = None
    message: str
    request_id: str


class CostOut(Schema):
    """Units of Kling credit as decimal strings: the estimate checked against budgets, and
    the vendor's ``final_unit_deduction`` once charged (None before). No money: the ledger
    keeps units only."""

    estimated_units: str
    final_unit_deduction: str | None = None


class ResultOut(Schema):
    """One result file. ``url``: a signed link to the portal's kept copy, valid
    ``MEDIA_LINK_SECONDS`` without a session (``kept``), else the vendor's URL while it
    exists, else None. ``size`` bytes, ``duration`` seconds (decimal string)."""

    kind: str
    index: int
    variant: str
    kept: bool
    url: str | None = None
    url_expires_at: dt.datetime | None = None
    content_type: str = ""
    size: int | None = None
    duration: str | None = None


class TaskOut(Schema):
    """A task: ``code`` (the portal's id and the vendor's ``external_task_id``), vendor
    ``task_id`` (empty until accepted), ``status`` (queued, submitted, processing,
    succeed, failed, error), cost, error, results, and its page in the portal."""

    code: UUID
    family: str
    status: str
    task_id: str
    task_status_msg: str
    model_name: str
    mode: str
    prompt: str
    summary: str
    creator: str | None = None
    created_at: dt.datetime
    submitted_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    cost: CostOut
    error: TaskErrorOut | None = None
    results: list[ResultOut]
    page_url: str


class TaskPage(Schema):
    """A page of tasks, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[TaskOut]
    next_cursor: str | None = None


class UsageTotals(Schema):
    """Headline figures (units as decimal strings)."""

    units: str
    failed_units: str
    charged_tasks: int
    tasks_run: int
    succeeded: int
    failed: int
    in_flight: int


class UsageFamily(UsageTotals):
    """The figures of one family."""

    family: str


class UsageMember(Schema):
    """Units charged for one member's tasks."""

    member: str
    units: str
    failed_units: str
    charged_tasks: int


class UsageModel(Schema):
    """Units per (family, model, mode)."""

    family: str
    model_name: str
    mode: str
    units: str
    charged_tasks: int


class UsageDay(Schema):
    """Units charged on one local day, per family."""

    day: dt.date
    units: dict[str, str]


class UsageOut(Schema):
    """The team usage report's figures for ``from``…``to`` (inclusive, team time zone)."""

    date_from: dt.date = Field(..., alias="from")
    date_to: dt.date = Field(..., alias="to")
    time_zone: str
    totals: UsageTotals
    families: list[UsageFamily]
    members: list[UsageMember]
    models: list[UsageModel]
    days: list[UsageDay]


ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 429: ErrorOut}


# -- helpers ----------------------------------------------------------------------------


def _units(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def media_link(request: HttpRequest, media_code: UUID) -> str:
    """An absolute, signed link to kept result ``media_code``, valid ``MEDIA_LINK_SECONDS``
    for anyone holding it (no session)."""
    token = signing.dumps(str(media_code), salt=MEDIA_LINK_SALT)
    return request.build_absolute_uri(reverse("api-media", kwargs={"token": token}))


def task_out(request: HttpRequest, task: Task) -> dict:
    """``TaskOut`` of ``task`` (with ``creator``, ``team`` and ``media`` loaded)."""
    results = []
    expires = timezone.now() + dt.timedelta(seconds=MEDIA_LINK_SECONDS)
    for item in media_for_display(task) if task.status == "succeed" else []:
        kept = bool(item.is_kept and item.code)
        results.append(
            {
                "kind": item.kind,
                "index": item.index,
                "variant": item.variant,
                "kept": kept,
                "url": media_link(request, item.code) if kept else item.url,
                "url_expires_at": expires if kept else item.vendor_expires_at,
                "content_type": item.content_type,
                "size": item.size,
                "duration": _units(item.duration),
            }
        )
    error = None
    if task.error_code is not None or task.error_message:
        error = {
            "code": task.error_code,
            "message": task.error_message,
            "request_id": task.error_request_id,
        }
    return {
        "code": task.code,
        "family": task.family,
        "status": task.status,
        "task_id": task.task_id,
        "task_status_msg": task.task_status_msg,
        "model_name": task.model_name,
        "mode": task.mode,
        "prompt": task.prompt,
        "summary": task.summary,
        "creator": task.creator.get_username() if task.creator else None,
        "created_at": task.created_at,
        "submitted_at": task.submitted_at,
        "finished_at": task.finished_at,
        "cost": {
            "estimated_units": _units(task.estimated_units) or "0",
            "final_unit_deduction": _units(task.final_unit_deduction),
        },
        "error": error,
        "results": results,
        "page_url": request.build_absolute_uri(
            reverse("tasks-detail", kwargs={"team": task.team.code, "code": task.code})
        ),
    }


def _tasks(caller: ApiCaller):
    return Task.objects.filter(team=caller.team).select_related("creator", "team")


def _body_hash(body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# -- tasks ------------------------------------------------------------------------------


@api.post(
    "/tasks",
    response={200: TaskOut, 202: TaskOut, 402: ErrorOut, 409: ErrorOut, **ERRORS},
    summary="Create a task",
    tags=["tasks"],
    url_name="api-tasks-create",
)
def tasks_create(
    request: HttpRequest,
    payload: TaskIn,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
):
    """Validate the body with the family's own form (the create page's messages), check the
    budgets (the key's member's caps too), and queue the task as that member: **202** with
    the task. The vendor call happens in the background; poll ``GET /tasks/{code}``.

    ``Idempotency-Key`` (≤ 255 characters): a retry with the same key and body answers
    **200** with the task the first request made; the same key with another body is
    **409**. Errors: 400 (the field and the form's message), 402 (a budget would be passed:
    ``budget`` names it), 403 (read-only key, or its member is a viewer).
    """
    caller: ApiCaller = request.auth
    if not caller.can_write:
        reason = (
            "This API key is read-only."
            if caller.api_key.scope != "write"
            else "The key's member is a viewer of the team and cannot create tasks."
        )
        raise ApiError(403, "forbidden", reason)
    # The whole JSON object: the schema declares only ``family`` (ninja keeps no extras).
    try:
        body = json.loads(request.body)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "The body must be a JSON object.")
    body.pop("family", None)
    family_key = payload.family
    digest = None
    if idempotency_key is not None:
        if not idempotency_key.strip() or len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
            raise ApiError(
                400,
                "invalid",
                f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} characters.",
                field="Idempotency-Key",
            )
        digest = _body_hash({"family": family_key, **body})
        replay = _idempotent_replay(request, caller, idempotency_key, digest)
        if replay is not None:
            return replay
    try:
        family = get_family(family_key)
    except UnknownFamily:
        known = ", ".join(k for k, f in registry().items() if not f.extra.get("create_url_name"))
        raise ApiError(
            400,
            "unknown_family",
            f"Unknown family {family_key!r}; one of: {known}.",
            field="family",
        ) from None
    if family.extra.get("create_url_name"):
        raise ApiError(
            400,
            "unknown_family",
            f"{family.label} tasks are created from their own page, not through this endpoint.",
            field="family",
        )
    form, names = form_from_body(family, body, team=caller.team, user=caller.user)
    if not form.is_valid():
        raise first_form_error(form, names)
    try:
        with transaction.atomic():
            task = task_queue_form(team=caller.team, user=caller.user, family=family, form=form)
            if digest is not None:
                IdempotencyRecord.objects.create(
                    api_key=caller.api_key, key=idempotency_key, body_hash=digest, task=task
                )
    except BudgetExceeded as exc:
        raise ApiError(
            402,
            "budget_exceeded",
            str(exc),
            extra={
                "budget": budget_label(exc.budget) if exc.budget is not None else None,
                "budgets": [budget_label(status.budget) for status in exc.exceeded or []],
            },
        ) from None
    except InputNeedsPublicAddress as exc:
        raise ApiError(400, "needs_public_address", str(exc)) from None
    except IntegrityError:
        # The same Idempotency-Key committed by a concurrent request meanwhile.
        replay = _idempotent_replay(request, caller, idempotency_key, digest)
        if replay is None:
            raise
        return replay
    task = _tasks(caller).prefetch_related("media").get(pk=task.pk)
    return Status(202, task_out(request, task))


def _idempotent_replay(request: HttpRequest, caller: ApiCaller, key: str, digest: str):
    record = (
        IdempotencyRecord.objects.filter(api_key=caller.api_key, key=key)
        .select_related("task")
        .first()
    )
    if record is None:
        return None
    if record.body_hash != digest:
        raise ApiError(
            409,
            "idempotency_conflict",
            "This Idempotency-Key was used with a different request body.",
            field="Idempotency-Key",
        )
    task = _tasks(caller).prefetch_related("media").get(pk=record.task_id)
    return Status(200, task_out(request, task))


@api.get(
    "/tasks/{uuid:code}",
    response={200: TaskOut, **ERRORS},
    summary="A task",
    tags=["tasks"],
    url_name="api-tasks-detail",
)
def tasks_detail(request: HttpRequest, code: UUID):
    """The task with this ``code`` in the key's team (another team's code: 404): status,
    vendor ``task_id``, cost, error (code, message, request_id) and results as signed
    links to the kept files."""
    task = _tasks(request.auth).prefetch_related("media").filter(code=code).first()
    if task is None:
        raise ApiError(404, "not_found", "No such task.")
    return task_out(request, task)


@api.get(
    "/tasks",
    response={200: TaskPage, **ERRORS},
    summary="The team's tasks",
    tags=["tasks"],
    url_name="api-tasks-list",
)
def tasks_list(
    request: HttpRequest,
    status: str | None = None,
    family: str | None = None,
    creator: str | None = Query(None, description="Username of the member who created it."),
    created_after: dt.datetime | None = None,
    created_before: dt.datetime | None = None,
    q: str | None = Query(None, description="Search prompt, summary, code, vendor task_id."),
    cursor: str | None = None,
    limit: int = Query(PAGE_DEFAULT, ge=1, le=PAGE_MAX),
):
    """The key's team's tasks, newest first, ``limit`` (1–100) a page. Filters as the task
    list page: ``status`` (a status, ``unfinished`` or ``in_flight``), ``family``,
    ``creator`` (username), ``created_after``/``created_before`` (ISO datetimes; naive
    means UTC; after inclusive, before exclusive), ``q``. ``cursor``: ``next_cursor`` of
    the previous page."""
    caller: ApiCaller = request.auth
    data: dict[str, str] = {}
    for name, value in (("status", status), ("family", family), ("q", q)):
        if value:
            data[name] = value
    if creator:
        member = caller.team.memberships.filter(user__username=creator).first()
        if member is None:
            raise ApiError(400, "invalid", f"No member {creator!r} in this team.", field="creator")
        data["creator"] = str(member.user_id)
    labels = [(f.key, f.label) for f in registry().values()]
    filters = TaskFilterForm(data, team=caller.team, families=labels, mine=False)
    if not filters.is_valid():
        raise first_form_error(filters, {})
    queryset = filters.filter(_tasks(caller))
    for moment, lookup in ((created_after, "created_at__gte"), (created_before, "created_at__lt")):
        if moment is not None:
            if timezone.is_naive(moment):
                moment = moment.replace(tzinfo=dt.UTC)
            queryset = queryset.filter(**{lookup: moment})
    if cursor:
        try:
            at_text, last_id = signing.loads(cursor, salt=CURSOR_SALT)
            at = dt.datetime.fromisoformat(at_text)
            last_id = int(last_id)
        except (signing.BadSignature, ValueError, TypeError):
            raise ApiError(400, "invalid", "The cursor is not valid.", field="cursor") from None
        queryset = queryset.filter(Q(created_at__lt=at) | Q(created_at=at, id__lt=last_id))
    queryset = queryset.order_by("-created_at", "-id").prefetch_related("media")
    rows = list(queryset[: limit + 1])
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = signing.dumps([last.created_at.isoformat(), last.pk], salt=CURSOR_SALT)
    return {"items": [task_out(request, t) for t in rows], "next_cursor": next_cursor}


# -- usage ------------------------------------------------------------------------------


@api.get(
    "/usage",
    response={200: UsageOut, **ERRORS},
    summary="Usage figures",
    tags=["usage"],
    url_name="api-usage",
)
def usage(
    request: HttpRequest,
    date_from: dt.date = Query(..., alias="from", description="First day, YYYY-MM-DD."),
    date_to: dt.date = Query(..., alias="to", description="Last day (inclusive)."),
):
    """The team usage report's figures (``klingweb.reporting.figures.usage_figures``) for
    the days ``from``…``to`` in the team's time zone: totals, per family, per member, per
    model, per day. Units are Kling credit units as decimal strings. At most 731 days."""
    caller: ApiCaller = request.auth
    if date_to < date_from:
        raise ApiError(400, "invalid", "The end date is before the start date.", field="to")
    if (date_to - date_from).days >= USAGE_MAX_DAYS:
        raise ApiError(400, "invalid", "At most 731 days at once.", field="to")
    try:
        tz = team_zone(caller.team)
        period = Period(key="custom", label="", first_day=date_from, last_day=date_to, tz=tz)
        period.start, period.end  # noqa: B018 - dates beyond the calendar raise here
    except (OverflowError, ValueError):
        raise ApiError(400, "invalid", "The dates are out of range.", field="to") from None
    figures = usage_figures(scope=Scope(team_id=caller.team.pk), period=period)

    def totals(t: Any) -> dict:
        return {
            "units": _units(t.units),
            "failed_units": _units(t.failed_units),
            "charged_tasks": t.charged_tasks,
            "tasks_run": t.tasks_run,
            "succeeded": t.succeeded,
            "failed": t.failed,
            "in_flight": t.in_flight,
        }

    days: dict[dt.date, dict[str, str]] = {}
    for (day, fam), units in sorted(figures.per_day.items()):
        days.setdefault(day, {})[fam] = _units(units)
    return {
        "from": date_from,
        "to": date_to,
        "time_zone": str(getattr(tz, "key", tz)),
        "totals": totals(figures.totals),
        "families": [{"family": f.family, **totals(f)} for f in figures.families],
        "members": [
            {
                "member": g.label,
                "units": _units(g.units),
                "failed_units": _units(g.failed_units),
                "charged_tasks": g.charged_tasks,
            }
            for g in figures.groups
        ],
        "models": [
            {
                "family": m.family,
                "model_name": m.model_name,
                "mode": m.mode,
                "units": _units(m.units),
                "charged_tasks": m.charged_tasks,
            }
            for m in figures.models
        ],
        "days": [{"day": day, "units": units} for day, units in sorted(days.items())],
    }


# -- elements ---------------------------------------------------------------------------


class ElementOut(Schema):
    """A custom element of the team: portal ``code``, the vendor's ``element_id`` (empty
    until created), ``name``, ``description``, ``reference_type``, ``status`` (creating,
    succeed, failed, deleted), the task that created it (``task_code``), creator, time."""

    code: UUID
    element_id: str
    name: str
    description: str
    reference_type: str
    status: str
    task_code: UUID | None = None
    creator: str | None = None
    created_at: dt.datetime


@api.get(
    "/elements",
    response={200: list[ElementOut], **ERRORS},
    summary="The team's custom elements",
    tags=["elements"],
    url_name="api-elements-list",
)
def elements_list(request: HttpRequest, limit: int = Query(PAGE_MAX, ge=1, le=500)):
    """The key's team's custom elements, newest first (at most ``limit``, 1–500), deleted
    ones left out. Creating elements stays on the elements page for now."""
    from elements_app.models import Element

    caller: ApiCaller = request.auth
    rows = (
        Element.objects.filter(team=caller.team, deleted_at__isnull=True)
        .select_related("creator", "task")
        .order_by("-created_at", "-id")[:limit]
    )
    return [
        {
            "code": e.code,
            "element_id": e.element_id,
            "name": e.name,
            "description": e.description,
            "reference_type": e.reference_type or "",
            "status": e.status,
            "task_code": e.task.code if e.task_id else None,
            "creator": e.creator.get_username() if e.creator else None,
            "created_at": e.created_at,
        }
        for e in rows
    ]


# -- signed result links (a plain Django view: the token is the credential) --------------


def media_file(request: HttpRequest, token: str) -> HttpResponse:
    """GET /api/v1/media/<token>: a kept result file, for whoever holds a link from
    ``TaskOut.results`` (no session, no key) until it expires (``MEDIA_LINK_SECONDS``).

    Expired, forged or unknown → 404 (JSON error). Served as an attachment with the
    inert-file headers; with a bucket, a 302 to a presigned URL.
    """
    if request.method not in ("GET", "HEAD"):
        return _plain_error(405, "method_not_allowed", "Only GET.")
    try:
        media_code = signing.loads(token, salt=MEDIA_LINK_SALT, max_age=MEDIA_LINK_SECONDS)
        item = TaskMedia.objects.select_related("task").filter(code=UUID(str(media_code))).first()
    except (signing.BadSignature, ValueError, TypeError):
        item = None
    if item is None or not item.file or item.kept_at is None:
        return _plain_error(404, "not_found", "This link is not valid or has expired.")
    content_type = item.content_type or mimetypes.guess_type(item.file.name)[0] or ""
    ext = posixpath.splitext(item.file.name)[1]
    filename = f"{item.task.code}-{item.kind}-{item.index}{ext}"
    moved = media_redirect(
        item.file.name, filename=filename, content_type=content_type, inline=False
    )
    if moved is not None:
        return moved
    try:
        handle = item.file.open("rb")
    except FileNotFoundError:
        return _plain_error(404, "not_found", "The kept file is missing.")
    response = FileResponse(
        handle,
        content_type=content_type or "application/octet-stream",
        as_attachment=True,
        filename=filename,
    )
    return safe_file_headers(response)


def _plain_error(status: int, code: str, message: str) -> HttpResponse:
    from django.http import JsonResponse

    return JsonResponse(ApiError(status, code, message).body(), status=status)
