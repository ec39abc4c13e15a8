"""URLs of the usage reports (team, my usage, company, CSV exports), mounted at the root."""

from __future__ import annotations

from django.urls import path

from klingweb.reporting import views

urlpatterns = [
    path("t/<uuid:team>/usage/", views.usage_team, name="usage-team"),
    path(
        "t/<uuid:team>/usage/export/<str:table>.csv",
        views.usage_team_export,
        name="usage-team-export",
    ),
    path("usage/me/", views.usage_mine, name="usage-mine"),
    path("usage/me/export/<str:table>.csv", views.usage_mine_export, name="usage-mine-export"),
    path("usage/company/", views.usage_company, name="usage-company"),
    path(
        "usage/company/export/<str:table>.csv",
        views.usage_company_export,
        name="usage-company-export",
    ),
]
