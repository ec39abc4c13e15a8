"""URLs of budgets, and the staff operations pages (cluster stream)."""

from __future__ import annotations

from django.urls import path

from tasks_app import views_admin

urlpatterns = [
    path("t/<uuid:team>/budgets/", views_admin.budgets, name="tasks-budgets"),
    path(
        "t/<uuid:team>/budgets/<uuid:code>/delete/",
        views_admin.budget_delete,
        name="tasks-budget-delete",
    ),
    path("ops/reconciliation/", views_admin.reconciliation, name="tasks-reconciliation"),
    path(
        "ops/reconciliation/<uuid:code>/",
        views_admin.reconciliation_resolve,
        name="tasks-reconciliation-resolve",
    ),
    path("ops/stale/", views_admin.stale_tasks, name="tasks-stale"),
]
