"""Security plumbing shared by every app (issue 9, "Attacks and bad input").

- ``UploadLimitMiddleware``: refuses a request whose declared body (``CONTENT_LENGTH``) is
  larger than the ceiling of its URL with HTTP 413, before anything reads the body.
  Ceilings: ``settings.UPLOAD_MAX_REQUEST_BYTES`` (25 MB) for every URL, except the URL names
  in ``settings.UPLOAD_LARGE_REQUESTS`` (``elements-create``: 220 MB, a 200 MB reference video
  plus the form). Django reads a WSGI body through ``LimitedStream(CONTENT_LENGTH)``, so a body
  without (or with a smaller) ``Content-Length`` is never read past the declared size; each
  file is then checked by its ``UploadedFile.size`` before it is decoded
  (``tasks_app.validators``, ``elements_app.validators``).
- ``SecurityHeadersMiddleware``: ``Permissions-Policy`` (no camera, microphone, geolocation,
  payment, USB) on every response. ``Content-Security-Policy`` comes from django-csp
  (``settings.CONTENT_SECURITY_POLICY``); the other headers from Django's
  ``SecurityMiddleware``.
- Sign-in throttling: ``klingweb.backends.RequestAxesBackend`` (django-axes).
- Log lines: ``klingweb.redaction`` (``redact``, ``RedactingFilter``).
- ``SafeExceptionReporterFilter``/``SafeExceptionReporter``: error reports (the DEBUG page,
  the e-mail to ``ADMINS``) hide local variables whose names look secret (``*key*``,
  ``*token*``, ``*secret*``, ``headers`` with ``Authorization``) in every frame, not only in
  functions decorated with ``sensitive_variables``, and pass their text through ``redact``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.utils.html import escape
from django.views.debug import ExceptionReporter
from django.views.debug import SafeExceptionReporterFilter as DjangoReporterFilter

from klingweb.redaction import redact

log = logging.getLogger(__name__)

# --- Request size ceiling -----------------------------------------------------------------


def request_ceiling(request: HttpRequest) -> int:
    """The largest body (bytes) the URL of ``request`` accepts: the URL name's entry in
    ``settings.UPLOAD_LARGE_REQUESTS``, else ``settings.UPLOAD_MAX_REQUEST_BYTES``."""
    default = int(settings.UPLOAD_MAX_REQUEST_BYTES)
    large: dict[str, int] = getattr(settings, "UPLOAD_LARGE_REQUESTS", {}) or {}
    if not large:
        return default
    try:
        name = resolve(request.path_info).url_name
    except Resolver404:
        return default
    return int(large.get(name or "", default))


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MB"


class UploadLimitMiddleware:
    """Answers 413 to a request whose ``CONTENT_LENGTH`` is over the URL's ceiling
    (``request_ceiling``) without reading the body. Place it before anything that reads
    ``request.POST``/``request.body`` (CSRF, sessions do not; CSRF does)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except (TypeError, ValueError):
            length = 0
        if length > int(settings.UPLOAD_MAX_REQUEST_BYTES):
            limit = request_ceiling(request)
            if length > limit:
                return self.too_large(request, length, limit)
        return self.get_response(request)

    @staticmethod
    def too_large(request: HttpRequest, length: int, limit: int) -> HttpResponse:
        """HTTP 413 with a sentence a person can act on (plain HTML; no template)."""
        text = (
            f"The upload is too large: {_megabytes(length)} sent, at most "
            f"{_megabytes(limit)} accepted here. Use smaller files, or paste a URL instead."
        )
        log.warning("refused a %d-byte request to %s (limit %d)", length, request.path, limit)
        body = (
            "<!doctype html><title>Upload too large</title>"
            f"<h1>Upload too large</h1><p>{escape(text)}</p>"
        )
        return HttpResponse(body, status=413)


class SecurityHeadersMiddleware:
    """Adds ``Permissions-Policy`` (browser features the portal never uses are off)."""

    POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()"

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Permissions-Policy", self.POLICY)
        return response


def safe_file_headers(response: HttpResponse) -> HttpResponse:
    """Mark a response carrying a user's or the vendor's file as inert: a CSP sandbox (no
    script, no plugin, a unique origin even if a browser renders it) and ``nosniff``."""
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    return response


# --- Error reports ----------------------------------------------------------------------------


class SafeExceptionReporterFilter(DjangoReporterFilter):
    """Django's filter, plus: in every frame (decorated or not, DEBUG or not) a local whose
    name matches ``hidden_settings`` (``API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE``) is
    replaced by stars, dicts are cleansed key by key (``{"Authorization": ...}``), and
    strings go through ``redact``; ``request.META`` strings too (callback paths)."""

    def get_traceback_frame_variables(self, request, tb_frame):
        items = super().get_traceback_frame_variables(request, tb_frame)
        return [(name, self._cleanse_variable(name, value)) for name, value in items]

    def _cleanse_variable(self, name: str, value: Any) -> Any:
        if isinstance(value, str) and value == self.cleansed_substitute:
            return value
        if isinstance(name, str) and self.hidden_settings.search(name):
            return self.cleansed_substitute
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, dict):
            return {
                k: self._cleanse_variable(k if isinstance(k, str) else "", v)
                for k, v in value.items()
            }
        return value

    def get_safe_request_meta(self, request):
        meta = super().get_safe_request_meta(request)
        return {k: redact(v) if isinstance(v, str) else v for k, v in meta.items()}


class SafeExceptionReporter(ExceptionReporter):
    """Error reports whose final text and HTML pass through ``redact`` (the request path of
    a callback carries its token; a JWT may sit in any repr)."""

    def get_traceback_html(self):
        return redact(str(super().get_traceback_html()))

    def get_traceback_text(self):
        return redact(str(super().get_traceback_text()))
