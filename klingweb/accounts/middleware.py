"""Turns the access helpers' exceptions into responses (login redirect, 405)."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed

from klingweb.accounts.access import LoginRequired, MethodNotAllowed


class AccessMiddleware:
    """Maps ``LoginRequired`` to a login redirect and ``MethodNotAllowed`` to HTTP 405.

    For an HTMX request the login redirect is sent as ``HX-Redirect`` so the whole page,
    not a fragment, goes to the login form.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """Answer the two access exceptions; leave every other exception to Django."""
        if isinstance(exception, LoginRequired):
            response = redirect_to_login(request.get_full_path())
            if getattr(request, "htmx", False):
                response["HX-Redirect"] = response["Location"]
            return response
        if isinstance(exception, MethodNotAllowed):
            return HttpResponseNotAllowed(exception.allowed)
        return None
