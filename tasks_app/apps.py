"""App config for tasks_app."""

from __future__ import annotations

from django.apps import AppConfig


class TasksAppConfig(AppConfig):
    """Tasks, the deduction ledger, budgets and jobs."""

    name = "tasks_app"
    verbose_name = "Tasks and billing"

    def ready(self) -> None:
        """Connect the cluster hook only (no work here): when a django-q2 worker process
        starts, the poll loop is started unless one runs (``jobs.cluster_worker_started``)."""
        from django_q.signals import post_spawn

        from tasks_app.jobs import cluster_worker_started

        post_spawn.connect(cluster_worker_started, dispatch_uid="klingweb-poll-loop-ensure")
