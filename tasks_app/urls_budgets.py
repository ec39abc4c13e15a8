"""URLs of a team's budgets pages."""

from __future__ import annotations

from django.urls import path

from tasks_app import views_budgets

urlpatterns = [
    path("t/<uuid:team>/budgets/", views_budgets.budgets, name="tasks-budgets"),
    path(
        "t/<uuid:team>/budgets/<uuid:code>/delete/",
        views_budgets.budget_delete,
        name="tasks-budget-delete",
    ),
]
