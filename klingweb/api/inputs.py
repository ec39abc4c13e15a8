"""Turning an API request body (the vendor's field names) into a family's create form.

``POST /api/v1/tasks`` has no validation of its own: the JSON body is mapped onto the
family's Django form (``TaskFamily.form_class``, the protocol of ``tasks_app.forms``) and
that form decides, with the messages the page shows. This module only renames:

- a file input (``InputSpec.param``: ``image``, ``image_tail``, ``sound_file``,
  ``element_frontal_image``) given as an ``http(s)://`` URL → the form's ``<name>_url``;
  given as Base64 (raw, or a ``data:<type>;base64,`` URL) → an upload in ``<name>_file``,
  checked by content like any upload;
- ``watermark_info: {"enabled": bool}`` → the form's ``watermark`` box;
- any other key → the form field of that name (strings, numbers, booleans);
- an omitted field → the value the create page preselects (``Field.initial``).

A key the form does not know, ``external_task_id``/``callback_url`` (the portal sets them),
or a value of the wrong shape is refused with ``ApiError`` naming the field.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import QueryDict

from klingweb.api.errors import ApiError

#: Keys the portal fills in itself (KLING_API.md §5: every create body).
PORTAL_KEYS = frozenset({"external_task_id", "callback_url"})
#: Largest decoded Base64 input in bytes (the form's own limits are lower: 10 MB images,
#: 5 MB sound); the request body itself is capped by ``UPLOAD_MAX_REQUEST_BYTES``.
BASE64_MAX_BYTES = 20 * 1024 * 1024


def _decode_base64(value: str, *, field: str) -> bytes:
    text = value.strip()
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if ";base64" not in head:
            raise ApiError(400, "invalid", f"{field}: a data: URL must be Base64.", field=field)
    if len(text) > BASE64_MAX_BYTES * 4 // 3 + 8:
        raise ApiError(400, "too_large", f"{field} is larger than 20 MB.", field=field)
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not raw:
        raise ApiError(
            400,
            "invalid",
            f"{field} must be an http(s) URL or Base64-encoded file content.",
            field=field,
        )
    return raw


def _scalar(value: Any, *, field: str) -> str | None:
    """The form value of a JSON scalar: text; True → "on", False/None → absent."""
    if value is None or value is False:
        return None
    if value is True:
        return "on"
    if isinstance(value, str | int | float):
        return str(value)
    raise ApiError(400, "invalid", f"{field} must be a string, number or boolean.", field=field)


def form_from_body(family: Any, body: dict, *, team: Any, user: Any) -> tuple[Any, dict[str, str]]:
    """The bound create form of ``family`` for request ``body`` (without ``family``), and
    the map from form field names back to the body's field names (for error messages).

    Raises ``ApiError`` (400) for unknown keys, portal-set keys and badly shaped values.
    """
    form_class = family.get_form_class()
    specs = {spec.param: spec for spec in getattr(form_class, "inputs", ())}
    data = QueryDict(mutable=True)
    files: dict[str, Any] = {}
    names: dict[str, str] = {"watermark": "watermark_info", "source_video": "video_id"}
    for key, value in body.items():
        if key in PORTAL_KEYS:
            raise ApiError(400, "invalid", f"{key} is set by the portal; leave it out.", field=key)
        spec = specs.get(key)
        if spec is not None:
            for part in ("file", "url", "stored"):
                names[f"{spec.name}_{part}"] = key
            if value is None:
                continue
            if not isinstance(value, str):
                raise ApiError(400, "invalid", f"{key} must be a URL or Base64 text.", field=key)
            text = value.strip()
            if text.startswith(("http://", "https://")):
                data[f"{spec.name}_url"] = text
            else:
                raw = _decode_base64(text, field=key)
                files[f"{spec.name}_file"] = SimpleUploadedFile(key, raw)
            continue
        if key == "watermark_info":
            if value is None:
                continue
            if not isinstance(value, dict) or set(value) - {"enabled"}:
                raise ApiError(
                    400, "invalid", 'watermark_info must be {"enabled": true|false}.', field=key
                )
            if _scalar(value.get("enabled"), field=key):
                data["watermark"] = "on"
            continue
        if key in form_class.base_fields and key not in names:
            scalar = _scalar(value, field=key)
            if scalar is not None:
                data[key] = scalar
            continue
        raise ApiError(
            400, "unknown_field", f"{key} is not a field of {family.key} tasks.", field=key
        )
    # An omitted field takes what the create page preselects (mode std, 16:9, 5 s...).
    for name, field in form_class.base_fields.items():
        unset = name not in data and name not in names
        if unset and field.initial not in (None, "") and not isinstance(field.initial, bool):
            data[name] = str(field.initial)
    form = form_class(data, files, team=team, user=user)
    return form, names


def first_form_error(form: Any, names: dict[str, str]) -> ApiError:
    """The form's first error as an ``ApiError`` (400): its code (``invalid`` when none),
    the form's own message, and the body field it concerns (None for the whole body);
    every error in ``details``."""
    details = []
    for name, errors in form.errors.as_data().items():
        field = None if name == "__all__" else names.get(name, name)
        for error in errors:
            for message in error.messages:
                details.append(
                    {"code": error.code or "invalid", "message": message, "field": field}
                )
    if not details:
        return ApiError(400, "invalid", "The request is not valid.")
    first = details[0]
    return ApiError(400, first["code"], first["message"], field=first["field"], details=details)
