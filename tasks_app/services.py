"""The one writer of vendor state: ``task_apply_remote``.

Callbacks, list-page polling and single queries all end here (DESIGN.md §2 step 4). The
function is idempotent and monotonic, and records the team's deduction exactly once, in
the same transaction as the status change. Concurrency: the task row is locked
(``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite every transaction begins IMMEDIATE, see
settings, which serialises writers), and the ledger has a unique constraint per task as a
last line of defence.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING

from django.db import IntegrityError, transaction
from django.utils import timezone

from tasks_app.families import UnknownFamily, get_family
from tasks_app.models import (
    FINISHED,
    STATUS_RANK,
    Deduction,
    Status,
    Task,
    TaskEvent,
)

if TYPE_CHECKING:
    from klingweb.kling import KlingTask

log = logging.getLogger(__name__)

_VENDOR_STATUSES = {Status.SUBMITTED, Status.PROCESSING, Status.SUCCEED, Status.FAILED}


def task_apply_remote(*, task_pk: int, remote: KlingTask, source: str) -> bool:
    """Apply a vendor task object to the task with primary key ``task_pk``.

    ``remote``: a parsed vendor task (create answer, callback body, list-page item or single
    query; KLING_API.md §4). ``source``: where it came from (``"callback"``, ``"poll"``,
    ``"submit"``, ``"sync"``), recorded in the status history.

    Rules: a finished task never changes; status only moves forward
    (queued → submitted → processing → succeed | failed); an equal status refreshes only the
    vendor timestamps. On finishing, the result and ``final_unit_deduction`` (units, Decimal)
    are stored and one ``Deduction`` row is recorded — for succeeded tasks always, for
    failed ones when the vendor charged units. On success the family's ``on_succeed`` hook
    runs in the same transaction, and media keeping and budget alerts are enqueued on commit.

    Returns True when the task changed status. Raises ``Task.DoesNotExist``. An unknown
    ``task_status`` is logged and ignored (returns False).
    """
    new_status = remote.task_status
    if new_status not in _VENDOR_STATUSES:
        log.warning("task %s: ignoring unknown task_status %r", task_pk, new_status)
        return False
    with transaction.atomic():
        task = Task.objects.select_for_update().get(pk=task_pk)
        if task.status in FINISHED:
            return False
        refreshed = False
        if remote.task_id and not task.task_id:
            task.task_id = remote.task_id
            refreshed = True
        if remote.created_at and not task.vendor_created_at:
            task.vendor_created_at = remote.created_at
            refreshed = True
        if STATUS_RANK[new_status] <= STATUS_RANK[task.status]:
            if remote.updated_at and (
                task.vendor_updated_at is None or remote.updated_at > task.vendor_updated_at
            ):
                task.vendor_updated_at = remote.updated_at
                refreshed = True
            if refreshed:  # a newly learnt task_id is kept even without a newer updated_at
                task.save(update_fields=["task_id", "vendor_created_at", "vendor_updated_at"])
            return False

        now = timezone.now()
        task.status = new_status
        task.vendor_updated_at = remote.updated_at or task.vendor_updated_at
        task.task_status_msg = remote.task_status_msg or ""
        # The vendor answered: an earlier failed submit or poll no longer explains anything.
        task.error_code, task.error_message, task.error_request_id = None, "", ""
        if task.submitted_at is None:
            task.submitted_at = now
        if new_status in FINISHED:
            task.finished_at = now
            task.next_poll_at = None
            task.claimed_until = None
            task.is_stale = False
            task.result = remote.task_result or {}
            task.final_unit_deduction = remote.final_unit_deduction
        task.save()
        TaskEvent.objects.create(
            task=task, status=new_status, at=now, source=source, note=task.task_status_msg
        )
        if new_status in FINISHED:
            # An imported task (kling_sync) was charged when Kling finished it, not now:
            # usage days and budget periods follow the vendor's time.
            charged_at = remote.updated_at if source == "sync" and remote.updated_at else now
            _record_deduction(task, charged_at)
        if new_status == Status.SUCCEED:
            _run_on_succeed(task, remote)
            _enqueue_on_commit("tasks_app.jobs.keep_media", task.pk)
        if new_status in FINISHED:
            _enqueue_on_commit("tasks_app.jobs.check_budget_alerts", task.team_id)
    return True


def _record_deduction(task: Task, now) -> None:
    units = task.final_unit_deduction
    if units is None:
        return
    if task.status != Status.SUCCEED and units <= Decimal("0"):
        return
    try:
        # A savepoint, so a duplicate (impossible under the row lock, but guarded by the
        # unique constraint) does not poison the surrounding transaction.
        with transaction.atomic():
            Deduction.for_task(task, units=units, recorded_at=now).save()
    except IntegrityError:
        log.warning("task %s: deduction already recorded; not recording twice", task.pk)


def _run_on_succeed(task: Task, remote: KlingTask) -> None:
    try:
        family = get_family(task.family)
    except UnknownFamily:
        log.error("task %s: family %r is not registered", task.pk, task.family)
        return
    if family.on_succeed is not None:
        family.on_succeed(task, remote)


def _enqueue_on_commit(func: str, *args: object) -> None:
    from django_q.tasks import async_task

    transaction.on_commit(lambda: async_task(func, *args))
