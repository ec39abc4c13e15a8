"""Queuing tasks from the forms and sending their create calls (DESIGN.md §2 steps 1–2).

- ``task_queue``: the request side. Checks the budget, saves the task ``queued`` with a
  ``queued`` event (``tasks_app.services.task_create``), and enqueues
  ``tasks_app.jobs.submit_task`` on commit. Never calls Kling.
- ``task_submit``: the job side. Claims the row with a conditional update (a lease in
  ``claimed_until``), so two clusters never send one task twice, then sends the create call
  with ``external_task_id`` = the task's code and a signed ``callback_url``, and hands the
  answer to ``task_apply_remote`` (the one applier of vendor state). Every status, event
  and error write goes through ``tasks_app.services``.
- ``tasks_submit_due``: the safety net, called by every cycle of the poller. Submits
  queued tasks whose ``retry_at`` has passed (``Task.objects.due_for_submit``): the retries
  after 1302/1303/5xx/network errors, and tasks whose enqueued job was lost; and, whatever
  their ``retry_at``, tasks waiting on a paused account that they would no longer be sent
  through (``Task.objects.waiting_on_pause``: the team switched accounts, or the pause was
  lifted), so they go at the next cycle instead of after ``settings.PAUSED_RECHECK_SECONDS``.

What each vendor answer does (KLING_API.md §2):

=====================================  =====================================================
INVALID_REQUEST, POLICY, PERMISSION,   the task ends ``error`` with code, message and
NOT_FOUND (1103, 1200–1203, 1300–1301) request_id shown to its creator (``task_refuse``)
RATE_LIMIT, CONCURRENCY, SERVER,       stays ``queued``, claim released, ``retry_at`` =
NETWORK (1302, 1303, 5000–5002, none)  now + backoff (2 s doubling to 5 min, +0–25 % jitter)
ACCOUNT (1100–1102), AUTHENTICATION    the Kling account is paused (``account_pause``: code,
(1000–1004), IP allow-list (1304)      message, request_id, time) and the task stays queued
=====================================  =====================================================

1304 (IP allow-list policy, class PERMISSION) is about the caller's address, not the task:
every task of the account would be refused alike until an admin allows this server's
address in the Kling console, so it pauses the account (``_PAUSING_CODES``).

A create call that timed out is never re-sent blindly: the client itself looks the task up
by ``external_task_id`` first, and any later attempt of ``task_submit`` (``submit_attempts``
> 1) also looks it up before creating again.

Binding to a Kling account (issue 14, "task lifecycle"): a queued task has no
``kling_account`` until its create call is about to be sent; ``task_submit`` then takes the
team's account of that moment and binds the task to it. A queued task therefore follows the
team when an admin switches accounts. When the vendor answered the create call with a
refusal that proves nothing was created (credentials or account refused, 1000–1004 and
1100–1102; rate or concurrency limit, 1302/1303) the task is unbound again and its next
attempt goes through whatever account the team uses then. After an answer that leaves it
open (timeout, 5xx) it stays bound, so the lookup by ``external_task_id`` asks the right
account and nothing is created twice.

``task_cancel``: a person cancels a queued task that no create call can have reached —
nothing was sent, nothing is charged, and as a finished task its estimate no longer counts
against budgets.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from klingweb.accounts.models import KlingAccount, Team
from klingweb.accounts.services import SecretUnreadable, account_for_team, kling_client_for
from klingweb.kling import ErrorClass, KlingError
from klingweb.kling.backoff import backoff_delay
from tasks_app.budgets import budget_check, estimate_units
from tasks_app.callbacks import callback_url_for
from tasks_app.families import get_family
from tasks_app.inputs import (
    NO_PUBLIC_ADDRESS,
    InputNeedsPublicAddress,
    inputs_by_url_available,
    inputs_need_url,
)
from tasks_app.models import PAUSING_CLASSES, PAUSING_CODES, Status, Task
from tasks_app.services import (
    TaskError,
    task_apply_remote,
    task_create,
    task_error_clear,
    task_error_record,
    task_finished_announce,
    task_status_move,
)

log = logging.getLogger(__name__)

#: Seconds a claim lasts; longer than one create call with the client's own lookups. A
#: cluster killed mid-create leaves its task claimed this long (``settings.
#: SUBMIT_LEASE_SECONDS`` overrides it; the soak's small size uses a short one). A claim that
#: runs out early costs only a wasted call: the vendor refuses a reused external_task_id and
#: the client then returns the task that holds it.
SUBMIT_LEASE_SECONDS = 300
#: Backoff of retryable failures (``klingweb.kling.backoff.backoff_delay``): 2 s doubling per
#: attempt, at most 300 s, times a random factor in [1.0, 1.25] (+0–25 % jitter).
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 300.0
BACKOFF_JITTER = (1.0, 1.25)


#: Seconds after acceptance when the poller first looks at a submitted task.
FIRST_POLL_SECONDS = 5

#: Outcomes returned by ``task_submit``.
SUBMITTED = "submitted"  # accepted by Kling (or found there): the task is in flight
FOUND = "found"  # an earlier attempt had created it; the lookup found it
REFUSED = "refused"  # the vendor refused it: the task ended ``error``
RETRY = "retry"  # retryable failure: stays queued, retry_at set
PAUSED = "paused"  # the account is (now) paused: stays queued
NOT_CLAIMED = "not-claimed"  # not queued, or another worker holds the claim

_REFUSING = {"invalid_request", "policy", "permission", "not_found"}
_PAUSING = PAUSING_CLASSES
_PAUSING_CODES = PAUSING_CODES


def task_queue_form(*, team: Any, user: Any, family: Any, form: Any) -> Task:
    """Queue the task a valid create ``form`` of ``family`` (a ``TaskFamily``) describes:
    store its uploads, build the params, and ``task_queue`` them. The one submission path
    of the create page and of ``POST /api/v1/tasks``.

    Raises ``tasks_app.budgets.BudgetExceeded`` (its text names the budget) and
    ``tasks_app.inputs.InputNeedsPublicAddress`` (a video input, no public address) after
    deleting the uploads this call stored: nothing is left behind.
    """
    from django.core.files.storage import default_storage

    from tasks_app.budgets import BudgetExceeded

    saved = form.store_files()
    if family.build_params is not None:
        params = family.build_params(form.cleaned_data, team)
    else:
        params = form.build_params()
    prompt, summary = form.describe()
    try:
        return task_queue(
            team=team,
            user=user,
            family=family.key,
            params=params,
            prompt=prompt or str(params.get("prompt") or ""),
            summary=summary,
        )
    except (BudgetExceeded, InputNeedsPublicAddress):
        for name in saved:
            default_storage.delete(name)
        raise


def task_queue(
    *,
    team: Any,
    user: Any,
    family: str,
    params: dict,
    prompt: str = "",
    summary: str = "",
) -> Task:
    """Save a new task ``queued`` and enqueue its submission on commit.

    ``params``: the request body from ``TaskFamily.build_params`` (files as
    ``{"$file": name}``). Checks ``budget_check(team=, user=, units=estimate_units(...))``
    first, under a lock on the team row so concurrent submissions cannot both pass: raises
    ``tasks_app.budgets.BudgetExceeded`` and saves nothing when a budget would be passed.
    Raises ``tasks_app.inputs.InputNeedsPublicAddress`` and saves nothing when ``params``
    hold a video upload (Kling takes videos by URL only) and the portal has no public
    address; forms should say so earlier, this is the last check before queuing.
    The task is not bound to a Kling account yet (``task_submit`` binds it when it sends);
    ``model_name`` and ``mode`` come from ``params``. Runs in a transaction; the job
    ``tasks_app.jobs.submit_task`` is enqueued only once it commits.
    """
    from django_q.tasks import async_task

    if inputs_need_url(params) and not inputs_by_url_available():
        raise InputNeedsPublicAddress(NO_PUBLIC_ADDRESS)
    units = estimate_units(family=family, params=params)
    now = timezone.now()
    with transaction.atomic():
        # Lock the team row so two submissions of one team check the budget one after the
        # other (PostgreSQL); on SQLite every write transaction is already serialised.
        Team.objects.select_for_update().filter(pk=team.pk).exists()
        budget_check(team=team, user=user, units=units)
        task = task_create(
            source="form",
            at=now,
            team=team,
            creator=user,
            family=family,
            params=params,
            prompt=(prompt or "")[:5000],
            summary=(summary or "")[:200],
            model_name=str(params.get("model_name") or _family_model(family))[:50],
            mode=str(params.get("mode") or _settings_resolution(params))[:10],
            kling_account=None,
            estimated_units=units if isinstance(units, Decimal) else Decimal(str(units)),
            retry_at=now + timedelta(seconds=settings.SUBMIT_GRACE_SECONDS),
        )
        task_pk = task.pk
        transaction.on_commit(lambda: async_task("tasks_app.jobs.submit_task", task_pk))
    return task


def _family_model(family: str) -> str:
    """The model a 2026-design family is fixed to (``TaskFamily.extra["model_name"]``: the
    model is in the path there, not in the body), or ""."""
    try:
        return str(get_family(family).extra.get("model_name") or "")
    except KeyError:
        return ""


def _settings_resolution(params: dict) -> str:
    """``settings.resolution`` of a 2026-design body (its quality, where the legacy design
    has ``mode``; KLING_API_2026.md §1), or ""."""
    settings_ = params.get("settings")
    return str(settings_.get("resolution") or "") if isinstance(settings_, dict) else ""


def _claim(task_pk: int, now) -> bool:
    return (
        Task.objects.queued()
        .unclaimed(now)
        .filter(pk=task_pk)
        .update(
            claimed_until=now
            + timedelta(seconds=getattr(settings, "SUBMIT_LEASE_SECONDS", SUBMIT_LEASE_SECONDS)),
            submit_attempts=F("submit_attempts") + 1,
        )
        == 1
    )


def _backoff_seconds(attempts: int) -> float:
    """Seconds before the next create after failed attempt number ``attempts`` (1-based)."""
    return backoff_delay(
        attempts, base=BACKOFF_BASE_SECONDS, cap=BACKOFF_MAX_SECONDS, jitter=BACKOFF_JITTER
    )


def task_refuse(
    *, task_pk: int, code: int | None, message: str, request_id: str | None, source: str = "submit"
) -> bool:
    """End a still-queued task as ``error``: the vendor refused its create call.

    Stores the vendor's ``code``, ``message`` and ``request_id`` (shown on the task page)
    and a status-history entry, in one ``task_status_move`` from ``queued`` (a task that has
    left ``queued`` meanwhile is not touched); returns True when it moved the task. Nothing
    is charged for a refused create (KLING_API.md §2). A task so ended is announced to the
    finished-task hooks in the same transaction (``task_finished_announce``: the API's
    ``task.failed`` webhook), once, by the call that moved it.
    """
    now = timezone.now()
    with transaction.atomic():
        moved = task_status_move(
            task_pk=task_pk,
            to=Status.ERROR,
            source=source,
            note=f"{code}: {message}" if code is not None else message,
            expected_from=[Status.QUEUED],
            at=now,
            error=TaskError(code, message, request_id),
            finished_at=now,
            claimed_until=None,
            next_poll_at=None,
        )
        if moved:
            task_finished_announce(task=Task.objects.get(pk=task_pk))
    return moved


def _task_retry_later(
    task_pk: int, *, code: int | None, message: str, request_id: str | None, delay: float
) -> None:
    """Keep a queued task queued: release the claim, note the error, come back in ``delay`` s."""
    task_error_record(
        tasks=Task.objects.queued().filter(pk=task_pk),
        code=code,
        message=message,
        request_id=request_id,
        claimed_until=None,
        retry_at=timezone.now() + timedelta(seconds=delay),
    )


def account_pause(
    *, account_pk: int, code: int | None, message: str, request_id: str | None
) -> bool:
    """Pause submissions for a Kling account (codes 1100–1102 and 1304, or credentials
    refused).

    Records ``paused_code``, ``paused_message``, ``paused_request_id`` and ``paused_at``;
    team admins see them in a banner. An account already paused keeps its first reason.
    Returns True when this call paused it. An admin lifts the pause (accounts pages).
    """
    return (
        KlingAccount.objects.filter(pk=account_pk, paused_at__isnull=True).update(
            paused_code=code,
            paused_message=message or "",
            paused_request_id=request_id or "",
            paused_at=timezone.now(),
        )
        == 1
    )


def account_pause_for(*, account: KlingAccount, error: Exception) -> bool:
    """Pause ``account`` when ``error`` (any failed Kling call of it: a create, a list page,
    a single query) is an account-level refusal that no retry can get past: the
    ``_PAUSING_CODES`` (1304, IP allow-list: the vendor refuses every request from this
    server's address). Returns True when this call paused it; other errors → False, nothing
    changes. The poller calls it, so a team with tasks in flight and none queued also gets
    the admins' banner (``account_pause``)."""
    code = getattr(error, "code", None)
    if not isinstance(error, KlingError) or code not in _PAUSING_CODES:
        return False
    message = _pause_message(error, account)
    paused = account_pause(
        account_pk=account.pk, code=code, message=message, request_id=error.request_id
    )
    if paused:
        log.warning("Kling account %s paused: %s", account.pk, message)
    return paused


def _pause_message(error: KlingError, account: KlingAccount) -> str:
    """What the admins' banner says about a pausing ``error`` of ``account``: for refused
    credentials, what to check depends on the account's kind (an API key, or the access key
    and secret key that sign a JWT, KLING_API_2026.md §2); 1003 "not yet valid" concerns a
    JWT's ``nbf`` (this server's clock) only."""
    if str(error.error_class) == "authentication":
        if account.uses_api_key:
            hint = "Kling refused the API key; an admin must check or replace it"
        else:
            hint = (
                "Kling refused the credentials; an admin must check the access key and secret key"
            )
            if error.code == 1003:
                hint = "Kling says the token is not yet valid; check this server's clock"
        return f"{hint} ({error.message})."
    reasons = {
        1100: "Kling reports an account exception",
        1101: "the Kling account is in arrears",
        1102: "the Kling resource pack is used up or expired",
        1304: "Kling refuses this server's IP address (IP allow-list); an admin must allow "
        "it in the Kling console, then lift the pause",
    }
    reason = reasons.get(error.code or 0, "Kling refused the account")
    return f"Submissions are paused: {reason} ({error.message})."


#: Vendor refusals of a create call after which nothing exists at the vendor: the task is
#: unbound from the account and follows the team's account on its next attempt.
_NOTHING_CREATED = _PAUSING | {"rate_limit", "concurrency"}


def _unbind(task_pk: int, account: KlingAccount) -> None:
    """Forget a queued task's account (see the module docstring, "Binding")."""
    Task.objects.queued().filter(pk=task_pk, kling_account=account).update(kling_account=None)


def _handle_error(
    task: Task, account: KlingAccount, error: KlingError, *, create_refused: bool = False
) -> str:
    """Apply the policy of the module docstring to a failed create or lookup.

    ``create_refused``: the error answered the create call itself (not a lookup), so a
    refusal in ``_NOTHING_CREATED`` unbinds the task from ``account``."""
    kind = str(error.error_class)
    if error.code in _PAUSING_CODES:
        kind = "account"
    if create_refused and kind in _NOTHING_CREATED:
        _unbind(task.pk, account)
    if kind in _REFUSING:
        task_refuse(
            task_pk=task.pk, code=error.code, message=error.message, request_id=error.request_id
        )
        return REFUSED
    if kind in _PAUSING:
        message = _pause_message(error, account)
        if account_pause(
            account_pk=account.pk, code=error.code, message=message, request_id=error.request_id
        ):
            log.warning("Kling account %s paused: %s", account.pk, message)
        _task_retry_later(
            task.pk,
            code=error.code,
            message=message,
            request_id=error.request_id,
            delay=settings.PAUSED_RECHECK_SECONDS,
        )
        return PAUSED
    delay = _backoff_seconds(task.submit_attempts)
    _task_retry_later(
        task.pk, code=error.code, message=error.message, request_id=error.request_id, delay=delay
    )
    log.info("task %s: %s; retrying in %.1f s", task.code, error, delay)
    return RETRY


def _after_accept(task_pk: int) -> None:
    """Release the claim, forget the errors of earlier attempts, and give the poller its
    first look time."""
    now = timezone.now()
    task_error_clear(
        tasks=Task.objects.filter(pk=task_pk).exclude(status=Status.ERROR), claimed_until=None
    )
    Task.objects.in_flight().filter(pk=task_pk).update(
        next_poll_at=now + timedelta(seconds=FIRST_POLL_SECONDS), poll_attempts=0
    )


def task_submit(*, task_pk: int) -> str:
    """Send the create call of queued task ``task_pk`` (the job ``submit_task``).

    Steps: claim the row (``status=queued`` and no live claim → ``claimed_until`` = now +
    300 s, ``submit_attempts`` + 1), else return ``NOT_CLAIMED``; pick the account — the
    bound one if an earlier create may have reached it, else the team's account now
    (``account_for_team``) — a paused account → ``PAUSED`` (stays queued, unbound); bind the
    task to the account; if it was bound already, first ``get_task(external_task_id=code)``
    and apply what is found (``FOUND``); else ``create_task(client_family,
    request_body(task, callback_url=callback_url_for(task)))`` and apply the answer with
    ``task_apply_remote(source="submit")`` (``SUBMITTED``). Failures follow the module
    docstring's table (``REFUSED``, ``RETRY``, ``PAUSED``). Returns the outcome.
    """
    now = timezone.now()
    if not _claim(task_pk, now):
        return NOT_CLAIMED
    task = Task.objects.select_related("team", "kling_account").get(pk=task_pk)
    # Bound: an earlier create call may have reached this account (answer unknown): it is
    # asked again. Unbound: the team's account of this moment (module docstring, "Binding").
    bound = task.kling_account is not None and task.submit_attempts > 1
    account = task.kling_account if bound else account_for_team(team=task.team)
    if account.is_paused:
        _task_retry_later(
            task_pk,
            code=account.paused_code,
            message=account.paused_message or "Submissions for this Kling account are paused.",
            request_id=account.paused_request_id,
            delay=settings.PAUSED_RECHECK_SECONDS,
        )
        return PAUSED
    family = get_family(task.family)
    try:
        client = kling_client_for(account)
    except (ImproperlyConfigured, SecretUnreadable) as exc:
        # A configuration problem of ours, not a vendor answer: wait for it to be fixed.
        _task_retry_later(
            task_pk,
            code=None,
            message=str(exc),
            request_id=None,
            delay=settings.PAUSED_RECHECK_SECONDS,
        )
        log.error("task %s: cannot build a Kling client: %s", task.code, exc)
        return RETRY
    if task.kling_account_id != account.pk:
        Task.objects.queued().filter(pk=task_pk).update(kling_account=account)
        task.kling_account = account

    try:
        if bound:
            try:
                found = client.get_task(
                    family.client_family, external_task_id=task.external_task_id
                )
            except KlingError as exc:
                if exc.error_class is not ErrorClass.NOT_FOUND:
                    raise
            else:
                task_apply_remote(task_pk=task_pk, remote=found, source="submit")
                _after_accept(task_pk)
                return FOUND
        try:
            body = family.request_body(task, callback_url=callback_url_for(task))
        except FileNotFoundError as exc:
            task_refuse(
                task_pk=task_pk,
                code=None,
                message=f"An uploaded input is missing from storage ({exc.filename or exc}).",
                request_id=None,
            )
            return REFUSED
        except InputNeedsPublicAddress as exc:
            # A video goes by URL only, and the portal has lost its public address since the
            # task was queued: nothing can be sent (the element form refuses this up front).
            task_refuse(task_pk=task_pk, code=None, message=str(exc), request_id=None)
            return REFUSED
    except KlingError as exc:
        return _handle_error(task, account, exc)
    try:
        remote = client.create_task(family.client_family, body)
    except KlingError as exc:
        return _handle_error(task, account, exc, create_refused=True)
    task_apply_remote(task_pk=task_pk, remote=remote, source="submit")
    _after_accept(task_pk)
    return SUBMITTED


def tasks_submit_due(
    *, limit: int = 50, time_budget_s: float = 20.0, stop: threading.Event | None = None
) -> int:
    """Submit queued tasks whose ``retry_at`` ≤ now (every poll cycle calls this), and
    tasks waiting on a paused account whose account for this attempt (the bound one, else
    the team's current one) is not paused (``Task.objects.waiting_on_pause``): a switch of
    the team's account, or a lifted pause, sends them at the next call, not after
    ``settings.PAUSED_RECHECK_SECONDS``. One query, on index ``task_submit_due``.

    Oldest first, at most ``limit`` per call, stopping after ``time_budget_s`` seconds.
    Skips tasks of paused accounts and tasks under a live claim; after a 1302/1303 for one
    Kling account, that account's other tasks wait for the next call (one submission queue
    per account, KLING_API.md §3), and so they do after ``SERVER_FAILURES_PER_CALL`` server
    or network failures (a vendor that fails is not hammered; one random 5000 does not stop
    the queue). Returns how many tasks left the queue (accepted, found or refused). Once
    ``stop`` is set (the poller is stopping) no further task is sent; they stay due.
    """
    now = timezone.now()
    default = KlingAccount.objects.operator_default()
    # A task's account: the bound one, else its team's, else the operator default (what
    # task_submit will pick), so one account's trouble holds only that account's queue.
    effective = Coalesce("kling_account_id", "team__kling_account_id")
    due_rows = (
        (Task.objects.due_for_submit(now) | Task.objects.waiting_on_pause(now))
        .exclude(kling_account__paused_at__isnull=False)
        .exclude(kling_account__isnull=True, team__kling_account__paused_at__isnull=False)
        .annotate(effective_account=effective)
        .order_by("created_at", "id")
        .values_list("pk", "effective_account")
    )
    if default.is_paused:
        due_rows = due_rows.exclude(kling_account__isnull=True, team__kling_account__isnull=True)
    due = [(pk, account_id or default.pk) for pk, account_id in due_rows[:limit]]
    started = time.monotonic()
    busy_accounts: set[int] = set()
    answering: set[int] = set()
    server_failures: dict[int, int] = {}
    left_queue = 0
    for task_pk, account_id in due:
        if account_id in busy_accounts:
            continue
        if time.monotonic() - started > time_budget_s or (stop is not None and stop.is_set()):
            break
        outcome = task_submit(task_pk=task_pk)
        if outcome in (SUBMITTED, FOUND, REFUSED):
            left_queue += 1
            if outcome != REFUSED:
                answering.add(account_id)
        elif outcome == RETRY and not _limited(task_pk):
            server_failures[account_id] = server_failures.get(account_id, 0) + 1
            if server_failures[account_id] >= SERVER_FAILURES_PER_CALL:
                busy_accounts.add(account_id)
        elif outcome in (RETRY, PAUSED):
            busy_accounts.add(account_id)
    for account_id in answering - busy_accounts:
        _wake_after_outage(account_id, now=timezone.now())
    return left_queue


#: Rate and concurrency limits (KLING_API.md §2): the account's queue waits after one.
_LIMIT_CODES = (1302, 1303)
#: Server or network failures of one account after which ``tasks_submit_due`` leaves the
#: account's other tasks for its next call.
SERVER_FAILURES_PER_CALL = 3


def _limited(task_pk: int) -> bool:
    """True when the task's last create failed on a rate or concurrency limit."""
    code = Task.objects.filter(pk=task_pk).values_list("error_code", flat=True).first()
    return code in _LIMIT_CODES


def _wake_after_outage(account_id: int, *, now) -> int:
    """Kling accepted a create for this account again: its queued tasks that wait out the
    backoff of a server or network error (up to 5 min each) become due now, so a queue built
    up during an outage drains at the next calls instead of over the following minutes.
    Tasks waiting after 1302/1303 (rate and concurrency limits) keep their backoff. Returns
    how many were woken."""
    return (
        Task.objects.queued()
        .filter(kling_account_id=account_id, retry_at__gt=now)
        .waiting_after_server_error()
        .unclaimed(now)
        .update(retry_at=now)
    )


class TaskNotCancellable(Exception):
    """The task cannot be cancelled any more; ``str(exc)`` says why, fit to show."""


def task_cancel(*, task_pk: int, by: str, at: datetime | None = None) -> Task:
    """Cancel queued task ``task_pk`` before anything reached Kling; returns the task.

    Allowed only while the task is ``queued``, no worker holds its claim, and no create call
    can have reached a Kling account (it is unbound, or bound but never attempted — module
    docstring, "Binding"). The task is claimed (``claimed_until``) and moved to
    ``cancelled`` in one transaction through ``task_status_move`` (history note "Cancelled
    by <by>"), so a submission job that runs at the same moment either sends it first (and
    the cancel is refused) or finds it no longer queued. Nothing is charged; as a finished
    task its estimate stops counting against budgets. ``by``: who cancelled (username).
    Raises ``TaskNotCancellable`` (and changes nothing) otherwise. Who may cancel is the
    view's decision (the creator, or a team admin).
    """
    now = at or timezone.now()
    lease = now + timedelta(seconds=SUBMIT_LEASE_SECONDS)
    with transaction.atomic():
        never_sent = Q(kling_account__isnull=True) | Q(submit_attempts=0)
        claimed = (
            Task.objects.queued()
            .unclaimed(now)
            .filter(never_sent, pk=task_pk)
            .update(claimed_until=lease)
        )
        if claimed == 1:
            moved = task_status_move(
                task_pk=task_pk,
                to=Status.CANCELLED,
                source="cancel",
                note=f"Cancelled by {by}; nothing was sent to Kling.",
                expected_from=[Status.QUEUED],
                at=now,
                finished_at=now,
                claimed_until=None,
                next_poll_at=None,
            )
            if moved:
                return Task.objects.get(pk=task_pk)
    task = Task.objects.get(pk=task_pk)
    if task.status == Status.CANCELLED:
        raise TaskNotCancellable("This task was cancelled already.")
    if task.status != Status.QUEUED:
        raise TaskNotCancellable(
            f"This task was already sent to Kling (status: {task.get_status_display()}); "
            "it can no longer be cancelled."
        )
    if task.claimed_until is not None and task.claimed_until >= now:
        raise TaskNotCancellable(
            "This task is being sent to Kling right now; it can no longer be cancelled."
        )
    raise TaskNotCancellable(
        "A create call for this task may have reached Kling (its answer was lost); it cannot "
        "be cancelled until Kling's answer is known."
    )
