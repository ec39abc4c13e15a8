"""URL of the element library's one live request per page (``elements_app.live``)."""

from __future__ import annotations

from django.urls import path

from elements_app import live

urlpatterns = [
    path("t/<uuid:team>/elements/live/", live.element_list_live, name="elements-live"),
]
