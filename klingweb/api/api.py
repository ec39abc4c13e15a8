"""The REST API under ``/api/v1/`` (django-ninja): tasks, elements, usage, signed result
links.

The create endpoints (``POST /tasks``, ``POST /elements``) take ``application/json`` or
``multipart/form-data`` (files as parts), read by ``klingweb.api.inputs`` onto the create
page's own form and queued by the page's own service; their request bodies are declared in
the OpenAPI document with ``openapi_extra`` (components ``TaskIn``/``TaskMultipartIn`` and
``ElementIn``/``ElementMultipartIn``, ``KlingwebApi``).

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
from typing import Any, Literal
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
from pydantic.json_schema import models_json_schema

from klingweb.api.errors import ApiError
from klingweb.api.inputs import (
    JSON_TYPE,
    MULTIPART_TYPE,
    element_form_from_body,
    first_form_error,
    form_from_body,
    request_digest,
    request_fields,
)
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
from tasks_app.submission import TaskNotCancellable, task_cancel, task_queue_form

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


class KlingwebApi(NinjaAPI):
    """``NinjaAPI`` whose OpenAPI document also holds the request-body schemas of the create
    endpoints (``request_body_schemas``): those endpoints read their body themselves (JSON
    or multipart, ``klingweb.api.inputs.request_fields``), so their ``requestBody`` is
    declared with ``openapi_extra`` and refers to these components."""

    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        """Ninja's document plus ``request_body_schemas()`` under ``components.schemas``."""
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(request_body_schemas())
        return schema


api = KlingwebApi(
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


class ElementImageRefer(Schema):
    """One other-angle image: an http(s) URL or Base64 (KLING_API.md §5.4)."""

    model_config = ConfigDict(extra="forbid")
    image_url: str


class ElementImageList(Schema):
    """The images of an ``image_refer`` element: ``frontal_image`` and 1–3 ``refer_images``
    (image rule: JPG/PNG, ≤ 10 MB, ≥ 300 px a side, 1:2.5 to 2.5:1), each an http(s) URL
    or Base64."""

    model_config = ConfigDict(extra="forbid")
    frontal_image: str | None = None
    refer_images: list[ElementImageRefer] | None = None


class ElementVideoRefer(Schema):
    """The reference video: an http(s) URL (Kling downloads it) or Base64 (stored by the
    portal and handed to Kling by URL: needs the portal's public address)."""

    model_config = ConfigDict(extra="forbid")
    video_url: str


class ElementVideoList(Schema):
    """The video of a ``video_refer`` element: exactly one (MP4/MOV, 3–8 s, 1080p at 16:9 or
    9:16, ≤ 200 MB)."""

    model_config = ConfigDict(extra="forbid")
    refer_videos: list[ElementVideoRefer]


class ElementTagIn(Schema):
    """A tag: ``o_101`` Hottest … ``o_108`` Others (KLING_API.md §5.4)."""

    model_config = ConfigDict(extra="forbid")
    tag_id: str


class ElementIn(Schema):
    """The vendor's create body of a custom element (KLING_API.md §5.4, without
    ``callback_url``/``external_task_id``, which the portal sets): ``element_name`` (≤ 20
    characters), ``element_description`` (≤ 100), ``reference_type`` (``image_refer``, the
    default, or ``video_refer``), ``element_image_list`` or ``element_video_list`` to match,
    optional ``element_voice_id`` and ``tag_list``."""

    model_config = ConfigDict(extra="forbid")
    element_name: str = Field(..., examples=["Hero"])
    element_description: str = Field(..., examples=["A brave hero in a red cape."])
    reference_type: Literal["image_refer", "video_refer"] = "image_refer"
    element_image_list: ElementImageList | None = None
    element_video_list: ElementVideoList | None = None
    element_voice_id: str | None = None
    tag_list: list[ElementTagIn] | None = None


_INPUT_PART = {
    "type": "string",
    "format": "binary",
    "description": "The file (a file part); a text part of this name is a URL or Base64.",
}


def _task_multipart_schema() -> dict:
    """``TaskMultipartIn``: ``family`` and the family's fields as text parts (by the
    vendor's names), ``watermark_info`` as JSON text, and every registered family's file
    inputs (``image``, ``image_tail``, ``sound_file``, ...) as file parts."""
    properties: dict[str, Any] = {
        "family": {"type": "string", "examples": ["image2video"]},
        "watermark_info": {"type": "string", "description": 'JSON text: {"enabled": true}'},
    }
    for family in registry().values():
        if family.extra.get("create_url_name"):
            continue
        try:
            form_class = family.get_form_class()
        except ImportError:  # pragma: no cover - a misconfigured family
            continue
        for spec in getattr(form_class, "inputs", ()):
            properties.setdefault(spec.param, dict(_INPUT_PART))
    return {
        "title": "TaskMultipartIn",
        "description": (
            "The same fields as the JSON body, each as a text part of the same name (values "
            "that are JSON objects as JSON text), and the family's file inputs as file parts."
        ),
        "type": "object",
        "required": ["family"],
        "properties": properties,
        "additionalProperties": {"type": "string"},
    }


def _element_multipart_schema() -> dict:
    """``ElementMultipartIn``: the text fields of ``ElementIn`` as parts, ``tag_list`` as
    repeated tag ids, and the inputs as file parts ``frontal_image``, ``refer_images`` (1–3)
    and ``refer_videos`` (1)."""
    text = {"type": "string"}
    return {
        "title": "ElementMultipartIn",
        "description": (
            "ElementIn as multipart/form-data: text parts element_name, "
            "element_description, reference_type, element_voice_id, tag_list (repeated tag "
            "ids); files as parts frontal_image, refer_images (1-3 parts) and refer_videos (1 "
            "part). element_image_list / element_video_list may instead be given as JSON text "
            "parts holding URLs or Base64."
        ),
        "type": "object",
        "required": ["element_name", "element_description"],
        "properties": {
            "element_name": text,
            "element_description": text,
            "reference_type": {"type": "string", "enum": ["image_refer", "video_refer"]},
            "element_voice_id": text,
            "tag_list": {"type": "array", "items": text},
            "frontal_image": dict(_INPUT_PART),
            "refer_images": {"type": "array", "items": dict(_INPUT_PART), "maxItems": 3},
            "refer_videos": dict(_INPUT_PART),
            "element_image_list": {"type": "string", "description": "JSON text"},
            "element_video_list": {"type": "string", "description": "JSON text"},
        },
        "additionalProperties": False,
    }


def request_body_schemas() -> dict[str, dict]:
    """The components the create endpoints' ``requestBody`` refers to: ``TaskIn`` and
    ``ElementIn`` (with their parts) for JSON, ``TaskMultipartIn`` and
    ``ElementMultipartIn`` for multipart/form-data."""
    _, defs = models_json_schema(
        [(TaskIn, "validation"), (ElementIn, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    schemas = dict(defs.get("$defs", {}))
    schemas["TaskMultipartIn"] = _task_multipart_schema()
    schemas["ElementMultipartIn"] = _element_multipart_schema()
    return schemas


def _request_body(json_schema: str, multipart_schema: str) -> dict:
    """``openapi_extra`` of a create endpoint: its two request shapes."""
    ref = "#/components/schemas/"
    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON_TYPE: {"schema": {"$ref": ref + json_schema}},
                MULTIPART_TYPE: {"schema": {"$ref": ref + multipart_schema}},
            },
        }
    }


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
    succeed, failed, error, cancelled, lost — "lost at vendor"), cost, error, results, and its page in the portal."""

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
#: The answers of a create endpoint besides its 200/202.
CREATE_ERRORS = {402: ErrorOut, 409: ErrorOut, 413: ErrorOut, **ERRORS}


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
    response={200: TaskOut, 202: TaskOut, **CREATE_ERRORS},
    summary="Create a task",
    tags=["tasks"],
    url_name="api-tasks-create",
    openapi_extra=_request_body("TaskIn", "TaskMultipartIn"),
)
def tasks_create(
    request: HttpRequest,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
):
    """Validate the body with the family's own form (the create page's messages), check the
    budgets (the key's member's caps too), and queue the task as that member: **202** with
    the task. The vendor call happens in the background; poll ``GET /tasks/{code}``.

    Body: ``application/json`` (``TaskIn``: ``family`` and the family's fields by the
    vendor's names; file inputs as an http(s) URL or Base64), or ``multipart/form-data``
    (``TaskMultipartIn``: the same fields as text parts, ``watermark_info`` as JSON text,
    and file inputs as file parts named after the input: ``image``, ``image_tail``,
    ``sound_file``, ...).

    ``Idempotency-Key`` (≤ 255 characters): a retry with the same key and body (files
    included) answers **200** with the task the first request made; the same key with
    another body is **409**. Errors: 400 (the field and the form's message), 402 (a budget
    would be passed: ``budget`` names it), 403 (read-only key, or its member is a viewer),
    413 (a JSON body over 15 MB: send files as parts).
    """
    caller = _writer(request, "tasks")
    body, uploads = request_fields(request)
    family_key = body.pop("family", None)
    if isinstance(family_key, list):
        raise ApiError(400, "invalid", "family must be a single value.", field="family")
    if not isinstance(family_key, str) or not family_key:
        raise ApiError(
            400, "invalid", "family is required: a family key such as text2video.", field="family"
        )
    digest = None
    if idempotency_key is not None:
        _idempotency_key_check(idempotency_key)
        if uploads:
            digest = request_digest("tasks", {"family": family_key, **body}, uploads)
        else:  # as before multipart existed: a stored record of a JSON retry still matches
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
        hint = " Use POST /api/v1/elements." if family.key == "element" else ""
        raise ApiError(
            400,
            "unknown_family",
            f"{family.label} tasks are created from their own page, not through this "
            f"endpoint.{hint}",
            field="family",
        )
    form, names = form_from_body(family, body, team=caller.team, user=caller.user, uploads=uploads)
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
        raise _budget_error(exc) from None
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


def _writer(request: HttpRequest, what: str) -> ApiCaller:
    """The caller, when its key may create ``what`` (tasks, elements); else ``ApiError``
    403 (a read-only key, or its member is a viewer)."""
    caller: ApiCaller = request.auth
    if not caller.can_write:
        reason = (
            "This API key is read-only."
            if caller.api_key.scope != "write"
            else f"The key's member is a viewer of the team and cannot create {what}."
        )
        raise ApiError(403, "forbidden", reason)
    return caller


def _idempotency_key_check(key: str) -> None:
    if not key.strip() or len(key) > IDEMPOTENCY_KEY_MAX:
        raise ApiError(
            400,
            "invalid",
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} characters.",
            field="Idempotency-Key",
        )


def _budget_error(exc: BudgetExceeded) -> ApiError:
    """402 naming the budget(s) a creation would pass (the form's refusal text)."""
    return ApiError(
        402,
        "budget_exceeded",
        str(exc),
        extra={
            "budget": budget_label(exc.budget) if exc.budget is not None else None,
            "budgets": [budget_label(status.budget) for status in exc.exceeded or []],
        },
    )


def _idempotent_record(caller: ApiCaller, key: str, digest: str) -> IdempotencyRecord | None:
    """The record of ``key`` for this API key (None when unused); 409 when it came with
    another body."""
    record = IdempotencyRecord.objects.filter(api_key=caller.api_key, key=key).first()
    if record is not None and record.body_hash != digest:
        raise ApiError(
            409,
            "idempotency_conflict",
            "This Idempotency-Key was used with a different request body.",
            field="Idempotency-Key",
        )
    return record


def _idempotent_replay(request: HttpRequest, caller: ApiCaller, key: str, digest: str):
    record = _idempotent_record(caller, key, digest)
    if record is None:
        return None
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


@api.post(
    "/tasks/{uuid:code}/cancel",
    response={200: TaskOut, 409: ErrorOut, **ERRORS},
    summary="Cancel a queued task",
    tags=["tasks"],
    url_name="api-tasks-cancel",
)
def tasks_cancel(request: HttpRequest, code: UUID):
    """Cancel the queued task with this ``code`` before anything reached Kling
    (``tasks_app.submission.task_cancel``, as the task page's Cancel button): **200** with
    the task, now ``cancelled`` — nothing is charged and its estimate stops counting
    against budgets. Cancelling a task that is already cancelled answers 200 again.
    Errors: 403 (a read-only key or a viewer's; a member's key for another member's task —
    only its creator or a team admin may cancel), 404 (no such task in the key's team), 409
    (``not_cancellable``: the task was sent to Kling or has ended; the message says why).
    """
    caller = _writer(request, "tasks")
    task = _tasks(caller).filter(code=code).first()
    if task is None:
        raise ApiError(404, "not_found", "No such task.")
    if not (caller.membership.can_admin or task.creator_id == caller.user.pk):
        raise ApiError(
            403, "forbidden", "Only the person who created this task or an admin can cancel it."
        )
    if task.status != "cancelled":
        try:
            task_cancel(task_pk=task.pk, by=caller.user.get_username())
        except TaskNotCancellable as exc:
            raise ApiError(409, "not_cancellable", str(exc)) from None
    return task_out(request, _tasks(caller).prefetch_related("media").get(pk=task.pk))


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
    succeed, failed, deleted; ``failed`` too when its task failed or was refused), the task
    that created it (``task_code``, follow it with ``GET /tasks/{code}``; None for an
    imported element), creator, time, and its page in the portal."""

    code: UUID
    element_id: str
    name: str
    description: str
    reference_type: str
    status: str
    task_code: UUID | None = None
    creator: str | None = None
    created_at: dt.datetime
    page_url: str


def element_out(request: HttpRequest, element: Any) -> dict:
    """``ElementOut`` of ``element`` (with ``task``, ``creator`` and ``team`` loaded)."""
    return {
        "code": element.code,
        "element_id": element.element_id,
        "name": element.name,
        "description": element.description,
        "reference_type": element.reference_type or "",
        "status": element.effective_status,
        "task_code": element.task.code if element.task_id else None,
        "creator": element.creator.get_username() if element.creator else None,
        "created_at": element.created_at,
        "page_url": request.build_absolute_uri(
            reverse("elements-detail", kwargs={"team": element.team.code, "code": element.code})
        ),
    }


def _elements(caller: ApiCaller):
    from elements_app.models import Element

    return Element.objects.filter(team=caller.team).select_related("creator", "task", "team")


# The create operation is registered first on this path, so the URL resolves to its name
# (``api-elements-create``), the one settings.UPLOAD_LARGE_REQUESTS allows 220 MB.
@api.post(
    "/elements",
    response={200: ElementOut, 202: ElementOut, **CREATE_ERRORS},
    summary="Create a custom element",
    tags=["elements"],
    url_name="api-elements-create",
    openapi_extra=_request_body("ElementIn", "ElementMultipartIn"),
)
def elements_create(
    request: HttpRequest,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
):
    """Create a custom element (KLING_API.md §5.4) as the key's member, with the element
    page's form (``elements_app.forms.ElementForm``: its rules and messages) and service
    (``elements_app.services.element_create``): **202** with the element (status
    ``creating``) and ``task_code``, the task that creates it on Kling in the background.
    Poll ``GET /elements/{code}`` (or the task) until ``succeed``.

    Body: ``application/json`` (``ElementIn``: the vendor's create body; images and the
    video as http(s) URLs or Base64, at most 15 MB of JSON in all) or
    ``multipart/form-data`` (``ElementMultipartIn``: text parts, and files as parts
    ``frontal_image``, ``refer_images`` (1–3), ``refer_videos`` (1), up to 220 MB). A
    video given as a file needs the portal's public address (Kling fetches it by URL).

    ``Idempotency-Key``: as for ``POST /tasks`` (same key and body → **200** with the same
    element; another body → **409**). Errors: 400 (the field, as the request names it, and
    the form's message; nothing is stored), 402 (a budget would be passed), 403 (read-only
    key, or its member is a viewer), 413.
    """
    from elements_app.services import element_create

    caller = _writer(request, "elements")
    body, uploads = request_fields(request)
    digest = None
    if idempotency_key is not None:
        _idempotency_key_check(idempotency_key)
        digest = request_digest("elements", body, uploads)
        replay = _element_replay(request, caller, idempotency_key, digest)
        if replay is not None:
            return replay
    form, names = element_form_from_body(body, uploads=uploads, team=caller.team, user=caller.user)
    if not form.is_valid():
        raise first_form_error(form, names)
    element = None
    try:
        with transaction.atomic():
            element = element_create(team=caller.team, user=caller.user, data=form.cleaned_data)
            if digest is not None:
                IdempotencyRecord.objects.create(
                    api_key=caller.api_key, key=idempotency_key, body_hash=digest, task=element.task
                )
    except BudgetExceeded as exc:
        raise _budget_error(exc) from None
    except InputNeedsPublicAddress as exc:
        raise ApiError(
            400, "needs_public_address", str(exc), field="element_video_list.refer_videos"
        ) from None
    except IntegrityError:
        # The same Idempotency-Key committed by a concurrent request meanwhile: the files
        # this request stored belong to nothing (its element was rolled back).
        if element is not None:
            _element_files_delete(element)
        replay = _element_replay(request, caller, idempotency_key, digest)
        if replay is None:
            raise
        return replay
    return Status(202, element_out(request, _elements(caller).get(pk=element.pk)))


def _element_files_delete(element: Any) -> None:
    from django.core.files.storage import default_storage

    for name in [element.frontal_image.name, element.video.name, *element.refer_image_names()]:
        if name:
            default_storage.delete(name)


def _element_replay(request: HttpRequest, caller: ApiCaller, key: str, digest: str):
    record = _idempotent_record(caller, key, digest)
    if record is None:
        return None
    element = _elements(caller).filter(task_id=record.task_id).first()
    if element is None:  # the key was used for a task, with this very body: impossible
        raise ApiError(
            409,
            "idempotency_conflict",
            "This Idempotency-Key was used for another kind of request.",
            field="Idempotency-Key",
        )
    return Status(200, element_out(request, element))


@api.get(
    "/elements",
    response={200: list[ElementOut], **ERRORS},
    summary="The team's custom elements",
    tags=["elements"],
    url_name="api-elements-list",
)
def elements_list(request: HttpRequest, limit: int = Query(PAGE_MAX, ge=1, le=500)):
    """The key's team's custom elements, newest first (at most ``limit``, 1–500), deleted
    ones left out."""
    rows = _elements(request.auth).filter(deleted_at__isnull=True).order_by("-created_at", "-id")
    return [element_out(request, e) for e in rows[:limit]]


@api.get(
    "/elements/{uuid:code}",
    response={200: ElementOut, **ERRORS},
    summary="A custom element",
    tags=["elements"],
    url_name="api-elements-detail",
)
def elements_detail(request: HttpRequest, code: UUID):
    """The element with this ``code`` in the key's team (another team's code: 404),
    deleted ones included (``status`` deleted)."""
    element = _elements(request.auth).filter(code=code).first()
    if element is None:
        raise ApiError(404, "not_found", "No such element.")
    return element_out(request, element)


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
