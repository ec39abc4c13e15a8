"""URLs of tasks_app: task lists, create forms per family, task pages, files, the callback."""

from __future__ import annotations

from django.urls import path

from tasks_app import callbacks, inputs, views, views_estimate

urlpatterns = [
    path("t/<uuid:team>/tasks/", views.task_list, name="tasks-list"),
    path("t/<uuid:team>/tasks/mine/", views.task_mine, name="tasks-mine"),
    path("t/<uuid:team>/tasks/new/", views.task_new, name="tasks-new"),
    path("t/<uuid:team>/tasks/new/<str:family>/", views.task_create, name="tasks-create"),
    path(
        "t/<uuid:team>/tasks/new/<str:family>/estimate/",
        views_estimate.task_estimate_partial,
        name="tasks-estimate",
    ),
    path("t/<uuid:team>/tasks/<uuid:code>/", views.task_detail, name="tasks-detail"),
    path("t/<uuid:team>/tasks/<uuid:code>/row/", views.task_row, name="tasks-row"),
    path("t/<uuid:team>/tasks/<uuid:code>/cancel/", views.task_cancel_view, name="tasks-cancel"),
    path("t/<uuid:team>/tasks/<uuid:code>/end/", views.task_end_view, name="tasks-end"),
    path("t/<uuid:team>/tasks/<uuid:code>/json/", views.task_json, name="tasks-json"),
    path("t/<uuid:team>/tasks/<uuid:code>/media.zip", views.task_media_zip, name="tasks-media-zip"),
    path(
        "t/<uuid:team>/tasks/<uuid:code>/media/<uuid:media>/",
        views.task_media_file,
        name="tasks-media-file",
    ),
    path(
        "t/<uuid:team>/uploads/<path:name>", views.task_input, name="tasks-input"
    ),  # name: after uploads/<team>/
    path("kling/callback/<str:token>/", callbacks.task_callback, name="tasks-callback"),
    # Inputs for Kling to fetch; the signed token is the only key (tasks_app/inputs.py).
    path("kling/input/<str:token>/<str:filename>", inputs.kling_input, name="tasks-kling-input"),
]
