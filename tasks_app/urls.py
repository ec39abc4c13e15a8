"""URLs of tasks_app: task lists, create forms per family, task pages, the callback."""

from __future__ import annotations

from django.urls import path

from tasks_app import views

urlpatterns = [
    path("t/<uuid:team>/tasks/", views.task_list, name="tasks-list"),
]
