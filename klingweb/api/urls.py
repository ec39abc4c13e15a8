"""URLs of the API app: the team's API-key settings pages, and ``/api/v1/`` itself."""

from __future__ import annotations

from django.urls import path

from klingweb.api import views
from klingweb.api.api import api, media_file

urlpatterns = [
    path("t/<uuid:team>/settings/api-keys/", views.api_keys, name="api-keys"),
    path(
        "t/<uuid:team>/settings/api-keys/<uuid:key>/revoke/",
        views.api_key_revoke_view,
        name="api-key-revoke",
    ),
    path("t/<uuid:team>/settings/webhooks/", views.webhooks, name="api-webhooks"),
    path(
        "t/<uuid:team>/settings/webhooks/<uuid:endpoint>/test/",
        views.webhook_test,
        name="api-webhook-test",
    ),
    path(
        "t/<uuid:team>/settings/webhooks/<uuid:endpoint>/rotate/",
        views.webhook_rotate,
        name="api-webhook-rotate",
    ),
    path(
        "t/<uuid:team>/settings/webhooks/<uuid:endpoint>/delete/",
        views.webhook_delete,
        name="api-webhook-delete",
    ),
    path("api/v1/media/<str:token>", media_file, name="api-media"),
    path("api/v1/", api.urls),
]
