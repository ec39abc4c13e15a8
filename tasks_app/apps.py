"""App config for tasks_app."""

from __future__ import annotations

from django.apps import AppConfig


class TasksAppConfig(AppConfig):
    """Tasks, the deduction ledger, budgets and jobs."""

    name = "tasks_app"
    verbose_name = "Tasks and billing"

    def ready(self) -> None:
        """Connect the receivers that version a team's settings for cached usage pages
        (``tasks_app.rollups.settings_signals_connect``)."""
        from tasks_app.rollups import settings_signals_connect

        settings_signals_connect()
