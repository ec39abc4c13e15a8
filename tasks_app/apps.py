"""App config for tasks_app."""

from __future__ import annotations

from django.apps import AppConfig


class TasksAppConfig(AppConfig):
    """Tasks, the deduction ledger, budgets and jobs."""

    name = "tasks_app"
    verbose_name = "Tasks and billing"
