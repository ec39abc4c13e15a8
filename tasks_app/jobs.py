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
    """One poll cycle: submit due queued tasks, then poll every task that is due
    (``tasks_app.polling.poll_cycle`` → ``tasks_poll``)."""
    from tasks_app.polling import poll_cycle

    poll_cycle()


def poll_loop() -> None:
    """A cycle every 5 s for ~55 s under a cluster-wide lease, then re-arm
    (``tasks_app.polling.poll_loop``). Started by the ``klingweb-poll`` schedule."""
    from tasks_app.polling import poll_loop as loop

    loop(rearm=True)


def cluster_worker_started(sender: object = None, proc_name: str = "", **kwargs: object) -> None:
    """Receiver of django-q2's ``post_spawn`` (a cluster worker process started; connected in
    ``TasksAppConfig.ready``): start the poll loop unless one runs
    (``tasks_app.polling.poll_loop_ensure``). Does nothing when jobs run synchronously
    (``Q_CLUSTER["sync"]``, tests: django-q2 then "spawns" a worker for every job). Never
    raises: a worker must start anyway."""
    import logging

    from django_q.conf import Conf

    from tasks_app.polling import poll_loop_ensure

    if Conf.SYNC:
        return
    try:
        poll_loop_ensure()
    except Exception:
        logging.getLogger(__name__).exception("could not start the poll loop")


def keep_media(task_pk: int) -> None:
    """Copy a succeeded task's result files into storage (``tasks_app.media.media_keep``)."""
    from tasks_app.media import media_keep

    media_keep(task_pk=task_pk)


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
    """Nightly: compare the ledger with the vendor (``tasks_app.reconcile.ledger_reconcile``)."""
    from tasks_app.reconcile import ledger_reconcile

    ledger_reconcile()
