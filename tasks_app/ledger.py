"""The deduction ledger: how a ledger row is built and when a task's charge is recorded.

One module for "how is a team billed?": ``Deduction`` rows (``tasks_app.models``) are
append-only, and this module is the only place that makes them.

- ``deduction_row``: an unsaved row for a task (team, member, family, model, mode and status
  copied from the task), used by every writer below so they fill it the same way.
- ``deduction_record``: the task's primary charge, recorded by
  ``tasks_app.services.task_apply_remote`` in the transaction that finishes the task —
  exactly once (the task row is locked, and a unique constraint backs it up).
- ``deduction_append``: a correction row (reconciliation), pointing at the row it corrects.

Units are units of Kling credit (``Decimal``, 3 places), the vendor's
``final_unit_deduction`` (KLING_API.md §4). Budgets read the ledger (``tasks_app.budgets``);
reports aggregate it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction

from tasks_app.models import Deduction, Status, Task

log = logging.getLogger(__name__)


def deduction_row(
    task: Task,
    *,
    units: Decimal,
    recorded_at: datetime,
    corrects: Deduction | None = None,
    note: str = "",
) -> Deduction:
    """An unsaved ledger row charging ``units`` (units of Kling credit; negative for a
    correction that gives units back) for ``task`` at ``recorded_at`` (aware datetime).

    Team, member (the task's creator), family, model, mode and status are copied from the
    task. ``corrects``: the row this one corrects (None for a primary row).
    """
    return Deduction(
        team_id=task.team_id,
        task=task,
        member_id=task.creator_id,
        family=task.family,
        model_name=task.model_name,
        mode=task.mode,
        task_status=task.status,
        units=units,
        recorded_at=recorded_at,
        corrects=corrects,
        note=note,
    )


def deduction_record(*, task: Task, charged_at: datetime) -> Deduction | None:
    """Record the primary charge of a task that has just finished.

    ``task``: the finished task as saved (its ``status`` and ``final_unit_deduction``,
    units of Kling credit, are read); ``charged_at``: when the team was charged (aware
    datetime; usage days and budget periods count from it). Rules: nothing when the vendor
    sent no ``final_unit_deduction``; a succeeded task is always recorded (zero included);
    a failed or refused one only when the vendor charged more than zero units.

    Must run inside the transaction that finished the task, with the task row locked. A
    second primary row is refused by the ``one_primary_deduction_per_task`` constraint: the
    duplicate is logged and not recorded (inside a savepoint, so the caller's transaction
    goes on). Returns the new row, or None when nothing was recorded.
    """
    units = task.final_unit_deduction
    if units is None:
        return None
    if task.status != Status.SUCCEED and units <= Decimal("0"):
        return None
    row = deduction_row(task, units=units, recorded_at=charged_at)
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:
        log.warning("task %s: deduction already recorded; not recording twice", task.pk)
        return None
    return row


def deduction_append(
    *,
    task: Task,
    units: Decimal,
    recorded_at: datetime,
    corrects: Deduction | None,
    note: str,
) -> Deduction:
    """Append a correction row for ``task``: ``units`` (units of Kling credit, may be
    negative) recorded at ``recorded_at``, pointing at ``corrects`` (the task's primary row;
    None when the task has none, and the new row then becomes its primary row). ``note``
    says who corrected what. Returns the saved row; raises ``IntegrityError`` when
    ``corrects`` is None and the task already has a primary row.
    """
    row = deduction_row(task, units=units, recorded_at=recorded_at, corrects=corrects, note=note)
    row.save()
    return row
