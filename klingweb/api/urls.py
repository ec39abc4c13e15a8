"""URLs of the API app: the team's API-key settings pages, and ``/api/v1/`` itself."""

from __future__ import annotations

from django.urls import path

from klingweb.api import views

urlpatterns = [
    path("t/<uuid:team>/settings/api-keys/", views.api_keys, name="api-keys"),
    path(
        "t/<uuid:team>/settings/api-keys/<uuid:key>/revoke/",
        views.api_key_revoke_view,
        name="api-key-revoke",
    ),
]
