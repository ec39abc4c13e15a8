"""URLs of the staff-only operations pages (reconciliation issues, stale tasks)."""

from __future__ import annotations

from django.urls import path

from tasks_app import views_ops

urlpatterns = [
    path("ops/reconciliation/", views_ops.reconciliation, name="tasks-reconciliation"),
    path(
        "ops/reconciliation/<uuid:code>/",
        views_ops.reconciliation_resolve,
        name="tasks-reconciliation-resolve",
    ),
    path("ops/stale/", views_ops.stale_tasks, name="tasks-stale"),
]
