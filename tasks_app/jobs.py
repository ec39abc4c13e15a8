"""Background jobs run by the django-q2 cluster. Thin: take primary keys, call a service.

Polling is not a job: it is the ``kling_poll`` process (``tasks_app.polling``).

Enqueue with ``async_task("tasks_app.jobs.<name>", ...)``, always from
``transaction.on_commit`` so a job never sees a row its request has not committed.
"""

from __future__ import annotations


def submit_task(task_pk: int) -> None:
    """Send the create call of a queued task (``tasks_app.submission.task_submit``)."""
    from tasks_app.submission import task_submit

    task_submit(task_pk=task_pk)


def keep_media(task_pk: int) -> None:
    """Copy a succeeded task's result files into storage (``tasks_app.media.media_keep``)."""
    from tasks_app.media import media_keep

    media_keep(task_pk=task_pk)


def keep_media_many(task_pks: list[int]) -> None:
    """Fan out media keeping for the succeeded tasks of one applied batch
    (``tasks_app.services.apply_batch``): one ``keep_media`` job per task, so the downloads
    spread over the cluster's workers while the poller enqueued a single job."""
    from django_q.tasks import async_task

    for task_pk in task_pks:
        async_task("tasks_app.jobs.keep_media", task_pk)


def check_budget_alerts(team_pk: int) -> None:
    """Raise the 80/90/100 % budget alerts a team has reached, once per period each."""
    from tasks_app.budgets import budget_alerts_check

    budget_alerts_check(team_pk=team_pk)


def sweep_media() -> None:
    """Retry keeping results not kept yet (``tasks_app.media.media_sweep``), and delete
    uploads kept across a form error that were never used (``tasks_app.kept.kept_sweep``:
    older than an hour)."""
    from tasks_app.kept import kept_sweep
    from tasks_app.media import media_sweep

    media_sweep()
    kept_sweep()


def check_all_budget_alerts() -> None:
    """Budget alerts of every team with a budget (safety net for lost per-task jobs)."""
    from tasks_app.budgets import budget_alerts_check_all

    budget_alerts_check_all()


def reconcile_ledger() -> None:
    """Nightly: compare the ledger with the vendor (``tasks_app.reconcile.ledger_reconcile``),
    then the daily usage rollups with the ledger (``rollups_reconcile``: logged, not fixed)."""
    from tasks_app.reconcile import ledger_reconcile, rollups_reconcile

    ledger_reconcile()
    rollups_reconcile()


def task_confirm(task_pk: int, body: dict) -> str:
    """Confirm a final callback by querying Kling, and apply the whole answer
    (``tasks_app.callbacks.callback_confirm``; the callback ``body`` is applied instead
    when Kling cannot confirm it). Enqueued by the callback receiver on commit."""
    from tasks_app.callbacks import callback_confirm

    return callback_confirm(task_pk=task_pk, body=body)
