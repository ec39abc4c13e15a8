"""Root URL configuration: each app owns its URLs under the prefixes set here."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("klingweb.accounts.urls")),
    path("", include("tasks_app.urls")),
    path("", include("klingweb.reporting.urls")),
    path("", include("tasks_app.urls_budgets")),
    path("", include("tasks_app.urls_ops")),
    path("", include("elements_app.urls")),
    path("", include("klingweb.api.urls")),
]
