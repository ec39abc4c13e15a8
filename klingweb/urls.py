"""Root URL configuration: each app owns its URLs under the prefixes set here."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import include, path
from django.views.decorators.http import require_safe


@require_safe
def favicon(request: HttpRequest) -> HttpResponse:
    """GET /favicon.ico: a permanent redirect to the icon in static files
    (``static/img/favicon.ico``), for browsers and tools that ask the root path whatever the
    page's ``<link rel="icon">`` says. Public; GET/HEAD only (else 405)."""
    return redirect(static("img/favicon.ico"), permanent=True)


urlpatterns = [
    path("favicon.ico", favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("", include("klingweb.accounts.urls")),
    path("", include("tasks_app.urls_live")),
    path("", include("tasks_app.urls")),
    path("", include("klingweb.reporting.urls")),
    path("", include("tasks_app.urls_budgets")),
    path("", include("tasks_app.urls_ops")),
    path("", include("elements_app.urls_live")),
    path("", include("elements_app.urls")),
    path("", include("klingweb.api.urls")),
]
