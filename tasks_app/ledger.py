"""The deduction ledger: how a ledger row is built and when a task's charge is recorded.

One module for "how is a team billed?": ``Deduction`` rows (``tasks_app.models``) are
append-only, and this module is the only place that makes them.

- ``deduction_row``: an unsaved row for a task (team, member, family, model, mode and status
  copied from the task), used by every writer below so they fill it the same way.
- ``deduction_record``: the task's primary charge, recorded by
  ``tasks_app.services.task_apply_remote`` in the transaction that finishes the task —
  exactly once (the task row is locked, and a unique constraint backs it up);
  ``deduction_due`` builds that row, ``deductions_record`` inserts many at once (a burst
  applied by ``tasks_app.services.tasks_apply_remote``) under the same rules.
- ``deduction_append``: a correction row (reconciliation), pointing at the row it corrects.

Each row is counted in the daily rollups (``tasks_app.rollups.rollup_add``) in the savepoint
that inserts it, which also bumps the team's ledger version (cached reports).

Units are units of Kling credit (``Decimal``), the vendor's ``final_unit_deduction``
(KLING_API.md §4), kept exactly as sent (``UNITS_PLACES`` decimal places). A task charged
in cash (KLING_API_2026.md §7) also carries its money: ``amount``, ``currency`` and
``list_price`` from the typed task's ``final_balance_deduction`` (legacy
``final_balance_deduction{quota, list_price}``, or the 2026 ``billing[charge_type=cash]``
entries folded). Budgets read the ledger (``tasks_app.budgets``); reports aggregate it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Case, DecimalField, ExpressionWrapper, F, Q, Value, When

from klingweb.kling import BalanceDeduction
from tasks_app.models import UNITS_PLACES, Deduction, Status, Task
from tasks_app.prices import unit_price
from tasks_app.rollups import rollup_add, rollups_add

log = logging.getLogger(__name__)

#: Output field of units/money sums: wide enough for a company's lifetime, the ledger's places.
MONEY_FIELD = DecimalField(max_digits=30, decimal_places=UNITS_PLACES)


def deduction_row(
    task: Task,
    *,
    units: Decimal,
    recorded_at: datetime,
    corrects: Deduction | None = None,
    note: str = "",
    balance: BalanceDeduction | None = None,
) -> Deduction:
    """An unsaved ledger row charging ``units`` (units of Kling credit; negative for a
    correction that gives units back) for ``task`` at ``recorded_at`` (aware datetime).

    Team, member (the task's creator), family, model, mode and status are copied from the
    task. ``corrects``: the row this one corrects (None for a primary row). ``balance``: the
    money the vendor took from a cash balance (``klingweb.kling.BalanceDeduction``), stored
    as ``amount`` (its ``quota``), ``currency`` ("" when unnamed) and ``list_price``.
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
        amount=balance.quota if balance is not None else None,
        currency=(balance.currency or "")[:3] if balance is not None else "",
        list_price=balance.list_price if balance is not None else None,
    )


def deduction_due(
    *, task: Task, charged_at: datetime, balance: BalanceDeduction | None = None
) -> Deduction | None:
    """The unsaved primary ledger row of a task that has just finished, or None when it
    owes nothing (the rules of ``deduction_record``, which saves it)."""
    units = task.final_unit_deduction
    if units is None and balance is None:
        return None
    units = units if units is not None else Decimal("0")
    cash = balance.quota if balance is not None else Decimal("0")
    if task.status != Status.SUCCEED and units <= 0 and cash <= 0:
        return None
    return deduction_row(task, units=units, recorded_at=charged_at, balance=balance)


def deduction_record(
    *, task: Task, charged_at: datetime, balance: BalanceDeduction | None = None
) -> Deduction | None:
    """Record the primary charge of a task that has just finished.

    ``task``: the finished task as saved (its ``status`` and ``final_unit_deduction``,
    units of Kling credit, are read); ``charged_at``: when the team was charged (aware
    datetime; usage days and budget periods count from it); ``balance``: the cash the vendor
    took (``KlingTask.final_balance_deduction``), or None on a unit account. Rules: nothing
    when the vendor sent neither ``final_unit_deduction`` nor a cash charge; a succeeded task
    is always recorded (zero included); a failed or refused one only when the vendor charged
    more than zero units or money. A cash-only charge (2026 ``billing`` with no unit entry)
    is recorded with 0 units.

    Must run inside the transaction that finished the task, with the task row locked. A
    second primary row is refused by the ``one_primary_deduction_per_task`` constraint: the
    duplicate is logged and not recorded (inside a savepoint, so the caller's transaction
    goes on). Returns the new row, or None when nothing was recorded.
    """
    row = deduction_due(task=task, charged_at=charged_at, balance=balance)
    if row is None:
        return None
    try:
        with transaction.atomic():
            row.save()
            rollup_add(row)  # same savepoint: the rollup row goes or stays with the ledger row
    except IntegrityError:
        log.warning("task %s: deduction already recorded; not recording twice", task.pk)
        return None
    return row


def deductions_record(*, rows: list[Deduction]) -> list[Deduction]:
    """Record many primary charges at once (``tasks_app.services.tasks_apply_remote``, a
    burst of finished tasks): ``rows`` built by ``deduction_due`` for tasks finished in the
    current transaction, their rows locked. A task that already has a primary row is logged
    and skipped, as ``deduction_record`` refuses the duplicate; the others are inserted by
    one bulk INSERT and counted in the rollups (``rollups_add``), in one savepoint. Returns
    the inserted rows (primary keys set). Raises ``IntegrityError`` if a primary row appears
    concurrently anyway (the constraint ``one_primary_deduction_per_task``): nothing of
    ``rows`` is then recorded, and the caller's transaction may go on.
    """
    if not rows:
        return []
    recorded = set(
        Deduction.objects.filter(
            task_id__in=[row.task_id for row in rows], corrects__isnull=True
        ).values_list("task_id", flat=True)
    )
    for task_id in sorted(recorded):
        log.warning("task %s: deduction already recorded; not recording twice", task_id)
    fresh = [row for row in rows if row.task_id not in recorded]
    with transaction.atomic():
        Deduction.objects.bulk_create(fresh)
        rollups_add(fresh)
    return fresh


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
    with transaction.atomic():
        row.save()
        rollup_add(row)
    return row


# --- what a row counts for: units and money, as database expressions ------------------------


def ledger_money_expr() -> Case:
    """SQL expression of a ``Deduction`` row's money in ``settings.KLING_CURRENCY``: the
    vendor's cash ``amount`` when it charged in cash, else ``units`` ×
    ``settings.KLING_UNIT_PRICE``. For ``Sum(...)`` in budgets and reports (exact decimals
    on PostgreSQL; SQLite sums floats, so read sums back through ``quantize``)."""
    return Case(
        When(amount__isnull=False, then=F("amount")),
        default=ExpressionWrapper(F("units") * Value(unit_price()), output_field=MONEY_FIELD),
        output_field=MONEY_FIELD,
    )


def ledger_units_expr() -> Case:
    """SQL expression of a ``Deduction`` row's units: ``units`` as the vendor sent them; a
    row charged in cash with no units (a cash account reports ``final_unit_deduction`` 0, or
    only ``billing[charge_type=cash]``) counts as ``amount`` ÷ ``KLING_UNIT_PRICE``, so that
    budgets in units hold on cash accounts too."""
    price = unit_price() or Decimal("1")
    return Case(
        When(
            Q(amount__isnull=False, units=0),
            then=ExpressionWrapper(F("amount") / Value(price), output_field=MONEY_FIELD),
        ),
        default=F("units"),
        output_field=MONEY_FIELD,
    )
