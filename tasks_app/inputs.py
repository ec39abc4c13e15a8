"""Uploaded inputs handed to Kling: by signed, expiring URL when the portal has a public
address, else (images and sound only) as raw Base64 inside the JSON body.

Why URLs: the vendor takes images and audio "as Base64 or URL" but element reference videos
by URL only (kling-docs/elements.txt ``video_url``; KLING_API_2026.md §4.9), and a Base64
body is built in the worker's memory — a 200 MB clip becomes a ~267 MB JSON string. So:

- **Object store configured** (``AWS_STORAGE_BUCKET_NAME``): every upload goes as a
  presigned bucket ``GET`` URL (``klingweb.storage.media_presigned_input_url``); Kling reads
  the bucket directly and the portal serves nothing.
- **``PUBLIC_BASE_URL`` set** (local disk): every upload goes as
  ``PUBLIC_BASE_URL/kling/input/<token>/input<ext>``, served by ``kling_input``. The token is
  ``django.core.signing.dumps(storage name)`` with its own salt (``INPUT_SALT``) and a time
  stamp; it expires after ``settings.KLING_INPUT_URL_MAX_AGE`` (default 24 h). The token is
  the only key: no session, no listing, nothing else is reachable under ``/kling/input/``.
  The name in the token is signed, not encrypted (it is a random storage name under
  ``uploads/<team code>/``).
- **Neither**: images and sound go as raw Base64 (the behaviour before URLs); a video
  cannot be sent at all (``InputNeedsPublicAddress``) — the element form refuses it before
  anything is queued (``elements_app.forms.ElementForm``).

The files served are the ones ``tasks_app.uploads.upload_save`` stored: their extension was
decided from their content, and the ``Content-Type`` is the one of that checked type
(``upload_content_type``); a file of no known type is never served.
"""

from __future__ import annotations

import base64
import errno
import posixpath
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.http import require_safe

from klingweb.storage import is_bucket, media_presigned_input_url
from tasks_app.uploads import UPLOAD_ROOT, upload_content_type

#: Salt of input tokens: a token signed for any other purpose (callbacks, ...) fails here.
INPUT_SALT = "tasks_app.inputs.kling-input"
#: How long an input URL stays valid when the setting is missing (Kling fetches an input
#: when it starts the task; its docs do not say how long a task may wait before that).
DEFAULT_MAX_AGE = timedelta(hours=24)
#: The longest a presigned bucket URL may live (SigV4: 7 days).
PRESIGNED_MAX_SECONDS = 7 * 24 * 3600
#: What the person sees when a video cannot be handed to Kling.
NO_PUBLIC_ADDRESS = (
    "Videos go to Kling as a link it downloads, and this portal has no public address: "
    "ask the operator to set PUBLIC_BASE_URL (or configure the object store)."
)


class InputNeedsPublicAddress(Exception):
    """An input that can only go to Kling by URL (a video), and the portal has neither a
    ``PUBLIC_BASE_URL`` nor an object store. ``str(exc)`` is ``NO_PUBLIC_ADDRESS``."""


def input_max_age() -> timedelta:
    """``settings.KLING_INPUT_URL_MAX_AGE`` (a ``timedelta``), default 24 hours."""
    value = getattr(settings, "KLING_INPUT_URL_MAX_AGE", None)
    return value if isinstance(value, timedelta) else DEFAULT_MAX_AGE


def inputs_by_url_available() -> bool:
    """True when uploads can go to Kling by URL: an object store is configured, or
    ``settings.PUBLIC_BASE_URL`` is set (the portal serves them itself)."""
    return is_bucket() or bool((getattr(settings, "PUBLIC_BASE_URL", "") or "").strip())


def _is_upload_name(name: Any) -> bool:
    """True for a plain storage name under ``uploads/`` (no absolute path, no ``..``)."""
    if not isinstance(name, str) or not name.startswith(f"{UPLOAD_ROOT}/"):
        return False
    return posixpath.normpath(name) == name and ".." not in name.split("/")


def input_token_make(name: str) -> str:
    """The signed, time-stamped token of storage ``name`` (URL-safe: ``[A-Za-z0-9_:-]``)."""
    return signing.dumps(name, salt=INPUT_SALT)


def input_token_read(token: str, *, max_age: timedelta | None = None) -> str | None:
    """The storage name signed in ``token``, or None when the token is forged, made for
    another purpose, older than ``max_age`` (default ``input_max_age()``) or names anything
    but an upload."""
    try:
        name = signing.loads(
            token, salt=INPUT_SALT, max_age=max_age if max_age is not None else input_max_age()
        )
    except signing.BadSignature:  # SignatureExpired is one too
        return None
    return name if _is_upload_name(name) else None


def _url_filename(name: str) -> str:
    """The last URL segment of an input: ``input.<ext of the checked type>``, so that a
    vendor that reads the extension of a URL (".mp4/.mov only") sees the right one."""
    return "input" + posixpath.splitext(name)[1].lower()


def input_url(name: str) -> str | None:
    """The URL Kling fetches upload ``name`` from, or None when it must go as Base64.

    With an object store: a presigned bucket URL (``media_presigned_input_url``, valid
    ``input_max_age()``, at most 7 days). Else with ``PUBLIC_BASE_URL``:
    ``<PUBLIC_BASE_URL>/kling/input/<token>/input<ext>`` (``tasks-kling-input``). None
    without either, and for a file of no known type (never served by URL).
    """
    content_type = upload_content_type(name)
    if content_type is None or not _is_upload_name(name):
        return None
    if is_bucket():
        seconds = min(int(input_max_age().total_seconds()), PRESIGNED_MAX_SECONDS)
        return media_presigned_input_url(name, content_type=content_type, expires_s=seconds)
    base = (getattr(settings, "PUBLIC_BASE_URL", "") or "").rstrip("/")
    if not base:
        return None
    path = reverse(
        "tasks-kling-input",
        kwargs={"token": input_token_make(name), "filename": _url_filename(name)},
    )
    return base + path


def input_for_kling(name: str) -> str:
    """The value of a create-body field holding upload ``name``: its URL (``input_url``),
    or its raw Base64 (no ``data:`` prefix, KLING_API.md §5) when there is no public
    address.

    Raises ``FileNotFoundError`` when the upload is gone from storage, and
    ``InputNeedsPublicAddress`` for a video without a public address (the vendor takes
    reference videos by URL only).
    """
    url = input_url(name)
    if url is not None:
        if not default_storage.exists(name):
            raise FileNotFoundError(errno.ENOENT, "No such upload", name)
        return url
    if (upload_content_type(name) or "").startswith("video/"):
        raise InputNeedsPublicAddress(NO_PUBLIC_ADDRESS)
    with default_storage.open(name, "rb") as fh:
        return base64.b64encode(fh.read()).decode("ascii")


def inputs_resolve(value: Any) -> Any:
    """``value`` (a task's stored params) with every ``{"$file": name}`` replaced by
    ``input_for_kling(name)``; lists and dicts are walked recursively, nothing else changes.
    Raises what ``input_for_kling`` raises."""
    if isinstance(value, dict):
        if set(value) == {"$file"}:
            return input_for_kling(value["$file"])
        return {key: inputs_resolve(item) for key, item in value.items()}
    if isinstance(value, list):
        return [inputs_resolve(item) for item in value]
    return value


def inputs_need_url(value: Any) -> bool:
    """True when stored params ``value`` hold an upload that can only go by URL (a video)."""
    if isinstance(value, dict):
        if set(value) == {"$file"}:
            return (upload_content_type(str(value["$file"])) or "").startswith("video/")
        return any(inputs_need_url(item) for item in value.values())
    if isinstance(value, list):
        return any(inputs_need_url(item) for item in value)
    return False


@require_safe
def kling_input(request: HttpRequest, token: str, filename: str) -> HttpResponse:
    """GET/HEAD /kling/input/<token>/input<ext> (``tasks-kling-input``): one uploaded input,
    for Kling to fetch.

    No session or sign-in: the signed token (``input_token_make``) is the only key. 404 for
    a forged, expired (``KLING_INPUT_URL_MAX_AGE``) or other-purpose token, a last segment
    that is not the file's (``input<ext>``), a file of no known type, or a file gone from
    storage; other methods 405. Answers the bytes with the ``Content-Type`` of the type
    checked at upload (``image/png``, ``image/jpeg``, ``audio/*``, ``video/mp4``,
    ``video/quicktime``), ``X-Content-Type-Options: nosniff``, a sandboxing CSP, no caching
    by shared caches. With an object store: a ``302`` to a presigned bucket URL instead.
    """
    name = input_token_read(token)
    content_type = upload_content_type(name) if name else None
    if name is None or content_type is None or filename != _url_filename(name):
        raise Http404("No such input.")
    if is_bucket():
        response: HttpResponse = HttpResponseRedirect(
            media_presigned_input_url(name, content_type=content_type)
        )
    else:
        try:
            handle = default_storage.open(name, "rb")
        except FileNotFoundError:
            raise Http404("No such input.") from None
        response = FileResponse(handle, content_type=content_type, filename=filename)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, no-store"
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex"
    return response
