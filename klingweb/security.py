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
- Fetching what the vendor points at (issue 17): ``PinnedTransport`` is the httpx transport
  of every download of a vendor URL. Per request (each redirect hop is a request of its own)
  it resolves the host once, checks the addresses, and connects to the checked address (the
  ``Host`` header and TLS name stay the host's), so a DNS answer that changes between the
  check and the connection (rebinding) cannot move the download elsewhere. A URL whose
  (scheme, host, port) is one of the configured Kling origins (``kling_origins``: the base
  URLs and the operator's ``KLING_CUSTOM_BASE_URLS``) may be on a private address (the
  sandbox on loopback); any other must resolve to public addresses only — another port of
  the Kling host is another origin.
- Vendor URLs kept or shown (issue 17): ``vendor_urls_http_only`` drops every URL field of a
  vendor object that is not ``http(s)://host...`` (``javascript:``, ``data:``, ``file:``...)
  with a logged warning; ``is_http_url`` is the same test for a single value.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.utils.html import escape
from django.views.debug import ExceptionReporter
from django.views.debug import SafeExceptionReporterFilter as DjangoReporterFilter

from klingweb.redaction import redact

if TYPE_CHECKING:
    from klingweb.kling import KlingTask

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


# --- Fetching vendor URLs (SSRF guard) ----------------------------------------------------------

#: (scheme, host, port) of a URL: what the fetch guard compares.
Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}


class FetchRefused(Exception):
    """A URL the portal does not fetch: not http(s), or outside the Kling origins and on a
    non-public address. ``str(exc)`` says which."""


def url_origin(url: str | httpx.URL) -> Origin | None:
    """``(scheme, host, port)`` of ``url`` (lower-case scheme and host; the scheme's default
    port when none is written), or None for a URL without an http(s) scheme or a host."""
    try:
        parts = urlsplit(str(url))
        port = parts.port
    except ValueError:  # a port that is not a number
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return scheme, host, port or _DEFAULT_PORTS[scheme]


def kling_origins(*base_urls: str) -> frozenset[Origin]:
    """The origins a result may come from on a private address: ``KLING_API_BASE_URL``,
    every ``KLING_CUSTOM_BASE_URLS`` entry, and ``base_urls`` (e.g. a team's account)."""
    urls = [settings.KLING_API_BASE_URL, *settings.KLING_CUSTOM_BASE_URLS, *base_urls]
    return frozenset(origin for u in urls if u and (origin := url_origin(u)) is not None)


def _addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # An IPv6 link-local answer may carry a scope ("fe80::1%eth0"): the address is what counts.
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def fetch_address(url: httpx.URL, trusted: frozenset[Origin] | None) -> str:
    """Resolve ``url``'s host once and return the address to connect to.

    ``trusted``: origins allowed on any address (``kling_origins``); every other origin must
    resolve to global addresses only. ``None`` checks no address (tests of other limits).
    Raises ``FetchRefused`` (scheme, non-public address) or ``httpx.ConnectError`` (the name
    does not resolve).
    """
    origin = url_origin(url)
    if origin is None:
        raise FetchRefused(f"refusing to fetch a non-http(s) URL ({url.scheme or 'none'})")
    host, port = origin[1], origin[2]
    try:
        addresses = _addresses(host, port)
    except OSError as exc:
        raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from None
    if not addresses:
        raise httpx.ConnectError(f"cannot resolve {host}: no address")
    if (
        trusted is not None
        and origin not in trusted
        and any(not address.is_global for address in addresses)
    ):
        raise FetchRefused(f"refusing to fetch from a non-public address ({host}:{port})")
    return str(addresses[0])


class PinnedTransport(httpx.BaseTransport):
    """An httpx transport that connects each request to the address ``fetch_address``
    resolved and checked for it, keeping the ``Host`` header and the TLS server name (SNI and
    certificate check) of the URL's host. ``transport_options`` go to ``httpx.HTTPTransport``.
    """

    def __init__(self, trusted: frozenset[Origin] | None, **transport_options: Any):
        self._trusted = trusted
        self._inner = httpx.HTTPTransport(**transport_options)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Resolve and check once, then send ``request`` to that address."""
        address = fetch_address(request.url, self._trusted)
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=address),
            headers=request.headers,  # Host: the name, not the address
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": request.url.host},
        )
        return self._inner.handle_request(pinned)

    def close(self) -> None:
        """Close the connection pool."""
        self._inner.close()


# --- Vendor URLs kept or shown -------------------------------------------------------------------

#: Keys of vendor objects whose values are URLs: url, url_1.., watermark_url, trial_url,
#: image_url, video_url, cover_url, and an element's frontal_image.
_URL_KEY = re.compile(r"^(url|url_\d+|.*_url|frontal_image)$")


def is_http_url(value: Any) -> bool:
    """True for a string ``http://`` or ``https://`` URL with a host."""
    return isinstance(value, str) and url_origin(value) is not None


def vendor_urls_http_only(data: Any, *, where: str = "vendor object") -> Any:
    """A copy of the vendor object ``data`` (dicts and lists, any depth) without the URL
    fields (``url``, ``url_N``, ``*_url``, ``frontal_image``) whose value is a non-empty string that is not an
    http(s) URL with a host. Each one dropped is logged as a warning naming ``where``.
    Non-URL fields are kept as they are. Returns ``data`` itself when nothing is dropped."""
    dropped: list[str] = []

    def clean(value: Any, path: str) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                here = f"{path}.{key}"
                if (
                    isinstance(key, str)
                    and _URL_KEY.match(key)
                    and isinstance(item, str)
                    and item
                    and not is_http_url(item)
                ):
                    dropped.append(f"{here} ({item[:40]!r})")
                    continue
                out[key] = clean(item, here)
            return out
        if isinstance(value, list):
            return [clean(item, f"{path}[{n}]") for n, item in enumerate(value)]
        return value

    cleaned = clean(data, "")
    if not dropped:
        return data
    for field in dropped:
        log.warning("%s: dropped a vendor URL that is not http(s): %s", where, field)
    return cleaned


def vendor_task_http_only(remote: KlingTask, *, where: str) -> KlingTask:
    """``remote`` re-parsed from its ``raw`` without non-http(s) URLs
    (``vendor_urls_http_only``), or ``remote`` itself when it has none."""
    from klingweb.kling import parse_task

    cleaned = vendor_urls_http_only(remote.raw, where=where)
    return remote if cleaned is remote.raw else parse_task(cleaned)
