"""Background jobs run by the django-q2 cluster. Thin: take primary keys, call a service.

Enqueue with ``async_task("tasks_app.jobs.<name>", ...)``, always from
``transaction.on_commit`` so a job never sees a row its request has not committed.
"""

from __future__ import annotations


def submit_task(task_pk: int) -> None:
    """Send the create call of a queued task (``tasks_app.submission.task_submit``)."""
    from tasks_app.submission import task_submit

    task_submit(task_pk=task_pk)


def poll_due() -> None:
    """One poll cycle over every task that is due (``tasks_app.polling.tasks_poll``)."""
    from tasks_app.polling import tasks_poll

    tasks_poll()


def keep_media(task_pk: int) -> None:
    """Copy a succeeded task's result files into storage (``tasks_app.media.media_keep``)."""
    from tasks_app.media import media_keep

    media_keep(task_pk=task_pk)


def check_budget_alerts(team_pk: int) -> None:
    """Raise the 80/90/100 % budget alerts a team has reached, once per period each."""
    from tasks_app.budgets import budget_alerts_check

    budget_alerts_check(team_pk=team_pk)
