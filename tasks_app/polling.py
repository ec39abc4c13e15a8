"""Polling Kling for tasks in flight (DESIGN.md §2 step 3; KLING_API.md §3–4).

One cycle (``tasks_poll``) claims the tasks that are due, groups them by (Kling account,
family) and finds each group at Kling with ``tasks_app.finder.tasks_find``: 2026-design
families by id, ``GET /tasks?task_ids=…`` 100 ids a request; legacy families the same way
on an API-key account whose ``GET /tasks`` has been seen to serve legacy tasks (probed per
account, see ``tasks_app.finder``), else on the list endpoint, 500 tasks a page, newest
first, until every due task of the group is found or the page is older than the oldest one
due, with single queries only for what the pages missed.
Each answer goes through ``_Cycle.apply`` → ``tasks_app.services.task_apply_remote``; this
module never writes status, result or cost.

Cost per cycle: ⌈N/100⌉ requests for N due tasks of a 2026-design family, whatever else lives
in the account; the same for a legacy family where ``GET /tasks`` serves legacy tasks (plus
list pages only for tasks it did not answer); else about ⌈(N + newer foreign tasks)/500⌉,
and one probe request a day per API-key account.

Running: one long-running process, ``python manage.py kling_poll`` (the Procfile's
``poller``), runs ``poll_cycle`` every 5 s (``poll_run``); start one or several, on one
machine or several. They share nothing but the database. A cycle claims its work group by
group with conditional UPDATEs (``group_claim``, the pattern of healthchecks'
``sendalerts``): first the group's ``PollClaim`` row, which only one poller can take, then
the group's due tasks; so no group is read by two pollers in the same cycle and no task is
applied twice. A poller killed mid-cycle leaves claims that expire after
``settings.POLL_CLAIM_SECONDS``;
then another poller takes the group over.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import F, Q
from django.utils import timezone

from klingweb.kling.backoff import backoff_delay
from tasks_app.finder import Wanted, tasks_find
from tasks_app.models import IN_FLIGHT, LATE_ANSWER_INTERVAL, PollClaim, Task
from tasks_app.services import (
    NO_ERROR,
    ApplyBatch,
    TaskError,
    apply_batch,
    task_apply_remote,
    task_error_record,
    task_lose,
    task_not_found_count,
    tasks_apply_remote,
)

if TYPE_CHECKING:
    from klingweb.accounts.models import KlingAccount
    from klingweb.kling import KlingTask

log = logging.getLogger(__name__)

FIRST_PHASE_SECONDS = 120  # tasks younger than this are polled every FAST_INTERVAL
FAST_INTERVAL = 5.0  # seconds
SLOW_INTERVAL = 60.0  # seconds; reached ~10 min after submission
STALE_INTERVAL = 300.0  # seconds, for tasks flagged stale
ERROR_BACKOFF_MAX = 300.0  # seconds
PAUSED_INTERVAL = 60.0  # seconds; an account paused by an admin is looked at again later
CHUNK = 500  # primary keys per IN (...) clause
#: Polled answers applied per transaction (``_Cycle.apply_many``): large enough that a burst
#: of 5,000 finished tasks costs 20 commits (and 20 pauses on SQLite), small enough that a
#: callback waiting for the write lock (SQLite) or a row lock waits well under a second (a
#: chunk applied together, ``tasks_apply_remote``, holds it ~0.1–0.3 s on 2 loaded cores).
APPLY_BATCH = 250
#: Seconds the poller pauses between two chunks on SQLite, so that writers waiting for its
#: one write lock (callbacks and their confirming jobs) get it in between. SQLite's busy
#: handler lets a waiting writer retry only every 50–100 ms; without a pause the next
#: chunk's ``BEGIN IMMEDIATE`` wins every time, and a callback waits out the whole burst
#: (or fails "database is locked" after the 20 s busy timeout). PostgreSQL locks rows, so
#: it gets no pause. A burst of 5,000 answers (20 chunks) costs 1 s more.
APPLY_YIELD_SECONDS = 0.05


@dataclass
class PollReport:
    """What one poll cycle did.

    ``claimed``: due tasks claimed; ``requests``: Kling calls made (list pages, ``GET /tasks``
    id batches and single queries; the client's own transparent retries are not counted);
    ``found_in_pages``: due tasks found on list pages or in id batches; ``id_queries``:
    ``GET /tasks`` batches (2026 design); ``single_queries``: get-one calls; ``applied``: tasks whose
    status changed; ``errors``: failed Kling calls or failed applies; ``groups``: (account,
    family) groups polled; ``seconds``: wall time of the cycle.
    """

    claimed: int = 0
    requests: int = 0
    found_in_pages: int = 0
    id_queries: int = 0
    single_queries: int = 0
    applied: int = 0
    errors: int = 0
    groups: int = 0
    seconds: float = 0.0
    skipped_paused: int = 0
    lost: int = 0
    error_messages: list[str] = field(default_factory=list)


def poll_interval(*, age_seconds: float, stale: bool) -> float:
    """Seconds until a task of this age (since submission) is polled again.

    5 s for the first two minutes, then growing by 1 s every 10 s up to 60 s (about ten
    minutes after submission); 300 s once the task is flagged stale. Jitter is added by the
    caller.
    """
    if stale:
        return STALE_INTERVAL
    if age_seconds < FIRST_PHASE_SECONDS:
        return FAST_INTERVAL
    return min(SLOW_INTERVAL, FAST_INTERVAL + (age_seconds - FIRST_PHASE_SECONDS) / 10.0)


def error_backoff(*, errors: int) -> float:
    """Seconds to wait after ``errors`` consecutive failed polls (≥ 1): 10, 20, 40 … 300
    (``klingweb.kling.backoff.backoff_delay``; the caller adds jitter)."""
    return backoff_delay(errors, base=2 * FAST_INTERVAL, cap=ERROR_BACKOFF_MAX)


def _chunks(items: list, size: int = CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _ids(pks: Iterable[int]) -> str:
    return ",".join(str(pk) for pk in pks)


def _accounts_fill() -> None:
    """Give in-flight tasks without a Kling account their team's (``account_for_team``), so
    every due task belongs to exactly one (account, family) group. Submission sets the account
    before the create call; this only covers rows made otherwise."""
    from klingweb.accounts.models import Team
    from klingweb.accounts.services import account_for_team

    team_pks = set(
        Task.objects.in_flight()
        .filter(kling_account__isnull=True)
        .values_list("team_id", flat=True)
        .distinct()
    )
    for team in Team.objects.filter(pk__in=team_pks).select_related("kling_account"):
        account = account_for_team(team=team)
        Task.objects.in_flight().filter(team=team, kling_account__isnull=True).update(
            kling_account=account
        )


def groups_due(*, now: datetime) -> list[tuple[int, str]]:
    """The (Kling account pk, family) pairs that have a due, unclaimed in-flight task, the
    group whose task waits longest first."""
    rows = (
        Task.objects.due_for_poll(now)
        .filter(kling_account__isnull=False)
        .order_by(F("next_poll_at").asc(nulls_first=True), "pk")
        .values_list("kling_account_id", "family")
    )
    seen: dict[tuple[int, str], None] = {}
    for row in rows.iterator(chunk_size=2000):
        seen.setdefault(row, None)
    return list(seen)


def claim_lease(now: datetime) -> datetime:
    """The ``claimed_until`` of one cycle's claims: ``now`` + ``settings.POLL_CLAIM_SECONDS``
    (120 s by default), plus random microseconds so the value identifies this cycle's rows."""
    return now + timedelta(
        seconds=settings.POLL_CLAIM_SECONDS, microseconds=random.randint(0, 999_999)
    )


def wanted_of(tasks: list[Task]) -> list[Wanted]:
    """What ``tasks_find`` looks for, one ``Wanted`` per task (keyed by primary key): its
    ``task_id``, ``external_task_id`` and creation time (the vendor's when known)."""
    return [
        Wanted(
            key=task.pk,
            task_id=task.task_id,
            external_task_id=task.external_task_id,
            created_at=task.vendor_created_at or task.created_at,
        )
        for task in tasks
    ]


def group_claim(
    *, account_pk: int, family: str, now: datetime, lease: datetime, limit: int
) -> list[int]:
    """Claim one (Kling account, family) group and up to ``limit`` of its due tasks for one
    poll cycle; returns the tasks' primary keys (empty when another poller holds the group).

    Two conditional UPDATEs, as healthchecks' ``sendalerts`` claims a check: the group's
    ``PollClaim`` row goes from free (``claimed_until`` unset or before ``now``) to ``lease``
    — only one poller can win that — then the group's due rows whose own claim is free get
    ``claimed_until = lease``. ``lease``: an aware datetime unique to the caller's cycle, about
    ``settings.POLL_CLAIM_SECONDS`` ahead; both claims expire then if the poller dies.
    """
    PollClaim.objects.get_or_create(account_id=account_pk, family=family)
    taken = (
        PollClaim.objects.filter(account_id=account_pk, family=family)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=lease)
    )
    if taken != 1:
        return []
    pks = list(
        Task.objects.due_for_poll(now)
        .filter(kling_account_id=account_pk, family=family)
        .order_by(F("next_poll_at").asc(nulls_first=True), "pk")
        .values_list("pk", flat=True)[:limit]
    )
    for chunk in _chunks(pks):
        Task.objects.filter(pk__in=chunk).unclaimed(now).update(claimed_until=lease)
    return pks


#: Columns of a claimed task the cycle never reads (``tasks_claim`` defers them).
_UNREAD = ("params", "result")


def _related_load(tasks: list[Task]) -> None:
    """Give ``tasks`` their team and Kling account, one shared instance per row of either
    (a ``select_related`` would build one of each per task: thousands in a burst)."""
    from klingweb.accounts.models import KlingAccount, Team

    teams = Team.objects.in_bulk({task.team_id for task in tasks})
    accounts = KlingAccount.objects.in_bulk({task.kling_account_id for task in tasks})
    for task in tasks:
        task.team = teams[task.team_id]
        task.kling_account = accounts[task.kling_account_id]


def tasks_claim(*, now: datetime | None = None, limit: int = 20000) -> tuple[list[Task], datetime]:
    """Claim up to ``limit`` due tasks (submitted/processing, ``next_poll_at`` passed or unset),
    whole (account, family) groups at a time (``group_claim``); groups another poller holds
    are left to it.

    A claim is a lease: ``claimed_until`` = ``now`` + ``settings.POLL_CLAIM_SECONDS`` (120 s
    by default; plus random microseconds, so the value identifies this cycle's
    rows). Returns the claimed tasks (with team and account loaded; ``params`` and
    ``result`` deferred) and that lease value.
    """
    now = now or timezone.now()
    lease = claim_lease(now)
    _accounts_fill()
    pks: list[int] = []
    for account_pk, family in groups_due(now=now):
        if len(pks) >= limit:
            break
        pks.extend(
            group_claim(
                account_pk=account_pk,
                family=family,
                now=now,
                lease=lease,
                limit=limit - len(pks),
            )
        )
    tasks: list[Task] = []
    for chunk in _chunks(pks):
        # Without the JSON columns: a cycle reads neither (applying reloads its rows), and
        # decoding them was a tenth of a 5,000-task cycle.
        rows = Task.objects.filter(pk__in=chunk, claimed_until=lease).defer(*_UNREAD)
        tasks.extend(rows)
    _related_load(tasks)
    if tasks and log.isEnabledFor(logging.DEBUG):
        # The claims audit of the soak (tests/benchmarks/soak.py): which cycle held which
        # task when; a release line follows for every claimed task.
        log.debug(
            "poll claim lease=%s t=%.6f pks=%s",
            lease.isoformat(),
            time.time(),
            _ids(task.pk for task in tasks),
        )
    return tasks, lease


def _account_pause_for(*, account: KlingAccount, error: Exception) -> bool:
    """Pause ``account`` when ``error`` is an account-level code (1304 here: the poller may be
    the first to see it); ``tasks_app.submission.account_pause_for``."""
    from tasks_app.submission import account_pause_for

    return account_pause_for(account=account, error=error)


def _unchanged(task: Task, remote: KlingTask) -> bool:
    """True when applying ``remote`` would change nothing (skip the write transaction)."""
    if remote.task_status != task.status or not task.task_id or task.needs_confirmation:
        return False
    if remote.created_at and not task.vendor_created_at:
        return False
    if remote.updated_at is None:
        return True
    return task.vendor_updated_at is not None and remote.updated_at <= task.vendor_updated_at


def _log_release(lease: datetime, pks: list[int]) -> None:
    """Audit line (DEBUG) once this cycle's claim of ``pks`` is given up."""
    if pks and log.isEnabledFor(logging.DEBUG):
        log.debug("poll release lease=%s t=%.6f pks=%s", lease.isoformat(), time.time(), _ids(pks))


class _Cycle:
    """State of one ``tasks_poll`` run."""

    def __init__(self, report: PollReport, lease: datetime, now: datetime):
        self.report = report
        self.lease = lease
        self.now = now
        self.stale_after = float(settings.POLL_STALE_AFTER_SECONDS)

    # -- rescheduling ----------------------------------------------------------------------
    def _age(self, task: Task) -> float:
        since = task.submitted_at or task.vendor_created_at or task.created_at
        return max(0.0, (self.now - since).total_seconds())

    def reschedule_ok(self, tasks: Iterable[Task]) -> None:
        """Next poll by age, errors reset, claim released; only rows still in flight and
        still under this cycle's claim are touched."""
        buckets: dict[tuple[int, bool], list[int]] = defaultdict(list)
        for task in tasks:
            age = self._age(task)
            stale = age >= self.stale_after
            buckets[(round(poll_interval(age_seconds=age, stale=stale)), stale)].append(task.pk)
        for (interval, stale), pks in buckets.items():
            # Jitter within (0.8..0.95) × interval: spreads load, and a young task is always
            # due again at the next 5-second cycle (never just after it).
            delay = interval * random.uniform(0.8, 0.95)
            self._update(
                pks,
                reason=NO_ERROR,
                next_poll_at=self.now + timedelta(seconds=delay),
                is_stale=stale,
                poll_errors=0,
                not_found_checks=0,  # found: earlier "not found" answers no longer count
                not_found_since=None,
            )

    def reschedule_error(
        self, tasks: Iterable[Task], *, minimum: float = 0.0, error: Exception | None = None
    ) -> None:
        """Back off with jitter after a failed poll; never fails the task. ``error`` (the
        vendor's code, message and request_id, or the exception's text) is kept on the task
        so its page can say why it waits; the next successful poll clears it."""
        reason = None
        if error is not None:
            reason = TaskError(
                getattr(error, "code", None),
                (getattr(error, "message", None) or str(error))[:1000],
                getattr(error, "request_id", None) or "",
            )
        buckets: dict[tuple[int, bool], list[int]] = defaultdict(list)
        for task in tasks:
            stale = self._age(task) >= self.stale_after
            buckets[(task.poll_errors + 1, stale)].append(task.pk)
        for (errors, stale), pks in buckets.items():
            delay = max(minimum, error_backoff(errors=errors)) * random.uniform(0.5, 1.0)
            self._update(
                pks,
                next_poll_at=self.now + timedelta(seconds=delay),
                is_stale=stale,
                poll_errors=F("poll_errors") + 1,
                reason=reason,
            )

    def wake_after_outage(self, account: KlingAccount, family: str) -> None:
        """The list endpoint answered again: tasks of this (account, family) that back off
        after server or network errors (up to 5 min) become due now, so they catch up at the
        next cycle (one more list page read) instead of over the following minutes. Tasks
        backing off for other reasons (1203 not found, 1302 rate limit) keep waiting."""
        Task.objects.in_flight().filter(
            kling_account=account,
            family=family,
            poll_errors__gt=0,
            next_poll_at__gt=self.now,
        ).waiting_after_server_error().unclaimed(self.now).update(next_poll_at=self.now)

    def reschedule_paused(self, tasks: Iterable[Task]) -> None:
        """Look at an account paused by the vendor's account codes again in about a minute."""
        pks = [task.pk for task in tasks]
        delay = PAUSED_INTERVAL * random.uniform(0.8, 1.2)
        self._update(pks, next_poll_at=self.now + timedelta(seconds=delay))

    def _update(self, pks: list[int], *, reason: TaskError | None = None, **values) -> None:
        """Release this cycle's claim on ``pks`` with ``values``; ``reason``: the error to
        show (``NO_ERROR`` clears it, None leaves it), written by ``task_error_record``."""
        values = {"claimed_until": None, "poll_attempts": F("poll_attempts") + 1, **values}
        for chunk in _chunks(pks):
            rows = Task.objects.pollable(self.now).filter(pk__in=chunk, claimed_until=self.lease)
            if reason is None:
                rows.update(**values)
            else:
                task_error_record(tasks=rows, **reason._asdict(), **values)
        _log_release(self.lease, pks)

    # -- polling one group -----------------------------------------------------------------
    def error(self, message: str) -> None:
        self.report.errors += 1
        if len(self.report.error_messages) < 20:
            self.report.error_messages.append(message)

    def apply(self, task: Task, remote: KlingTask) -> None:
        """The one place a polled answer is applied: skipped when it would change nothing
        (``_unchanged``), else ``task_apply_remote(source="poll")``; a failure is counted and
        logged, never raised (one bad row must not stop the cycle)."""
        if _unchanged(task, remote):
            return
        try:
            if task_apply_remote(task_pk=task.pk, remote=remote, source="poll"):
                self.report.applied += 1
        except Exception as exc:  # one bad row must not stop the cycle
            log.exception("poll: applying vendor state to task %s failed", task.pk)
            self.error(f"apply task {task.pk}: {exc}")

    def apply_many(self, answers: list[tuple[Task, KlingTask]], batch: ApplyBatch) -> None:
        """Apply polled answers ``[(task, remote)]`` in chunks of ``APPLY_BATCH``, one
        transaction each (``ApplyBatch.transaction``: budget thresholds once per team and
        chunk; jobs once per cycle), so a burst of finished tasks is applied in one cycle.
        A chunk goes through ``tasks_app.services.tasks_apply_remote`` (a few statements
        for all its tasks); what that leaves (late, unconfirmed, refresh-only answers…)
        through ``apply`` one task at a time.
        On SQLite the poller pauses ``APPLY_YIELD_SECONDS`` between two chunks, so callbacks
        waiting for the write lock are not held up by the whole burst. A chunk whose commit
        fails is counted and logged; its tasks stay due."""
        for number, chunk in enumerate(
            _chunks([pair for pair in answers if not _unchanged(*pair)], APPLY_BATCH)
        ):
            if number and connection.vendor == "sqlite":
                time.sleep(APPLY_YIELD_SECONDS)
            applied = self.report.applied
            try:
                with batch.transaction():
                    done = tasks_apply_remote(
                        answers=[(task.pk, remote) for task, remote in chunk], source="poll"
                    )
                    self.report.applied += len(done.moved)
                    tasks = {task.pk: task for task, _ in chunk}
                    for pk, remote in done.rest:
                        self.apply(tasks[pk], remote)
            except Exception as exc:
                self.report.applied = applied
                log.exception("poll: a chunk of %s answers failed", len(chunk))
                self.error(f"apply chunk of {len(chunk)}: {exc}")

    def poll_group(
        self, account: KlingAccount, family: str, tasks: list[Task], batch: ApplyBatch
    ) -> None:
        """Ask Kling about one claimed (account, family) group (``tasks_app.finder.
        tasks_find``), apply what it answered, and reschedule every task of the group."""
        from klingweb.accounts.services import kling_client_for

        self.report.groups += 1
        if account.is_paused:
            self.report.skipped_paused += len(tasks)
            self.reschedule_paused(tasks)
            return
        try:
            client = kling_client_for(account)
        except Exception as exc:  # unreadable secret, missing operator credentials
            log.warning("poll: no client for account %s: %s", account.pk, exc)
            self.error(f"account {account.pk}: {exc}")
            self.reschedule_error(tasks, minimum=60.0, error=exc)
            return
        found = tasks_find(client, family, wanted_of(tasks), account=account, now=self.now)
        self.report.requests += found.requests
        self.report.id_queries += found.id_queries
        self.report.single_queries += found.single_queries
        self.report.found_in_pages += found.found_in_listing
        for key, exc in found.unknown.items():
            self.error(f"{family} task {key}: {exc}")
        if found.error is not None:
            self.error(f"{family}: {found.error}")
            _account_pause_for(account=account, error=found.error)  # 1304: the admins' banner
        if found.listing_ok:
            self.wake_after_outage(account, family)
        answers = [(task, found.found[task.pk]) for task in tasks if task.pk in found.found]
        self.apply_many(answers, batch)
        self.reschedule_ok([task for task in tasks if task.pk in found.found])
        waiting = [task for task in tasks if task.pk not in found.found]
        reason = found.error or next(reversed(found.unknown.values()), None)
        self.reschedule_error(waiting, error=reason)
        self.count_not_found([task for task in tasks if task.pk in found.unknown])

    def count_not_found(self, tasks: list[Task]) -> None:
        """The vendor answered "not found" (1203; absent from the 2026 ``GET /tasks``) for
        these sent tasks: count the check (``services.task_not_found_count``) and end as
        ``lost`` (``services.task_lose``) each that has now been not found on
        ``settings.POLL_LOST_AFTER_CHECKS`` consecutive checks over at least
        ``POLL_LOST_AFTER_SECONDS``. Finished tasks awaiting confirmation are not counted."""
        sent = [t for t in tasks if t.status in IN_FLIGHT and (t.task_id or t.submitted_at)]
        if not sent:
            return
        for chunk in _chunks([task.pk for task in sent]):
            task_not_found_count(tasks=Task.objects.filter(pk__in=chunk), at=self.now)
        checks = int(settings.POLL_LOST_AFTER_CHECKS)
        span = timedelta(seconds=int(settings.POLL_LOST_AFTER_SECONDS))
        for task in sent:
            since = task.not_found_since or self.now
            if task.not_found_checks + 1 >= checks and self.now - since >= span:
                try:
                    if task_lose(task_pk=task.pk, at=self.now):
                        self.report.lost += 1
                except Exception as exc:  # one bad row must not stop the cycle
                    log.exception("poll: marking task %s lost failed", task.pk)
                    self.error(f"lose task {task.pk}: {exc}")


def lost_recheck(*, now: datetime | None = None, limit: int = 1000) -> PollReport:
    """Ask the vendor again about tasks marked ``lost`` in the last ``LATE_ANSWER_WINDOW``
    (``Task.objects.lost_recently``) whose ``next_poll_at`` has come: every
    ``LATE_ANSWER_INTERVAL`` (10 min), apart from the normal poll set so they never load
    its cycle. A finished answer is applied by ``task_apply_remote`` (moved on and charged
    once, "Kling answered after this task was marked lost at vendor"); anything else leaves
    the task lost until the next re-ask. Rows are claimed with a lease as in
    ``tasks_claim`` (``settings.POLL_CLAIM_SECONDS``), so two pollers never ask about one
    task at once. Returns a
    ``PollReport`` (``claimed``, ``requests``, ``applied``, ``errors``)."""
    now = now or timezone.now()
    report = PollReport()
    lease = claim_lease(now)
    due = (
        Task.objects.lost_recently(now)
        .filter(kling_account__isnull=False, next_poll_at__lte=now)
        .unclaimed(now)
    )
    pks = list(due.order_by("next_poll_at", "pk").values_list("pk", flat=True)[:limit])
    for chunk in _chunks(pks):
        due.filter(pk__in=chunk).update(claimed_until=lease)
    tasks = list(
        Task.objects.filter(pk__in=pks, claimed_until=lease).select_related("kling_account")
    )
    report.claimed = len(tasks)
    groups: dict[tuple[int, str], list[Task]] = defaultdict(list)
    for task in tasks:
        groups[(task.kling_account_id, task.family)].append(task)
    cycle = _Cycle(report, lease, now)
    from klingweb.accounts.services import kling_client_for

    try:
        for group in groups.values():
            account = group[0].kling_account
            if account.is_paused:
                continue
            try:
                # No ``account``: lost tasks are the ones the vendor does not answer, so a
                # probe of GET /tasks with them would record "no" for the whole account.
                found = tasks_find(kling_client_for(account), group[0].family, wanted_of(group))
            except Exception as exc:
                log.warning("lost recheck: account %s: %s", account.pk, exc)
                cycle.error(f"lost recheck ({account.pk}, {group[0].family}): {exc}")
                continue
            report.requests += found.requests
            for task in group:
                remote = found.found.get(task.pk)
                if remote is not None and remote.is_finished:
                    cycle.apply(task, remote)
    finally:
        later = now + LATE_ANSWER_INTERVAL
        for chunk in _chunks([task.pk for task in tasks]):
            Task.objects.filter(pk__in=chunk, claimed_until=lease).update(claimed_until=None)
            Task.objects.filter(pk__in=chunk, status="lost").update(next_poll_at=later)
    return report


def tasks_poll(
    *, now: datetime | None = None, limit: int = 20000, stop: threading.Event | None = None
) -> PollReport:
    """Run one poll cycle over every due task; returns a ``PollReport``.

    Claims due tasks (``tasks_claim``), polls each (account, family) group
    (``tasks_app.finder.tasks_find``: id batches, or list pages and single queries), applies
    what it learns (``_Cycle.apply`` → ``task_apply_remote(source="poll")``), sets each
    task's ``next_poll_at`` (``poll_interval`` by age with jitter, or ``error_backoff``
    after 5xx/1302/network/credential errors), flags ``is_stale`` after
    ``settings.POLL_STALE_AFTER_SECONDS`` (default 2 h) and releases the claims. A task is
    never failed here; one the vendor answers "not found" for on ``POLL_LOST_AFTER_CHECKS``
    checks over ``POLL_LOST_AFTER_SECONDS`` ends "lost at vendor" (``count_not_found``). Accounts paused (1100–1102, 1304) are skipped; a 1304 here pauses the
    account (``submission.account_pause_for``). Raises nothing for vendor
    errors; a crash mid-cycle leaves claims that expire after
    ``settings.POLL_CLAIM_SECONDS``. Once
    ``stop`` is set (the poller got SIGTERM) no further group is polled: the claims of the
    groups left are released, their tasks stay due and the next cycle polls them.
    """
    started = time.monotonic()
    now = now or timezone.now()
    report = PollReport()
    tasks, lease = tasks_claim(now=now, limit=limit)
    report.claimed = len(tasks)
    if not tasks:
        PollClaim.objects.filter(claimed_until=lease).update(claimed_until=None)
        report.seconds = time.monotonic() - started
        return report
    cycle = _Cycle(report, lease, now)
    accounts: dict[int, KlingAccount] = {}
    groups: dict[tuple[int, str], list[Task]] = defaultdict(list)
    for task in tasks:
        accounts.setdefault(task.kling_account_id, task.kling_account)
        groups[(task.kling_account_id, task.family)].append(task)
    try:
        with apply_batch() as batch:
            for (account_pk, family), group in groups.items():
                if stop is not None and stop.is_set():
                    break
                try:
                    cycle.poll_group(accounts[account_pk], family, group, batch)
                except Exception as exc:
                    log.exception("poll: group (%s, %s) failed", account_pk, family)
                    cycle.error(f"group ({account_pk}, {family}): {exc}")
                    cycle.reschedule_error(group, error=exc)
    finally:
        # Whatever is still claimed by this cycle (an unexpected error) is released.
        for chunk in _chunks([task.pk for task in tasks]):
            Task.objects.filter(pk__in=chunk, claimed_until=lease).update(claimed_until=None)
        _log_release(lease, [task.pk for task in tasks])
        PollClaim.objects.filter(claimed_until=lease).update(claimed_until=None)
    report.seconds = time.monotonic() - started
    if report.errors:
        log.warning("poll: %s", report)
    return report


def poll_cycle(*, stop: threading.Event | None = None) -> PollReport:
    """One cycle of the poller: send queued tasks whose retry time has come
    (``tasks_app.submission.tasks_submit_due``), poll every due task (``tasks_poll``), then
    re-ask about recently lost tasks whose 10-minute turn has come (``lost_recheck``).
    Returns the poll's ``PollReport``; a failure of the submit step is logged, never raised.
    ``stop`` set: the cycle ends between two tasks (submission) or groups (poll) and skips
    the re-ask; what it did not reach is still due and the next cycle does it."""
    from tasks_app.submission import tasks_submit_due

    try:
        tasks_submit_due(stop=stop)
    except Exception:
        log.exception("poll: tasks_submit_due failed")
    if stop is not None and stop.is_set():
        return PollReport()
    report = tasks_poll(stop=stop)
    if stop is not None and stop.is_set():
        return report
    try:
        lost_recheck()
    except Exception:
        log.exception("poll: lost_recheck failed")
    return report


def poll_run(*, interval: float, stop: threading.Event) -> int:
    """Run ``poll_cycle`` every ``interval`` seconds (a cycle that takes longer is followed at
    once by the next) until ``stop`` is set; returns the cycles run.

    Setting ``stop`` (``kling_poll`` does on SIGTERM or SIGINT) ends the loop; a cycle in
    progress stops between tasks or groups (``poll_cycle``) and releases its claims, so none
    is left to expire and the next poller's cycle does the rest. A cycle that
    raises is logged and the loop goes on. Database connections are recycled before each
    cycle, as a request would (``close_old_connections``).
    """
    cycles = 0
    while True:
        started = time.monotonic()
        close_old_connections()
        try:
            poll_cycle(stop=stop)
        except Exception:
            log.exception("poller: cycle failed")
        cycles += 1
        if stop.wait(max(0.0, interval - (time.monotonic() - started))):
            return cycles
