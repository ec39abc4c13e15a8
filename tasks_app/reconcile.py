"""Nightly reconciliation of the ledger with the vendor, and the correction path.

``ledger_reconcile`` compares, for each finished task of the last few days, the sum of its
``Deduction`` rows with the vendor's ``final_unit_deduction`` (found at the vendor by
``tasks_app.finder.tasks_find``: list pages, 500 a page, with single queries for what the
pages missed, or ``GET /tasks`` by id for the 2026 design). A
difference becomes a ``ReconciliationIssue`` shown on the staff page ``/ops/reconciliation/``.
Nothing is rewritten: the ledger only changes when a staff member corrects an issue
(``deduction_correct``), which appends a new row pointing at the row it corrects.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from tasks_app.finder import Wanted, tasks_find
from tasks_app.ledger import deduction_append
from tasks_app.models import (
    FINISHED,
    Deduction,
    IssueKind,
    ReconciliationIssue,
    Status,
    Task,
)
from tasks_app.rollups import RollupDifference, rollups_check

if TYPE_CHECKING:
    from klingweb.kling import KlingClient, KlingTask

log = logging.getLogger(__name__)

ZERO = Decimal("0")


class IssueResolved(Exception):
    """The issue was already corrected or dismissed."""


@dataclass
class ReconcileReport:
    """What one reconciliation run did: tasks ``checked``, ``ok`` (in step), issues
    ``opened``/``updated``, Kling ``requests``, ``errors`` (tasks left for the next run)."""

    checked: int = 0
    ok: int = 0
    opened: int = 0
    updated: int = 0
    requests: int = 0
    errors: int = 0
    messages: list[str] = field(default_factory=list)


def ledger_units_by_task(task_pks: list[int]) -> dict[int, Decimal]:
    """Sum of ``Deduction.units`` (primary + corrections) per task primary key."""
    totals: dict[int, Decimal] = {}
    for start in range(0, len(task_pks), 500):
        rows = (
            Deduction.objects.filter(task_id__in=task_pks[start : start + 500])
            .values("task_id")
            .annotate(total=Sum("units"))
        )
        totals.update({row["task_id"]: row["total"] or ZERO for row in rows})
    return totals


def _issue_record(
    task: Task,
    *,
    kind: str,
    ledger: Decimal,
    vendor: Decimal | None,
    vendor_status: str,
    detail: str,
    report: ReconcileReport,
) -> None:
    now = timezone.now()
    values = {
        "kind": kind,
        "ledger_units": ledger,
        "vendor_units": vendor,
        "vendor_status": vendor_status,
        "detail": detail,
        "last_seen_at": now,
    }
    if ReconciliationIssue.objects.filter(task=task, resolved_at__isnull=True).update(**values):
        report.updated += 1
        return
    try:
        with transaction.atomic():
            ReconciliationIssue.objects.create(
                task=task, team_id=task.team_id, found_at=now, **values
            )
        report.opened += 1
    except IntegrityError:  # opened by a concurrent run
        ReconciliationIssue.objects.filter(task=task, resolved_at__isnull=True).update(**values)
        report.updated += 1


def _compare(task: Task, remote: KlingTask, ledger: Decimal, report: ReconcileReport) -> None:
    vendor = remote.final_unit_deduction
    if remote.task_status not in FINISHED or remote.task_status != task.status:
        _issue_record(
            task,
            kind=IssueKind.STATUS,
            ledger=ledger,
            vendor=vendor,
            vendor_status=remote.task_status,
            detail=f"Portal says {task.status}, Kling says {remote.task_status}.",
            report=report,
        )
        return
    if (vendor or ZERO) != ledger:
        _issue_record(
            task,
            kind=IssueKind.MISMATCH,
            ledger=ledger,
            vendor=vendor,
            vendor_status=remote.task_status,
            detail=f"Ledger {ledger} units, Kling final_unit_deduction {vendor}.",
            report=report,
        )
        return
    report.ok += 1


def _group_remote(
    client: KlingClient, family: str, tasks: list[Task], report: ReconcileReport
) -> tuple[dict[int, KlingTask], set[int]]:
    """Vendor objects of ``tasks`` by pk (``tasks_app.finder.tasks_find``), and the pks the
    vendor does not know. Tasks left by a vendor error are in neither (checked next run)."""
    found = tasks_find(
        client,
        family,
        [
            Wanted(
                key=task.pk,
                task_id=task.task_id,
                external_task_id=task.external_task_id,
                created_at=task.vendor_created_at or task.created_at,
            )
            for task in tasks
        ],
    )
    report.requests += found.requests
    if found.error is not None:
        report.errors += 1
        report.messages.append(f"{family}: {found.error} ({len(found.left)} tasks left)")
    return found.found, set(found.unknown)


def ledger_reconcile(*, days: int = 3, now: datetime | None = None) -> ReconcileReport:
    """Compare the ledger with the vendor for tasks finished (succeed/failed) in the last
    ``days`` days; open or refresh a ``ReconciliationIssue`` per difference (units differ,
    status differs, or the task is unknown at the vendor). Never writes the ledger.
    Vendor errors are counted in the report and leave those tasks for the next run.
    """
    from klingweb.accounts.services import account_for_team, kling_client_for

    now = now or timezone.now()
    report = ReconcileReport()
    tasks = list(
        Task.objects.filter(
            status__in=[Status.SUCCEED, Status.FAILED],
            finished_at__gte=now - timedelta(days=days),
        )
        .exclude(task_id="")
        .select_related("team", "kling_account")
    )
    ledger = ledger_units_by_task([task.pk for task in tasks])
    groups: dict[tuple[int, str], list[Task]] = defaultdict(list)
    accounts = {}
    for task in tasks:
        account = task.kling_account or account_for_team(team=task.team)
        accounts[account.pk] = account
        groups[(account.pk, task.family)].append(task)
    for (account_pk, family), group in groups.items():
        try:
            client = kling_client_for(accounts[account_pk])
        except Exception as exc:
            report.errors += len(group)
            report.messages.append(f"account {account_pk}: {exc}")
            continue
        found, unknown = _group_remote(client, family, group, report)
        for task in group:
            units = ledger.get(task.pk, ZERO)
            if task.pk in found:
                report.checked += 1
                _compare(task, found[task.pk], units, report)
            elif task.pk in unknown:
                report.checked += 1
                _issue_record(
                    task,
                    kind=IssueKind.NOT_FOUND,
                    ledger=units,
                    vendor=None,
                    vendor_status="",
                    detail=f"Kling does not know task_id {task.task_id}.",
                    report=report,
                )
    log.info("reconciliation: %s", report)
    return report


def rollups_reconcile() -> list[RollupDifference]:
    """Nightly: compare every team's daily rollups with its ledger
    (``tasks_app.rollups.rollups_check``); each difference is logged at ERROR and returned.
    Never fixes one: ``manage.py rollups_rebuild`` does, when someone decides to."""
    differences = rollups_check()
    for difference in differences:
        log.error("usage rollup differs from the ledger: %s", difference)
    log.info("rollups reconciliation: %d difference(s)", len(differences))
    return differences


def deduction_correct(*, issue: ReconciliationIssue, user, note: str = "") -> Deduction | None:
    """Correct the ledger for ``issue`` (a staff action): append one ``Deduction`` whose
    ``units`` = vendor units − current ledger sum and whose ``corrects`` points at the
    task's primary row (when the task has no primary row — e.g. a failed task the vendor
    charged — the new row becomes the primary one). Marks the issue corrected.

    Returns the new row, or None when the ledger already matches (the issue is then closed
    as corrected without a row). Raises ``IssueResolved`` if the issue is already closed.
    """
    with transaction.atomic():
        issue = ReconciliationIssue.objects.select_for_update().get(pk=issue.pk)
        if issue.resolved_at is not None:
            raise IssueResolved("This issue is already resolved.")
        task = Task.objects.select_for_update().get(pk=issue.task_id)
        current = Deduction.objects.filter(task=task).aggregate(t=Sum("units"))["t"] or ZERO
        diff = (issue.vendor_units or ZERO) - current
        row = None
        now = timezone.now()
        who = user.get_username() if user is not None else "system"
        text = f"Reconciliation correction by {who}: ledger {current}, Kling {issue.vendor_units}."
        if note:
            text += f" {note}"
        if diff != ZERO:
            primary = Deduction.objects.filter(task=task, corrects__isnull=True).first()
            row = deduction_append(
                task=task, units=diff, recorded_at=now, corrects=primary, note=text
            )
        issue.resolved_at = now
        issue.resolved_by = user
        issue.resolution = ReconciliationIssue.Resolution.CORRECTED
        issue.correction = row
        issue.save(update_fields=["resolved_at", "resolved_by", "resolution", "correction"])
    return row


def issue_dismiss(*, issue: ReconciliationIssue, user) -> None:
    """Close ``issue`` without touching the ledger (a staff action). Raises ``IssueResolved``."""
    with transaction.atomic():
        issue = ReconciliationIssue.objects.select_for_update().get(pk=issue.pk)
        if issue.resolved_at is not None:
            raise IssueResolved("This issue is already resolved.")
        issue.resolved_at = timezone.now()
        issue.resolved_by = user
        issue.resolution = ReconciliationIssue.Resolution.DISMISSED
        issue.save(update_fields=["resolved_at", "resolved_by", "resolution"])
