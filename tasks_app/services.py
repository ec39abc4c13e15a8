"""The one writer of a task's status, its status history and its error fields.

"How does a task's status change?" is answered here (DESIGN.md §2 step 4):

- ``task_create``: a new task row, ``queued``, with its first ``TaskEvent``.
- ``task_status_move``: move a task to another status and record the ``TaskEvent``, with a
  conditional update (``UPDATE … WHERE status IN expected_from``), so of two concurrent
  writers only one wins. Refusals (``tasks_app.submission.task_refuse``) use it.
- ``task_error_record`` / ``task_error_clear``: the ``error_*`` fields (the vendor's
  ``code``, ``message`` and ``request_id``, or a transport failure's text) of a task that
  waits after a failed create or poll, written in the same UPDATE as its scheduling columns.
- ``apply_batch``: apply many vendor answers in chunks of one transaction each (the
  poller's bursts): the per-team work of a finished task (budget threshold check, alert
  job) runs once per team and media keeping is one job per cycle.
- ``tasks_apply_remote``: a chunk of vendor answers applied together, under the rules of
  ``task_apply_remote`` (rows locked, one guarded UPDATE per row sent as one
  ``executemany``, bulk INSERTs of events and ledger rows, the finished hooks once); what
  is not a plain forward move is handed back for ``task_apply_remote``.
- ``task_finished_announce``: the finished-task hooks (webhooks) for a task that ended
  without a vendor task object (a refused create); ``task_apply_remote`` runs them itself.
- ``task_not_found_count`` / ``task_lose`` / ``task_end_by_hand``: a sent task the vendor no
  longer knows (1203) is counted check by check and ends ``lost`` (no charge, reservation
  released, ``task.lost`` webhook); an admin may end a stale task by hand with a reason.
- ``task_apply_remote``: the single applier of vendor task objects. Callbacks, list-page
  polling and single queries all end here; a final callback body counts only once a query
  confirms it (``confirmed``; ``tasks_app.callbacks.callback_confirm``). It is idempotent and monotonic, and records the
  team's deduction exactly once (``tasks_app.ledger``), in the same transaction as the
  status change. Concurrency: the task row is locked (``SELECT ... FOR UPDATE`` on
  PostgreSQL; on SQLite every transaction begins IMMEDIATE, see settings, which serialises
  writers), and the ledger has a unique constraint per task as a last line of defence.

No other module assigns ``Task.status``, creates a ``TaskEvent`` or writes ``error_*``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from klingweb.security import vendor_task_http_only
from tasks_app.budgets import budget_alerts_record
from tasks_app.families import UnknownFamily, get_family
from tasks_app.ledger import deduction_due, deduction_record, deductions_record
from tasks_app.models import (
    FINISHED,
    IN_FLIGHT,
    LATE_ANSWER_INTERVAL,
    STATUS_RANK,
    VENDOR_STATUSES,
    Status,
    Task,
    TaskEvent,
)
from tasks_app.rollups import rollups_deferred, tasks_touch

if TYPE_CHECKING:
    from klingweb.kling import KlingTask

log = logging.getLogger(__name__)

#: Columns only the helpers of this module write; passing them as extra ``fields`` is a bug.
_OWN_FIELDS = frozenset({"status", "error_code", "error_message", "error_request_id"})


class TaskError(NamedTuple):
    """Why a task waits or was refused, as shown on its page: the vendor's ``code`` (None
    for a transport failure or a problem of ours), ``message`` and ``request_id``."""

    code: int | None
    message: str
    request_id: str | None = None


#: "No error": what a task shows once the vendor answered again.
NO_ERROR = TaskError(None, "", None)


@dataclass
class ApplyBatch:
    """What the finished tasks of one ``apply_batch`` scope leave to do once: teams charged
    in the current transaction (their budget thresholds are checked once at its commit,
    ``budget_alerts_record``), teams with a finished task (one ``check_budget_alerts`` job
    each per scope), succeeded tasks whose media to keep (one ``keep_media_many`` job)."""

    charged_teams: set[int] = field(default_factory=set)
    finished_teams: set[int] = field(default_factory=set)
    keep: list[int] = field(default_factory=list)
    in_chunk: bool = False

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction for a chunk of ``task_apply_remote`` calls; before it commits,
        the thresholds of every team charged in it are recorded (``budget_alerts_record``,
        once per team), so an alert is recorded in the transaction that crossed it. If it
        fails, what its tasks left to do is forgotten with it (nothing of it was applied)."""
        finished, keep = set(self.finished_teams), list(self.keep)
        self.in_chunk = True
        try:
            with transaction.atomic():
                # The chunk's ledger rows are counted in the rollups at its end, in team
                # order (tasks_app.rollups: no deadlock between chunks charging many teams).
                with rollups_deferred():
                    yield
                self.in_chunk = False
                if self.charged_teams:
                    from klingweb.accounts.models import Team

                    for team in Team.objects.filter(pk__in=sorted(self.charged_teams)):
                        budget_alerts_record(team=team)
        except BaseException:
            self.finished_teams, self.keep = finished, keep
            raise
        finally:
            self.in_chunk = False
            self.charged_teams = set()


_batch: ContextVar[ApplyBatch | None] = ContextVar("tasks_app_apply_batch", default=None)


@contextmanager
def apply_batch() -> Iterator[ApplyBatch]:
    """A scope (the poller's cycle) in which many vendor answers are applied in chunks, each
    chunk ONE transaction (``with batch.transaction():``); issue 15 item 4, "bursts in one
    cycle".

    Each ``task_apply_remote`` still locks its row and records its ledger row exactly once,
    in its own savepoint (one failing task rolls back alone when the caller catches the
    error, as the poller does). What a finished task would do per task is done once:
    ``budget_alerts_record`` once per team charged in a chunk, before the chunk commits;
    one ``tasks_app.jobs.check_budget_alerts`` job per team and one
    ``tasks_app.jobs.keep_media_many`` job for the scope's succeeded tasks, enqueued when
    the scope ends (on commit of a caller's transaction, if any). Calls outside any chunk
    transaction behave as without a scope. A nested ``apply_batch`` joins the outer one.
    """
    if _batch.get() is not None:
        yield _batch.get()
        return
    batch = ApplyBatch()
    token = _batch.set(batch)
    try:
        yield batch
    finally:
        _batch.reset(token)
        for team_pk in sorted(batch.finished_teams):
            _enqueue_on_commit("tasks_app.jobs.check_budget_alerts", team_pk)
        if batch.keep:
            _enqueue_on_commit("tasks_app.jobs.keep_media_many", list(batch.keep))


def _after_charge(task: Task) -> None:
    """A charge was recorded for ``task``: check its team's budget thresholds now (or at the
    end of the ``apply_batch``)."""
    batch = _batch.get()
    if batch is not None and batch.in_chunk:
        batch.charged_teams.add(task.team_id)
    else:
        # Thresholds crossed by this charge are recorded with it (banner at once); the mail
        # goes from the check_budget_alerts job after commit.
        budget_alerts_record(team=task.team)


def _after_finish(task: Task, *, keep: bool) -> None:
    """``task`` finished (or was confirmed): enqueue media keeping (``keep``) and the team's
    budget alert job, on commit — once per batch inside an ``apply_batch``."""
    batch = _batch.get()
    if batch is not None:
        if keep:
            batch.keep.append(task.pk)
        batch.finished_teams.add(task.team_id)
        return
    if keep:
        _enqueue_on_commit("tasks_app.jobs.keep_media", task.pk)
    _enqueue_on_commit("tasks_app.jobs.check_budget_alerts", task.team_id)


def _error_values(error: TaskError) -> dict[str, Any]:
    return {
        "error_code": error.code,
        "error_message": error.message or "",
        "error_request_id": error.request_id or "",
    }


def _check_fields(fields: dict[str, Any]) -> None:
    owned = _OWN_FIELDS & set(fields)
    if owned:
        raise ValueError(
            f"{', '.join(sorted(owned))}: written by task_status_move / task_error_record only."
        )


def _rows(task_pk: int | None, tasks: QuerySet[Task] | None) -> QuerySet[Task]:
    if (task_pk is None) == (tasks is None):
        raise TypeError("Give exactly one of task_pk and tasks.")
    return Task.objects.filter(pk=task_pk) if tasks is None else tasks


def task_create(*, source: str, at: datetime | None = None, **fields: Any) -> Task:
    """Save a new task ``queued`` (``created_at`` = ``at``, default now) with its first
    status-history entry (``source``, e.g. ``"form"``). ``fields``: the other columns
    (team, creator, family, params, ``retry_at``…). Returns the saved task. Raises
    ``ValueError`` when ``fields`` holds ``status`` or an ``error_*`` column.

    The team's tasks version is NOT bumped: a queued task is in no usage figure (they count
    tasks from ``submitted`` on), and the form's transaction holds the team's row lock
    (``submission.task_queue``'s budget check); taking the ``LedgerState`` row there as well
    made deadlocks with the apply path under load (the topology soak, 2026-11-29).
    """
    _check_fields(fields)
    at = at or timezone.now()
    # No savepoint inside a caller's transaction: a failure here undoes the caller's work too.
    with transaction.atomic(savepoint=False):
        task = Task.objects.create(status=Status.QUEUED, created_at=at, **fields)
        TaskEvent.objects.create(task=task, status=Status.QUEUED, at=at, source=source)
    return task


def task_status_move(
    *,
    to: str,
    source: str,
    task_pk: int | None = None,
    task: Task | None = None,
    expected_from: Iterable[str] | None = None,
    note: str = "",
    at: datetime | None = None,
    error: TaskError | None = None,
    **fields: Any,
) -> bool:
    """Move one task to status ``to`` and record the ``TaskEvent`` (``source``, ``note``,
    ``at``: aware datetime, default now), if it is still in one of ``expected_from``.

    The task is given as ``task_pk`` or as a loaded ``task`` (then, on success, the
    instance's attributes are updated too, except values that are database expressions).
    ``expected_from``: the statuses the move starts from (default: every status ranked
    below ``to``); a finished task never moves — except ``lost`` → ``succeed``/``failed``
    when ``expected_from`` names ``lost`` (a late vendor answer, ``task_apply_remote``). The move is one conditional UPDATE, so
    when two writers race only one wins and the other gets False. ``error``: the error
    fields to write with it (``NO_ERROR`` clears them; None leaves them). ``fields``: other
    columns written in the same UPDATE (``finished_at``, ``result``…); ``updated_at`` is set
    to ``at``, and ``retry_at`` is cleared when ``to`` is not ``queued``. A move bumps the
    team's tasks version (``tasks_app.rollups.tasks_touch``: cached usage pages).

    Returns True when this call moved the task. Raises ``ValueError`` for an unknown
    status, and when ``fields`` holds ``status`` or an ``error_*`` column; ``TypeError``
    unless exactly one of ``task_pk`` and ``task`` is given.
    """
    if (task is None) == (task_pk is None):
        raise TypeError("Give exactly one of task_pk and task.")
    if to not in STATUS_RANK:
        raise ValueError(f"Unknown status {to!r}.")
    _check_fields(fields)
    pk = task.pk if task is not None else task_pk
    if expected_from is None:
        expected_from = [s for s, rank in STATUS_RANK.items() if rank < STATUS_RANK[to]]
    # A finished task never moves, except a lost one the vendor answered for after all.
    final = FINISHED - {Status.LOST} if to in (Status.SUCCEED, Status.FAILED) else FINISHED
    allowed = sorted(set(expected_from) - final)
    at = at or timezone.now()
    values = _move_values(to=to, at=at, error=error, fields=fields)
    with transaction.atomic(savepoint=False):
        moved = Task.objects.filter(pk=pk, status__in=allowed).update(**values) == 1
        if moved:
            TaskEvent.objects.create(task_id=pk, status=to, at=at, source=source, note=note)
            team_id = (
                task.team_id
                if task is not None
                else Task.objects.filter(pk=pk).values_list("team_id", flat=True).first()
            )
            tasks_touch(team_id)  # a cached usage page counts the new status at once
    if moved and task is not None:
        for name, value in values.items():
            if not hasattr(value, "resolve_expression"):
                setattr(task, name, value)
    return moved


def _move_values(
    *, to: str, at: datetime, error: TaskError | None, fields: dict[str, Any]
) -> dict[str, Any]:
    """Every column a move to ``to`` at ``at`` writes: ``fields``, status, ``updated_at``,
    ``retry_at`` cleared unless ``to`` is queued, the error fields when ``error`` is given."""
    values: dict[str, Any] = {**fields, "status": to, "updated_at": at}
    if to != Status.QUEUED:
        values.setdefault("retry_at", None)
    if error is not None:
        values.update(_error_values(error))
    return values


def task_error_record(
    *,
    code: int | None,
    message: str,
    request_id: str | None,
    task_pk: int | None = None,
    tasks: QuerySet[Task] | None = None,
    **fields: Any,
) -> int:
    """Record why a task waits: the vendor's ``code``, ``message`` and ``request_id`` of a
    failed create or poll (KLING_API.md §2), or a transport or configuration failure
    (``code`` and ``request_id`` None). Shown on the task page until the vendor answers.

    Writes one UPDATE on ``task_pk`` or on the rows of ``tasks`` (a ``Task`` queryset that
    narrows the rows: status, claim…), together with ``fields`` (scheduling columns such as
    ``retry_at``, ``next_poll_at``, ``claimed_until``). Never changes status. Returns the
    number of rows written. Raises ``ValueError`` when ``fields`` holds ``status`` or an
    ``error_*`` column; ``TypeError`` unless exactly one of ``task_pk`` and ``tasks`` is
    given.
    """
    _check_fields(fields)
    error = TaskError(code, message, request_id)
    return _rows(task_pk, tasks).update(**fields, **_error_values(error))


def task_error_clear(
    *, task_pk: int | None = None, tasks: QuerySet[Task] | None = None, **fields: Any
) -> int:
    """Forget a task's last error (the vendor answered again), in one UPDATE with ``fields``
    (as ``task_error_record``). Returns the number of rows written."""
    _check_fields(fields)
    return _rows(task_pk, tasks).update(**fields, **_error_values(NO_ERROR))


def task_apply_remote(
    *, task_pk: int, remote: KlingTask, source: str, confirmed: bool = True
) -> bool:
    """Apply a vendor task object to the task with primary key ``task_pk``.

    ``remote``: a parsed vendor task (create answer, callback body, list-page item or single
    query; KLING_API.md §4). ``source``: where it came from (``"callback"``, ``"poll"``,
    ``"submit"``, ``"sync"``), recorded in the status history.

    Rules: a finished task never changes; status only moves forward
    (queued → submitted → processing → succeed | failed); an equal status refreshes only the
    vendor timestamps. On finishing, the result and ``final_unit_deduction`` (units, Decimal)
    are stored and one ``Deduction`` row is recorded (``tasks_app.ledger.deduction_record``)
    — for succeeded tasks always, for failed ones when the vendor charged units. The status
    change itself is a ``task_status_move`` (event and cleared error fields included). On
    success the family's ``on_succeed`` hook runs in the same transaction, and media keeping
    and budget alerts are enqueued on commit.

    URL fields of ``remote`` that are not http(s) (``javascript:``, ``data:``...) are dropped
    first, with a logged warning (``klingweb.security.vendor_task_http_only``).

    ``confirmed``: whether ``remote`` is the vendor's full answer (a query, a list item, a
    create answer: True) or only a callback body that no query could confirm (False; the
    vendor's callback carries a subset of the task: no ``watermark_url``, no
    ``url_1..url_3``, no element data, KLING_API_2026.md §6). A task finished on an
    unconfirmed body is marked ``needs_confirmation`` (due for the poller at once, media
    keeping left for the confirmation). A confirmed finished answer for a task so marked is
    its confirmation (``_task_confirm_finished``): the fuller result is stored, the
    ``on_succeed`` hook runs again and media keeping is enqueued, and nothing moves or is
    charged again (a missing charge is recorded; a different one is left to the nightly
    reconciliation).

    A ``lost`` task (``task_lose``) the vendor reports finished after all is moved to that
    status and charged once like any other, and its history says so (``LATE_ANSWER_NOTE``).

    Returns True when the task changed status. Raises ``Task.DoesNotExist``. An unknown
    ``task_status`` is logged and ignored (returns False).
    """
    # Only http(s) URLs of the vendor are stored (others dropped, logged): they end up in
    # src/href attributes and in the media downloads.
    remote = vendor_task_http_only(remote, where=f"task {task_pk} ({source})")
    new_status = remote.task_status
    if new_status not in VENDOR_STATUSES:
        log.warning("task %s: ignoring unknown task_status %r", task_pk, new_status)
        return False
    # The move's tasks version and the charge's rollups are written together at the end of
    # the transaction, after the ledger INSERT (tasks_app.rollups, "lock order").
    with transaction.atomic(), rollups_deferred():
        task = Task.objects.select_for_update().get(pk=task_pk)
        late = task.status == Status.LOST and new_status in FINISHED
        if task.status in FINISHED and not late:
            if confirmed and task.needs_confirmation and remote.is_finished:
                _task_confirm_finished(task, remote, source=source)
            return False
        refreshed = False
        if remote.task_id and not task.task_id:
            task.task_id = remote.task_id
            refreshed = True
        if remote.created_at and not task.vendor_created_at:
            task.vendor_created_at = remote.created_at
            refreshed = True
        if not late and STATUS_RANK[new_status] <= STATUS_RANK[task.status]:
            if remote.updated_at and (
                task.vendor_updated_at is None or remote.updated_at > task.vendor_updated_at
            ):
                task.vendor_updated_at = remote.updated_at
                refreshed = True
            if refreshed:  # a newly learnt task_id is kept even without a newer updated_at
                task.save(update_fields=["task_id", "vendor_created_at", "vendor_updated_at"])
            return False

        now = timezone.now()
        fields = _move_fields(task, remote, now=now, confirmed=confirmed)
        note = fields["task_status_msg"]
        if late:
            note = LATE_ANSWER_NOTE + (f" {note}" if note else "")
        moved = task_status_move(
            task=task,
            to=new_status,
            source=source,
            note=note,
            expected_from=[task.status],  # the row is locked: this is its status
            at=now,
            # The vendor answered: an earlier failed submit or poll no longer explains anything.
            error=NO_ERROR,
            **fields,
        )
        if not moved:
            return False
        if new_status in FINISHED:
            # An imported task (kling_sync) was charged when Kling finished it, not now:
            # usage days and budget periods follow the vendor's time.
            charged_at = remote.updated_at if source == "sync" and remote.updated_at else now
            if deduction_record(
                task=task, charged_at=charged_at, balance=remote.final_balance_deduction
            ):
                _after_charge(task)
        if new_status == Status.SUCCEED:
            _run_on_succeed(task, remote)
        if new_status in FINISHED:
            # Unconfirmed results are kept once confirmed: the subset may lack copies (url_2…).
            _after_finish(task, keep=new_status == Status.SUCCEED and confirmed)
            _run_finished_hooks(task)
    return True


def _move_fields(task: Task, remote: KlingTask, *, now: datetime, confirmed: bool) -> dict:
    """The columns a forward move of the locked ``task`` to ``remote.task_status`` writes
    besides status, ``updated_at`` and the error fields (``task_status_move``): vendor ids,
    times and message; for a finished answer its result and charge, the end of polling and
    of "not found" counting. ``task.task_id`` / ``vendor_created_at`` already learnt."""
    fields: dict[str, Any] = {
        "task_id": task.task_id,
        "vendor_created_at": task.vendor_created_at,
        "vendor_updated_at": remote.updated_at or task.vendor_updated_at,
        "task_status_msg": remote.task_status_msg or "",
        "submitted_at": task.submitted_at or now,
    }
    if remote.task_status in FINISHED:
        fields.update(
            finished_at=now,
            next_poll_at=None,
            claimed_until=None,
            is_stale=False,
            result=remote.task_result or {},
            final_unit_deduction=remote.final_unit_deduction,
            # Unconfirmed: the poller asks for the full answer at its next cycle.
            needs_confirmation=not confirmed,
        )
    if remote.task_status in FINISHED or task.not_found_checks:
        # The vendor knows the task (again): "not found" answers no longer count.
        fields.update(not_found_checks=0, not_found_since=None)
    return fields


class ManyApplied(NamedTuple):
    """What ``tasks_apply_remote`` did: ``moved``, the primary keys of the tasks it moved
    (each changed status); ``rest``, the answers it left to ``task_apply_remote`` one by
    one (``(task_pk, remote)``, in the order given)."""

    moved: list[int]
    rest: list[tuple[int, KlingTask]]


def tasks_apply_remote(*, answers: Sequence[tuple[int, KlingTask]], source: str) -> ManyApplied:
    """Apply many vendor answers at once, as ``task_apply_remote(confirmed=True)`` would
    apply each (same rules, same rows written), with a handful of statements for all of
    them: issue 15 item 4, a burst of finished tasks applied within a poll cycle.

    ``answers``: ``(task_pk, remote)`` pairs, one per task (the poller's chunk of
    ``APPLY_BATCH``); ``remote``: a vendor's full answer (a query or list item, KLING_API.md
    §4; KLING_API_2026.md §3). ``source``: recorded in the status history (``"poll"``).

    In one savepoint: the tasks' rows are locked (``SELECT … FOR UPDATE`` in primary key
    order on PostgreSQL; SQLite's transactions begin IMMEDIATE and hold the write lock);
    each unfinished task the answer moves forward is moved by one ``UPDATE … WHERE id = %s
    AND status = <status read under the lock>`` run for all rows at once
    (``executemany``), each moved task's team's tasks version bumped once
    (``tasks_app.rollups.tasks_touch``: cached usage pages), its ``TaskEvent`` rows
    inserted by one bulk INSERT, the finished ones' primary ledger rows by one more
    (``tasks_app.ledger.deductions_record``: a task with a ledger row already is not
    charged again), and the finished-task hooks called once (``KLINGWEB_TASK_FINISHED_HOOKS`` with ``tasks=``). Budget thresholds, media
    keeping and the budget alert job are left to the ``apply_batch`` scope, as for one task.

    Left in ``rest`` for ``task_apply_remote``: unknown statuses, answers for finished,
    lost (a late answer) or unconfirmed tasks, answers that move nothing (vendor times
    only), tasks gone from the table, and succeeded tasks of a family with an
    ``on_succeed`` hook. If anything of the bulk path fails (its savepoint is rolled back:
    nothing of it stays), every answer is returned in ``rest``. Returns ``ManyApplied``.
    """
    answers = list(answers)
    try:
        with transaction.atomic():
            moved, charged, rest = _apply_many(answers, source=source)
    except Exception:
        log.exception("applying %s answers together failed; one by one instead", len(answers))
        return ManyApplied([], answers)
    for task in moved:
        if task.pk in charged:
            _after_charge(task)
        if task.status in FINISHED:
            _after_finish(task, keep=task.status == Status.SUCCEED)
    return ManyApplied([task.pk for task in moved], rest)


#: The columns ``tasks_apply_remote`` reads (a move's inputs, the ledger row's copies, the
#: webhook's data); a finished-task hook reading others loads them, one query per task.
_MANY_COLUMNS = (
    *("team", "creator", "code", "family", "model_name", "mode", "status", "task_id"),
    *("vendor_created_at", "vendor_updated_at", "submitted_at", "not_found_checks"),
)


def _apply_many(
    answers: list[tuple[int, KlingTask]], *, source: str
) -> tuple[list[Task], set[int], list[tuple[int, KlingTask]]]:
    """The bulk path of ``tasks_apply_remote``, in the caller's savepoint: returns the
    moved tasks (instances updated as saved), the primary keys of those charged, and the
    answers left for ``task_apply_remote``."""
    remotes = {
        pk: vendor_task_http_only(remote, where=f"task {pk} ({source})") for pk, remote in answers
    }
    locked = {
        task.pk: task
        for task in Task.objects.select_for_update()
        .filter(pk__in=sorted(remotes))
        .only(*_MANY_COLUMNS)
        .order_by("pk")
    }
    now = timezone.now()
    rest: list[tuple[int, KlingTask]] = []
    moves: list[tuple[Task, KlingTask, str, dict[str, Any]]] = []
    for pk, _ in answers:
        task, remote = locked.get(pk), remotes[pk]
        if task is None or not _moves_simply(task, remote):
            rest.append((pk, remote))
            continue
        if remote.task_id and not task.task_id:
            task.task_id = remote.task_id
        if remote.created_at and not task.vendor_created_at:
            task.vendor_created_at = remote.created_at
        fields = _move_fields(task, remote, now=now, confirmed=True)
        values = _move_values(to=remote.task_status, at=now, error=NO_ERROR, fields=fields)
        moves.append((task, remote, task.status, values))
    if not moves:
        return [], set(), rest
    written = _update_each([(task.pk, old, values) for task, _, old, values in moves])
    if written != len(moves):  # cannot happen under the locks: then nothing of it counts
        raise RuntimeError(f"{len(moves) - written} of {len(moves)} rows changed under lock")
    events = []
    for task, _, _, values in moves:
        for name, value in values.items():
            setattr(task, name, value)
        events.append(
            TaskEvent(
                task_id=task.pk,
                status=task.status,
                at=now,
                source=source,
                note=values["task_status_msg"],
            )
        )
    TaskEvent.objects.bulk_create(events)
    finished = [(task, remote) for task, remote, _, _ in moves if task.status in FINISHED]
    rows = []
    for task, remote in finished:
        # An imported task (kling_sync) was charged when Kling finished it, not now.
        charged_at = remote.updated_at if source == "sync" and remote.updated_at else now
        row = deduction_due(
            task=task, charged_at=charged_at, balance=remote.final_balance_deduction
        )
        if row is not None:
            rows.append(row)
    charged = {row.task_id for row in deductions_record(rows=rows)}
    # After the ledger INSERT (which key-share locks the teams' rows): the LedgerState rows
    # are locked last (tasks_app.rollups, "lock order").
    for team_id in sorted({task.team_id for task, _, _, _ in moves}):
        tasks_touch(team_id)  # a cached usage page counts the new statuses at once
    if finished:
        _run_finished_hooks_many([task for task, _ in finished])
    return [task for task, _, _, _ in moves], charged, rest


def _moves_simply(task: Task, remote: KlingTask) -> bool:
    """True when ``remote`` moves the locked, unfinished ``task`` forward with nothing
    special to it (the bulk path of ``tasks_apply_remote``)."""
    status = remote.task_status
    if status not in VENDOR_STATUSES or task.status in FINISHED:
        return False
    if STATUS_RANK[status] <= STATUS_RANK[task.status]:
        return False
    if status == Status.SUCCEED:
        try:
            return get_family(task.family).on_succeed is None
        except UnknownFamily:
            return False
    return True


def _update_each(rows: list[tuple[int, str, dict[str, Any]]]) -> int:
    """Write each task's own ``values`` (``(pk, status read under lock, values)``), one
    ``UPDATE … WHERE id = %s AND status = %s`` per row, run by ``executemany`` per set of
    columns (Django's ``bulk_update`` builds a CASE per column and row instead: several
    times slower for a chunk). Values are prepared by their model fields as ``update()``
    would. Returns the number of rows written."""
    from django.db import connection

    quote = connection.ops.quote_name
    by_columns: dict[tuple[str, ...], list[tuple[int, str, dict[str, Any]]]] = {}
    for row in rows:
        by_columns.setdefault(tuple(row[2]), []).append(row)
    meta = Task._meta
    written = 0
    prepared: dict[tuple, Any] = {}
    for names, group in by_columns.items():
        fields = [meta.get_field(name) for name in names]
        # Identifiers from the model's options, quoted; every value is a parameter.
        sql = "UPDATE {} SET {} WHERE {} = %s AND {} = %s".format(  # noqa: S608
            quote(meta.db_table),
            ", ".join(f"{quote(field.column)} = %s" for field in fields),
            quote(meta.pk.column),
            quote(meta.get_field("status").column),
        )
        params = [
            [_prepared(field, values[field.name], prepared) for field in fields] + [pk, old]
            for pk, old, values in group
        ]
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)
            written += cursor.rowcount
    return written


def _prepared(field, value: Any, cache: dict[tuple, Any]) -> Any:
    """``field.get_db_prep_save(value)``, once per distinct hashable value (most columns of
    a chunk hold one value: status, times, cleared fields); a dict (``result``) each time."""
    from django.db import connection

    try:
        key = (field.name, type(value), value)
        return cache[key]
    except TypeError:
        return field.get_db_prep_save(value, connection)
    except KeyError:
        cache[key] = field.get_db_prep_save(value, connection)
        return cache[key]


#: The status-history note of a late vendor answer for a ``lost`` task.
LATE_ANSWER_NOTE = "Kling answered after this task was marked lost at vendor."
#: Longest reason an admin may give when ending a task by hand (characters).
END_REASON_MAX = 500


class EndRefused(ValueError):
    """``task_end_by_hand`` refused: the reason is missing or too long, or the task is not
    a sent, unfinished task. ``str()`` is the message to show; nothing was changed."""


def task_not_found_count(*, tasks: QuerySet[Task], at: datetime) -> int:
    """Count one more "not found" answer (KLING_API.md §2, code 1203; a task absent from
    the 2026 design's ``GET /tasks``, KLING_API_2026.md §3) for the sent, in-flight rows of
    ``tasks``: ``not_found_checks`` + 1, ``not_found_since`` set to ``at`` (aware
    datetime) on the first. Any found answer resets both (``task_apply_remote``, the
    poller's ``reschedule_ok``). Never changes status. Returns the rows written."""
    from django.db.models import F
    from django.db.models.functions import Coalesce

    return tasks.filter(status__in=sorted(IN_FLIGHT)).update(
        not_found_checks=F("not_found_checks") + 1,
        not_found_since=Coalesce(F("not_found_since"), at),
    )


def task_lose(*, task_pk: int, at: datetime | None = None, source: str = "poll") -> bool:
    """End a sent task the vendor no longer knows as ``lost`` ("Lost at vendor"): called by
    the poller once it answered "not found" on ``settings.POLL_LOST_AFTER_CHECKS``
    consecutive checks spread over at least ``POLL_LOST_AFTER_SECONDS`` (the caller checks
    both). ``at``: aware datetime, default now.

    Nothing is charged (no ledger row) and the task leaves the unfinished set, so its
    budget reservation is released; the finished hooks run (the API's ``task.lost``
    webhook). The poller still asks about it every ``LATE_ANSWER_INTERVAL`` for
    ``LATE_ANSWER_WINDOW`` (``tasks_app.polling.lost_recheck``): a later answer is applied
    and charged once by ``task_apply_remote``. Returns True when this call moved it (False
    when it was no longer submitted/processing)."""
    at = at or timezone.now()
    with transaction.atomic():
        task = Task.objects.select_for_update().get(pk=task_pk)
        checks = task.not_found_checks
        since = task.not_found_since
        span = f" over {int((at - since).total_seconds() // 60)} min" if since else ""
        note = (
            f"Kling answered 'not found' for this task on {checks} consecutive checks{span}: "
            "it no longer knows it (e.g. its systems lost it). Nothing is charged and the "
            "budget reservation is released; if Kling answers later, that answer counts."
        )
        return _task_end(task, at=at, source=source, note=note)


def task_end_by_hand(*, task: Task, by: str, reason: str, at: datetime | None = None) -> bool:
    """An admin (or owner) ends a stale sent task by hand: status ``lost`` ("Lost at
    vendor") — not ``error``, which means a refused create — with ``reason`` (stripped,
    required, at most ``END_REASON_MAX`` characters) and ``by`` (username) recorded in its
    status history (source ``admin``). As for ``task_lose``: no charge, reservation
    released, ``task.lost`` webhook, and a later vendor answer still counts.

    Raises ``EndRefused`` (nothing changed) for a missing or overlong reason, or when the
    task is not submitted/processing. Returns True when it moved."""
    reason = (reason or "").strip()
    if not reason:
        raise EndRefused("Give a reason for ending this task.")
    if len(reason) > END_REASON_MAX:
        raise EndRefused(
            f"The reason is {len(reason)} characters long; at most {END_REASON_MAX} are kept."
        )
    at = at or timezone.now()
    with transaction.atomic():
        row = Task.objects.select_for_update().get(pk=task.pk)
        if row.status not in IN_FLIGHT:
            raise EndRefused(
                f"This task is {row.get_status_display().lower()}: only a task sent to Kling "
                "and not finished can be ended by hand."
            )
        note = f"Ended by hand by {by}: {reason}"
        moved = _task_end(row, at=at, source="admin", note=note)
    if moved:
        task.status, task.finished_at = row.status, row.finished_at
    return moved


def _task_end(task: Task, *, at: datetime, source: str, note: str) -> bool:
    """Move the locked, in-flight ``task`` to ``lost``: history entry, scheduling for the
    slow late-answer re-asks, hooks. Returns False when it was not in flight."""
    moved = task_status_move(
        task=task,
        to=Status.LOST,
        source=source,
        note=note,
        expected_from=sorted(IN_FLIGHT),
        at=at,
        error=NO_ERROR,
        finished_at=at,
        next_poll_at=at + LATE_ANSWER_INTERVAL,
        claimed_until=None,
        is_stale=False,
        poll_errors=0,
    )
    if moved:
        _after_finish(task, keep=False)
        _run_finished_hooks(task)
    return moved


def _task_confirm_finished(task: Task, remote: KlingTask, *, source: str) -> None:
    """Confirm ``task`` (finished on an unconfirmed callback, row locked) with the vendor's
    full finished answer ``remote``: store its ``task_result`` (the fuller copy: watermarked
    videos, ``url_1..url_3``, elements), newer vendor time and message, and clear
    ``needs_confirmation``; for a succeeded task run ``on_succeed`` again (idempotent hooks)
    and enqueue media keeping. The status never changes: an answer with another final
    status is logged and left to the nightly reconciliation (``tasks_app.reconcile``), as
    is a charge that differs from the recorded one; a charge the callback lacked is
    recorded (at most once: ``deduction_record``)."""
    now = timezone.now()
    # Confirmed: the errors of failed confirming polls and their staleness no longer apply.
    fields: dict[str, Any] = {
        "needs_confirmation": False,
        "updated_at": now,
        "is_stale": False,
        **_error_values(NO_ERROR),
    }
    same = remote.task_status == task.status
    if not same:
        log.warning(
            "task %s (%s): finished %s on a callback, but Kling's query says %s; keeping %s",
            task.pk,
            source,
            task.status,
            remote.task_status,
            task.status,
        )
    else:
        if remote.task_result:
            fields["result"] = remote.task_result
        if remote.task_status_msg:
            fields["task_status_msg"] = remote.task_status_msg
        if remote.updated_at and (
            task.vendor_updated_at is None or remote.updated_at > task.vendor_updated_at
        ):
            fields["vendor_updated_at"] = remote.updated_at
        if task.final_unit_deduction is None and remote.final_unit_deduction is not None:
            fields["final_unit_deduction"] = remote.final_unit_deduction
        elif (
            remote.final_unit_deduction is not None
            and remote.final_unit_deduction != task.final_unit_deduction
        ):
            log.warning(
                "task %s: callback charged %s units, Kling's query says %s; the ledger keeps "
                "the first (reconciliation reports the difference)",
                task.pk,
                task.final_unit_deduction,
                remote.final_unit_deduction,
            )
    Task.objects.filter(pk=task.pk).update(**fields)
    for name, value in fields.items():
        setattr(task, name, value)
    if not same:
        return
    charged = "final_unit_deduction" in fields and deduction_record(task=task, charged_at=now)
    if charged:
        _after_charge(task)
    if task.status == Status.SUCCEED:
        _run_on_succeed(task, remote)
    if charged or task.status == Status.SUCCEED:
        _after_finish(task, keep=task.status == Status.SUCCEED)


def _run_on_succeed(task: Task, remote: KlingTask) -> None:
    try:
        family = get_family(task.family)
    except UnknownFamily:
        log.error("task %s: family %r is not registered", task.pk, task.family)
        return
    if family.on_succeed is not None:
        family.on_succeed(task, remote)


def task_finished_announce(*, task: Task) -> None:
    """Run the ``settings.KLINGWEB_TASK_FINISHED_HOOKS`` for ``task``, which has just
    finished outside ``task_apply_remote`` (a create call refused by Kling:
    ``tasks_app.submission.task_refuse``), so that e.g. the API's ``task.failed`` webhook
    hears of refusals too. Call it in the transaction that moved the task; each hook runs
    in a savepoint and a failing one is logged, never raised."""
    _run_finished_hooks(task)


def _run_finished_hooks(task: Task) -> None:
    """``_run_finished_hooks_many`` for one task."""
    _run_finished_hooks_many([task])


def _run_finished_hooks_many(tasks: list[Task]) -> None:
    """Call each ``settings.KLINGWEB_TASK_FINISHED_HOOKS`` entry (dotted path of a function
    taking ``tasks=``, a list of finished tasks), e.g. the API's webhooks, once for
    ``tasks``, in a savepoint; when that fails with several tasks it is called again for
    each task alone (so one bad task does not cost the others their hook). A failing hook
    is logged and never undoes the apply."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    for path in getattr(settings, "KLINGWEB_TASK_FINISHED_HOOKS", ()):
        hook = import_string(path)
        groups = [tasks]
        while groups:
            group = groups.pop(0)
            try:
                with transaction.atomic():
                    hook(tasks=group)
            except Exception:
                if len(group) > 1:
                    log.warning(
                        "finished hook %s failed for %s tasks: one by one", path, len(group)
                    )
                    groups.extend([task] for task in group)
                    continue
                log.exception("task %s: finished hook %s failed", group[0].pk, path)


def _enqueue_on_commit(func: str, *args: object) -> None:
    from django_q.tasks import async_task

    transaction.on_commit(lambda: async_task(func, *args))
