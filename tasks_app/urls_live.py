"""URLs of the task lists' one live request per page (``tasks_app.live``)."""

from __future__ import annotations

from django.urls import path

from tasks_app import live

urlpatterns = [
    path("t/<uuid:team>/tasks/live/", live.task_list_live, name="tasks-live"),
    path("t/<uuid:team>/tasks/mine/live/", live.task_mine_live, name="tasks-mine-live"),
]
