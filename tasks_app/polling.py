"""Polling Kling for tasks in flight (DESIGN.md §2 step 3; KLING_API.md §3–4).

One cycle (``tasks_poll``) claims the tasks that are due, groups them by (Kling account,
family), reads the family's list endpoint 500 tasks a page, newest first, until every due task
of the group is found or the page is older than the oldest one due, and sends single queries
only for what the pages missed. Each vendor object goes through
``tasks_app.services.task_apply_remote``; this module never writes status, result or cost.

Cost: N in-flight tasks of one family take about ⌈N/500⌉ requests per cycle.

Scheduling: django-q2 schedules run at most once a minute, so ``poll_loop`` (started by the
one-minute schedule ``klingweb-poll``, see ``setup_schedules``) runs a cycle every
``POLL_CYCLE_SECONDS`` (5 s) for ``POLL_LOOP_SECONDS`` (55 s), then re-arms itself. A
``ClusterLease`` makes sure that only one loop runs at a time across every cluster, and the
per-task claim (``Task.claimed_until``) makes sure two pollers never poll the same task even
when someone runs a cycle by hand next to the loop.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from tasks_app.models import ClusterLease, Task
from tasks_app.services import NO_ERROR, TaskError, task_apply_remote, task_error_record

if TYPE_CHECKING:
    from klingweb.accounts.models import KlingAccount
    from klingweb.kling import KlingClient, KlingTask

log = logging.getLogger(__name__)

PAGE_SIZE = 500  # the vendor's largest pageSize (KLING_API.md §4)
MAX_PAGE_NUM = 1000  # the vendor's largest pageNum
EXTRA_PAGES = 3  # pages read beyond ⌈N/500⌉ before falling back to single queries
CLAIM_SECONDS = 120  # a claim outlives a crashed cycle by at most this long
CREATED_SKEW = timedelta(minutes=2)  # our clock vs the vendor's, when comparing created_at
FIRST_PHASE_SECONDS = 120  # tasks younger than this are polled every FAST_INTERVAL
FAST_INTERVAL = 5.0  # seconds
SLOW_INTERVAL = 60.0  # seconds; reached ~10 min after submission
STALE_INTERVAL = 300.0  # seconds, for tasks flagged stale
ERROR_BACKOFF_MAX = 300.0  # seconds
PAUSED_INTERVAL = 60.0  # seconds; an account paused by an admin is looked at again later
CHUNK = 500  # primary keys per IN (...) clause
POLL_LOOP_LEASE = "poll-loop"


@dataclass
class PollReport:
    """What one poll cycle did.

    ``claimed``: due tasks claimed; ``requests``: Kling calls made (list pages + single
    queries; the client's own transparent retries are not counted); ``found_in_pages``: due
    tasks found on list pages; ``single_queries``: get-one calls; ``applied``: tasks whose
    status changed; ``errors``: failed Kling calls or failed applies; ``groups``: (account,
    family) groups polled; ``seconds``: wall time of the cycle.
    """

    claimed: int = 0
    requests: int = 0
    found_in_pages: int = 0
    single_queries: int = 0
    applied: int = 0
    errors: int = 0
    groups: int = 0
    seconds: float = 0.0
    skipped_paused: int = 0
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
    """Seconds to wait after ``errors`` consecutive failed polls (≥ 1): 10, 20, 40 … 300."""
    return min(ERROR_BACKOFF_MAX, FAST_INTERVAL * (2 ** min(max(errors, 1), 10)))


def _chunks(items: list, size: int = CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _ids(pks: Iterable[int]) -> str:
    return ",".join(str(pk) for pk in pks)


def _free(now: datetime) -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)


def tasks_claim(*, now: datetime | None = None, limit: int = 20000) -> tuple[list[Task], datetime]:
    """Claim up to ``limit`` due tasks (submitted/processing, ``next_poll_at`` passed or unset).

    A claim is a lease: ``claimed_until`` is set with a conditional UPDATE that only touches
    rows whose lease is free (``claimed_until IS NULL OR claimed_until < now``), inside one
    transaction that also locks the candidate rows (PostgreSQL: ``FOR UPDATE SKIP LOCKED``;
    SQLite: the transaction is IMMEDIATE, so writers are serialised). Returns the claimed
    tasks (with team and account loaded) and the lease value identifying this claim.
    """
    now = now or timezone.now()
    # Random microseconds make the lease value unique to this claim, so it identifies our rows.
    lease = now + timedelta(seconds=CLAIM_SECONDS, microseconds=random.randint(0, 999_999))
    due = Q(next_poll_at__lte=now) | Q(next_poll_at__isnull=True)
    with transaction.atomic():
        qs = (
            Task.objects.pollable(now)  # in flight, or a callback awaiting its confirmation
            .filter(due)
            .filter(_free(now))
            .order_by(F("next_poll_at").asc(nulls_first=True), "pk")
        )
        if connection.features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True)
        pks = list(qs.values_list("pk", flat=True)[:limit])
        for chunk in _chunks(pks):
            Task.objects.filter(pk__in=chunk).filter(_free(now)).update(claimed_until=lease)
    tasks: list[Task] = []
    for chunk in _chunks(pks):
        tasks.extend(
            Task.objects.filter(pk__in=chunk, claimed_until=lease).select_related(
                "team", "kling_account"
            )
        )
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


def _client_family(key: str) -> str:
    from tasks_app.families import UnknownFamily, get_family

    try:
        return get_family(key).client_family
    except UnknownFamily:
        return key  # Family values and the client's family names are the same words


def _account_pause_for(*, account: KlingAccount, error: Exception) -> bool:
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
        ).waiting_after_server_error().filter(_free(self.now)).update(next_poll_at=self.now)

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
        if _unchanged(task, remote):
            return
        try:
            if task_apply_remote(task_pk=task.pk, remote=remote, source="poll"):
                self.report.applied += 1
        except Exception as exc:  # one bad row must not stop the cycle
            log.exception("poll: applying vendor state to task %s failed", task.pk)
            self.error(f"apply task {task.pk}: {exc}")

    def poll_group(self, account: KlingAccount, family: str, tasks: list[Task]) -> None:
        from klingweb.accounts.services import kling_client_for
        from klingweb.kling import ErrorClass, KlingError

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
        client_family = _client_family(family)
        found, failed = self._read_pages(client, client_family, tasks)
        if failed is None:
            self.wake_after_outage(account, family)
        else:
            _account_pause_for(account=account, error=failed)  # 1304: the admins' banner
        missing = [task for task in tasks if task.pk not in found]
        if failed is not None:
            for task in tasks:
                if task.pk in found:
                    self.apply(task, found[task.pk])
            self.reschedule_ok([t for t in tasks if t.pk in found])
            self.reschedule_error(missing, error=failed)
            return
        backed_off: list[Task] = []
        last_error: Exception | None = None
        for position, task in enumerate(missing):
            self.report.requests += 1
            self.report.single_queries += 1
            try:
                if task.task_id:
                    remote = client.get_task(client_family, task_id=task.task_id)
                else:
                    remote = client.get_task(client_family, external_task_id=task.external_task_id)
            except KlingError as exc:
                self.error(f"get {family} {task.task_id or task.external_task_id}: {exc}")
                backed_off.append(task)
                last_error = exc
                if exc.error_class != ErrorClass.NOT_FOUND:
                    # The vendor is unhappy (5xx, 1302, network, credentials): leave the
                    # rest of the group for a later cycle.
                    backed_off.extend(missing[position + 1 :])
                    break
                continue
            found[task.pk] = remote
        for task in tasks:
            if task.pk in found:
                self.apply(task, found[task.pk])
        self.reschedule_ok([t for t in tasks if t.pk in found])
        self.reschedule_error(backed_off, error=last_error)

    def _read_pages(
        self, client: KlingClient, client_family: str, tasks: list[Task]
    ) -> tuple[dict[int, KlingTask], Exception | None]:
        """Read list pages until every task is found or pages are older than the oldest."""
        from klingweb.kling import KlingError

        by_task_id = {task.task_id: task for task in tasks if task.task_id}
        by_external = {task.external_task_id: task for task in tasks}
        oldest = min((task.vendor_created_at or task.created_at) for task in tasks) - CREATED_SKEW
        max_pages = min(MAX_PAGE_NUM, math.ceil(len(tasks) / PAGE_SIZE) + EXTRA_PAGES)
        found: dict[int, KlingTask] = {}
        for page in range(1, max_pages + 1):
            self.report.requests += 1
            try:
                items = client.list_tasks(client_family, page=page, page_size=PAGE_SIZE)
            except KlingError as exc:
                self.error(f"list {client_family} page {page}: {exc}")
                self.report.found_in_pages += len(found)
                return found, exc
            for item in items:
                task = by_task_id.get(item.task_id)
                if task is None and item.external_task_id:
                    task = by_external.get(item.external_task_id)
                if task is not None and task.pk not in found:
                    found[task.pk] = item
            if len(found) == len(tasks) or len(items) < PAGE_SIZE:
                break
            created = [item.created_at for item in items if item.created_at is not None]
            if created and min(created) < oldest:
                break
        self.report.found_in_pages += len(found)
        return found, None


def tasks_poll(*, now: datetime | None = None, limit: int = 20000) -> PollReport:
    """Run one poll cycle over every due task; returns a ``PollReport``.

    Claims due tasks (``tasks_claim``), polls each (account, family) group through list pages
    and single queries, applies what it learns with ``task_apply_remote(source="poll")``, sets
    each task's ``next_poll_at`` (``poll_interval`` by age with jitter, or ``error_backoff``
    after 5xx/1302/network/credential errors), flags ``is_stale`` after
    ``settings.POLL_STALE_AFTER_SECONDS`` (default 2 h) and releases the claims. A task is
    never failed here. Accounts paused (1100–1102, 1304) are skipped; a 1304 here pauses the
    account (``submission.account_pause_for``). Raises nothing for vendor
    errors; a crash mid-cycle leaves claims that expire after ``CLAIM_SECONDS``.
    """
    from klingweb.accounts.services import account_for_team

    started = time.monotonic()
    now = now or timezone.now()
    report = PollReport()
    tasks, lease = tasks_claim(now=now, limit=limit)
    report.claimed = len(tasks)
    if not tasks:
        report.seconds = time.monotonic() - started
        return report
    cycle = _Cycle(report, lease, now)
    accounts: dict[int, KlingAccount] = {}
    team_accounts: dict[int, KlingAccount] = {}
    groups: dict[tuple[int, str], list[Task]] = defaultdict(list)
    for task in tasks:
        account = task.kling_account
        if account is None:
            account = team_accounts.get(task.team_id)
            if account is None:
                account = account_for_team(team=task.team)
                team_accounts[task.team_id] = account
        accounts.setdefault(account.pk, account)
        groups[(account.pk, task.family)].append(task)
    try:
        for (account_pk, family), group in groups.items():
            try:
                cycle.poll_group(accounts[account_pk], family, group)
            except Exception as exc:
                log.exception("poll: group (%s, %s) failed", account_pk, family)
                cycle.error(f"group ({account_pk}, {family}): {exc}")
                cycle.reschedule_error(group, error=exc)
    finally:
        # Whatever is still claimed by this cycle (an unexpected error) is released.
        for chunk in _chunks([task.pk for task in tasks]):
            Task.objects.filter(pk__in=chunk, claimed_until=lease).update(claimed_until=None)
        _log_release(lease, [task.pk for task in tasks])
    report.seconds = time.monotonic() - started
    if report.errors:
        log.warning("poll: %s", report)
    return report


def poll_cycle() -> PollReport:
    """One tick of the loop: submit queued tasks that are due (``tasks_submit_due`` of the
    tasks stream, when present), then ``tasks_poll``."""
    try:
        from tasks_app.submission import tasks_submit_due
    except ImportError:
        tasks_submit_due = None
    if tasks_submit_due is not None:
        try:
            tasks_submit_due()
        except Exception:
            log.exception("poll: tasks_submit_due failed")
    return tasks_poll()


# --- the loop and its lease --------------------------------------------------------------


def _holder_name() -> str:
    """A lease holder's name: ``host:pid:random`` (``_holder_dead`` reads host and pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _holder_dead(holder: str) -> bool:
    """True when ``holder`` names a process of this host that no longer exists (a cluster
    killed with SIGKILL, or by the OOM killer, never releases its lease). Holders of other
    hosts, and names not of the ``host:pid:random`` form, are taken to be alive. Machines
    (containers) running clusters must have distinct host names; if two shared one, they
    would take the lease from each other now and then — per-task claims still keep any
    task from being polled twice."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. PermissionError: it exists, as another user
        return False
    try:  # Linux: a killed process not yet reaped by its parent is a zombie ("Z")
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def lease_take(*, name: str, holder: str, seconds: float) -> bool:
    """Take (or renew) the named ``ClusterLease`` for ``seconds``; True when ``holder`` has it.

    A conditional UPDATE: succeeds when the lease is free, expired, already ``holder``'s, or
    held by a process of this host that has died (``_holder_dead``; compared-and-swapped on
    the dead holder's name, so two takers cannot both win). Without that last case a cluster
    killed mid-loop kept the loop stopped until its lease expired (``run_seconds`` + 30 s),
    and a cluster restarted faster than that never polled at all.
    """
    now = timezone.now()
    current = ClusterLease.objects.filter(name=name).values_list("holder", "until").first()
    if current is None:
        try:
            with transaction.atomic():
                ClusterLease.objects.create(name=name)
        except IntegrityError:
            pass
    free = Q(until__isnull=True) | Q(until__lt=now) | Q(holder=holder)
    held = current is not None and current[0] and current[1] is not None and current[1] >= now
    if held and _holder_dead(current[0]):
        log.warning("lease %s: holder %s has died; taking it over", name, current[0])
        free |= Q(holder=current[0])
    taken = (
        ClusterLease.objects.filter(name=name)
        .filter(free)
        .update(holder=holder, until=now + timedelta(seconds=seconds), heartbeat_at=now)
    )
    return taken == 1


def lease_live(*, name: str) -> bool:
    """True when the named lease is held by someone who is (as far as we can tell) alive:
    not expired, and not a dead process of this host."""
    current = ClusterLease.objects.filter(name=name).values_list("holder", "until").first()
    if current is None or not current[0] or current[1] is None:
        return False
    return current[1] >= timezone.now() and not _holder_dead(current[0])


def lease_release(*, name: str, holder: str) -> None:
    """Give the named lease up if ``holder`` still has it."""
    ClusterLease.objects.filter(name=name, holder=holder).update(holder="", until=None)


def poll_loop(
    *,
    run_seconds: float | None = None,
    cycle_seconds: float | None = None,
    rearm: bool = False,
) -> int:
    """Run ``poll_cycle`` every ``cycle_seconds`` (default ``POLL_CYCLE_SECONDS`` = 5) for
    about ``run_seconds`` (default ``POLL_LOOP_SECONDS`` = 55), holding the ``poll-loop``
    lease; returns the number of cycles run (0 when another loop holds the lease).

    With ``rearm`` the loop enqueues its successor (``tasks_app.jobs.poll_loop``) when it
    ends, so polling is continuous; the one-minute schedule restarts the chain if a cluster
    died mid-loop (the lease then expires ``run_seconds`` + 30 s after its last renewal).
    """
    run_seconds = float(
        run_seconds if run_seconds is not None else getattr(settings, "POLL_LOOP_SECONDS", 55)
    )
    cycle_seconds = float(
        cycle_seconds
        if cycle_seconds is not None
        else getattr(settings, "POLL_CYCLE_SECONDS", FAST_INTERVAL)
    )
    holder = _holder_name()
    lease_seconds = run_seconds + 30.0
    if not lease_take(name=POLL_LOOP_LEASE, holder=holder, seconds=lease_seconds):
        return 0
    cycles = 0
    deadline = time.monotonic() + run_seconds
    try:
        while True:
            started = time.monotonic()
            if not connection.in_atomic_block:
                close_old_connections()  # a long job: drop broken or expired connections
            try:
                poll_cycle()
            except Exception:
                log.exception("poll loop: cycle failed")
            cycles += 1
            if not lease_take(name=POLL_LOOP_LEASE, holder=holder, seconds=lease_seconds):
                log.warning("poll loop: lost the lease; stopping")
                return cycles
            elapsed = time.monotonic() - started
            if time.monotonic() + max(0.0, cycle_seconds - elapsed) >= deadline:
                break
            time.sleep(max(0.0, cycle_seconds - elapsed))
    finally:
        lease_release(name=POLL_LOOP_LEASE, holder=holder)
    if rearm:
        from django_q.tasks import async_task

        async_task("tasks_app.jobs.poll_loop", task_name="klingweb-poll-loop")
    return cycles


def poll_loop_ensure() -> bool:
    """Start the poll loop now unless a live loop holds its lease; True when one was
    enqueued.

    Called when a cluster's worker process starts (``tasks_app.jobs.cluster_worker_started``,
    on django-q2's ``post_spawn``): the one-minute schedule alone first fires about 30 s
    after a cluster starts (django-q2's scheduler runs every 30 s of the cluster's life), so a
    cluster that restarts often — after a crash, or each deploy — would poll late or never.
    Several workers starting at once may enqueue several loops; all but one return at once
    (``poll_loop`` takes the lease first).
    """
    if lease_live(name=POLL_LOOP_LEASE):
        return False
    from django_q.tasks import async_task

    async_task("tasks_app.jobs.poll_loop", task_name="klingweb-poll-loop")
    return True
