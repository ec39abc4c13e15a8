"""Tasks, their status history and kept media, the deduction ledger, and team budgets.

A ``Task`` is one generation request of a team. Its ``code`` (UUID) is the public identifier
and is also sent to Kling as ``external_task_id`` (KLING_API.md §4), which makes submission
idempotent. Only ``tasks_app.services.task_apply_remote`` writes vendor status, result and
cost; only it records ``Deduction`` rows for finished tasks (through ``tasks_app.ledger``).
Every other change of a task's status, its ``TaskEvent`` and its ``error_*`` fields also
goes through ``tasks_app.services`` (``task_status_move``, ``task_error_record``).

The status vocabulary is defined once, here: ``IN_FLIGHT`` (at the vendor), ``UNFINISHED``
(queued here or at the vendor), ``FINISHED``, ``VENDOR_STATUSES``; ``Task.objects`` offers
the same sets as querysets (``TaskQuerySet``).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone

from klingweb.kling.errors import CODE_CLASSES, SERVER_CODES, ErrorClass

#: Error classes after which the Kling account is paused and its queued tasks wait
#: (``tasks_app.submission``; KLING_API.md §2): credentials refused (1000–1004), account
#: exception, arrears or resource pack used up (1100–1102).
PAUSING_CLASSES = frozenset({ErrorClass.AUTHENTICATION, ErrorClass.ACCOUNT})
#: Codes that pause the account whatever their class: 1304, IP allow-list (KLING_API.md §2:
#: "permanent until an admin acts"; it concerns this server, not one task).
PAUSING_CODES = frozenset({1304})
#: Every vendor code after which a queued task waits on a paused Kling account.
PAUSE_CODES = (
    frozenset(code for code, kind in CODE_CLASSES.items() if kind in PAUSING_CLASSES)
    | PAUSING_CODES
)

#: Digits and decimal places of every units/money column: the vendor's figures are kept
#: exactly (a "0.3333" deduction stays 0.3333, on SQLite and PostgreSQL alike).
UNITS_DIGITS = 20
UNITS_PLACES = 8


class Family(models.TextChoices):
    """Kinds of task; each has an entry in the family registry (``tasks_app.families``)."""

    AVATAR = "avatar", "Avatar"
    VIDEO_EXTEND = "video_extend", "Video extension"
    MULTI_SHOT = "multi_shot", "AI multi-shot"
    TEXT2VIDEO = "text2video", "Text to video"
    IMAGE2VIDEO = "image2video", "Image to video"
    ELEMENT = "element", "Custom element"
    # The 3.0 family on the 2026 API design (KLING_API_2026.md §4).
    T2V_3_0_TURBO = "t2v_3_0_turbo", "Kling 3.0 Turbo text to video"
    I2V_3_0_TURBO = "i2v_3_0_turbo", "Kling 3.0 Turbo image to video"
    T2V_3_0 = "t2v_3_0", "Kling 3.0 text to video"
    I2V_3_0 = "i2v_3_0", "Kling 3.0 image to video"
    OMNI_VIDEO_3_0 = "omni_video_3_0", "Kling 3.0 Omni video"
    MOTION_3_0 = "motion_3_0", "Motion control (Kling 3.0)"
    MOTION_2_6 = "motion_2_6", "Motion control (Kling 2.6)"


class Status(models.TextChoices):
    """Task status. The vendor's ``task_status`` values plus ``queued``, ``error``,
    ``cancelled`` and ``lost``.

    ``queued``: saved, not yet accepted by Kling. ``error``: Kling refused the create call
    (e.g. 1201, 1301) — nothing runs and nothing is charged. ``cancelled``: a person
    cancelled it while queued, before any create call could have reached Kling — nothing
    was sent, nothing is charged, its estimate no longer counts against budgets.
    ``lost``: the vendor answered "not found" (1203, or absent from the 2026 design's
    ``GET /tasks``) for a task it had accepted, on ``POLL_LOST_AFTER_CHECKS`` consecutive
    checks over at least ``POLL_LOST_AFTER_SECONDS``, or an admin ended it by hand — nothing
    is charged and its reservation is released, unless a later vendor answer proves a
    charge (``tasks_app.services.task_apply_remote`` then moves it on and charges it once).
    """

    QUEUED = "queued", "Queued"
    SUBMITTED = "submitted", "Submitted"
    PROCESSING = "processing", "Processing"
    SUCCEED = "succeed", "Succeeded"
    FAILED = "failed", "Failed"
    ERROR = "error", "Refused"
    CANCELLED = "cancelled", "Cancelled"
    LOST = "lost", "Lost at vendor"


#: Order in which statuses may move; a task never moves to a lower rank.
STATUS_RANK: dict[str, int] = {
    Status.QUEUED: 0,
    Status.SUBMITTED: 1,
    Status.PROCESSING: 2,
    Status.SUCCEED: 3,
    Status.FAILED: 3,
    Status.ERROR: 3,
    Status.CANCELLED: 3,
    Status.LOST: 3,
}
#: Finished: succeed, failed, error, cancelled or lost. The row never changes status again,
#: with one exception: a later vendor answer for a ``lost`` task (``LATE_ANSWER_WINDOW``).
FINISHED = frozenset({Status.SUCCEED, Status.FAILED, Status.ERROR, Status.CANCELLED, Status.LOST})
#: In flight = at the vendor: Kling accepted the create call and has not finished the task
#: (what the poller watches). Queued tasks are NOT in flight.
IN_FLIGHT = frozenset({Status.SUBMITTED, Status.PROCESSING})
#: Unfinished: queued here or in flight at the vendor (what a page keeps refreshing and a
#: budget counts as pending).
UNFINISHED = frozenset({Status.QUEUED}) | IN_FLIGHT
#: The vendor's ``task_status`` values (KLING_API.md §4): what a callback body, a list-page
#: item or a single query may carry. ``queued`` and ``error`` are the portal's own.
VENDOR_STATUSES = frozenset({Status.SUBMITTED, Status.PROCESSING, Status.SUCCEED, Status.FAILED})
#: How long after finishing on an unconfirmed callback (``Task.needs_confirmation``) the
#: poller keeps asking the vendor for the task's full answer. The vendor keeps results for
#: 30 days; a day of polls (backing off to 5 min on errors) is ample for an outage to end.
CONFIRM_WINDOW = timedelta(days=1)
#: How long after a task was marked ``lost`` the poller still asks the vendor about it, and
#: how often: a later answer (succeed/failed) is applied and charged once.
LATE_ANSWER_WINDOW = timedelta(days=1)
LATE_ANSWER_INTERVAL = timedelta(minutes=10)


def pollable_q(now) -> models.Q:
    """Rows the poller reads: in flight (``IN_FLIGHT``), or finished on a callback that
    could not be confirmed by a query (``needs_confirmation``, finished less than
    ``CONFIRM_WINDOW`` before ``now``, an aware datetime). KLING_API_2026.md §6: a callback
    carries a subset of the task; the query is the truth."""
    return models.Q(status__in=sorted(IN_FLIGHT)) | models.Q(
        needs_confirmation=True, finished_at__gte=now - CONFIRM_WINDOW
    )


def _claim_free(now) -> models.Q:
    """Rows under no live claim: ``claimed_until`` unset or passed."""
    return models.Q(claimed_until__isnull=True) | models.Q(claimed_until__lt=now)


class TaskQuerySet(models.QuerySet):
    """``Task.objects``: the status sets of this module as named querysets.

    Reading only: status, events and ``error_*`` are written by ``tasks_app.services``.
    """

    def queued(self) -> TaskQuerySet:
        """Saved, not yet accepted by Kling (``queued``)."""
        return self.filter(status=Status.QUEUED)

    def in_flight(self) -> TaskQuerySet:
        """At the vendor: ``submitted`` or ``processing`` (``IN_FLIGHT``)."""
        return self.filter(status__in=sorted(IN_FLIGHT))

    def unfinished(self) -> TaskQuerySet:
        """Queued, submitted or processing (``UNFINISHED``)."""
        return self.filter(status__in=sorted(UNFINISHED))

    def finished(self) -> TaskQuerySet:
        """Succeed, failed, error, cancelled or lost (``FINISHED``)."""
        return self.filter(status__in=sorted(FINISHED))

    def unclaimed(self, now) -> TaskQuerySet:
        """Rows no worker holds: ``claimed_until`` unset or before ``now`` (aware datetime)."""
        return self.filter(_claim_free(now))

    def due_for_submit(self, now) -> TaskQuerySet:
        """Queued tasks whose ``retry_at`` is at or before ``now`` and that no worker has
        claimed: what ``tasks_app.submission.tasks_submit_due`` sends (index
        ``task_submit_due``)."""
        return self.queued().filter(retry_at__lte=now).unclaimed(now)

    def waiting_on_pause(self, now) -> TaskQuerySet:
        """Queued tasks that no worker has claimed whose last create (or lookup) found their
        Kling account paused (``error_code`` in ``PAUSE_CODES``) and whose ``retry_at`` is
        still ahead of ``now`` (aware datetime). Such a task may go as soon as the account
        it would be sent through is no longer paused (the team switched accounts, or an
        admin lifted the pause): ``tasks_app.submission.tasks_submit_due`` takes these with
        ``due_for_submit`` and leaves out those whose account is still paused. Index
        ``task_submit_due`` (status, retry_at)."""
        return (
            self.queued()
            .filter(retry_at__gt=now, error_code__in=sorted(PAUSE_CODES))
            .unclaimed(now)
        )

    def pollable(self, now) -> TaskQuerySet:
        """In flight, or awaiting the confirmation of a callback (``pollable_q``)."""
        return self.filter(pollable_q(now))

    def due_for_poll(self, now) -> TaskQuerySet:
        """Pollable tasks (``pollable``: in flight, or finished on an unconfirmed callback)
        whose ``next_poll_at`` is unset or at or before ``now`` and that no worker has
        claimed: what a poll cycle reads (index ``task_due``)."""
        return (
            self.pollable(now)
            .filter(models.Q(next_poll_at__lte=now) | models.Q(next_poll_at__isnull=True))
            .unclaimed(now)
        )

    def lost_recently(self, now) -> TaskQuerySet:
        """Tasks marked ``lost`` less than ``LATE_ANSWER_WINDOW`` before ``now`` (aware
        datetime) that were sent (a ``task_id`` or a submission time): the poller's slower
        re-ask set (``tasks_app.polling.lost_recheck``), kept out of the normal poll set."""
        return self.filter(status=Status.LOST, finished_at__gte=now - LATE_ANSWER_WINDOW).exclude(
            task_id="", submitted_at__isnull=True
        )

    def waiting_after_server_error(self) -> TaskQuerySet:
        """Tasks whose last vendor call failed on the vendor's side: a server error
        (``SERVER_CODES``, 5000–5002) or a transport failure (no code, a message). Tasks
        waiting after a rate or concurrency limit (1302/1303) or any other answer are not
        among them. Used to wake such tasks once the vendor answers again."""
        return self.filter(
            models.Q(error_code__in=sorted(SERVER_CODES))
            | (models.Q(error_code__isnull=True) & ~models.Q(error_message=""))
        )


class Task(models.Model):
    """One generation task of a team.

    ``params``: the request body as the form built it, minus bulky inputs: an uploaded file
    appears as ``{"$file": "<storage name>"}`` and is read and Base64-encoded only when the
    create call is sent. ``result``: the vendor's ``task_result`` as last seen.
    ``final_unit_deduction``: units of Kling credit (Decimal) the vendor charged.
    ``kling_account``: the account its create call was sent to; null while queued and not
    yet sent (a queued task follows the team's account, ``tasks_app.submission``).
    Scheduling: ``retry_at`` (queued only: when the create call is sent (again) — after the
    grace period of a new task, the backoff of a failed create, or a paused account's
    recheck, which a switch of the team's account or the lifted pause cuts short
    (``TaskQuerySet.waiting_on_pause``); None once the task leaves ``queued``), ``next_poll_at`` (in flight only: when
    the poller should look again), ``poll_attempts``, ``submit_attempts``,
    ``claimed_until`` (a lease so two clusters never work one row).
    ``needs_confirmation``: the task finished on a callback whose full answer the vendor's
    query could not give yet (callbacks carry a subset: KLING_API_2026.md §6); the poller
    then reads it like a task in flight until a query confirms it (``pollable_q``).
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="tasks")
    creator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="kling_tasks",
    )
    family = models.CharField(max_length=20, choices=Family.choices)
    model_name = models.CharField(max_length=50, blank=True)
    mode = models.CharField(max_length=10, blank=True)
    prompt = models.TextField(blank=True, help_text="For display and search.")
    summary = models.CharField(max_length=200, blank=True, help_text="File names etc.")
    params = models.JSONField(default=dict, blank=True)
    kling_account = models.ForeignKey(
        "accounts.KlingAccount", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    estimated_units = models.DecimalField(
        max_digits=UNITS_DIGITS, decimal_places=UNITS_PLACES, default=Decimal("0")
    )

    task_id = models.CharField(max_length=100, blank=True, db_index=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    task_status_msg = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    final_unit_deduction = models.DecimalField(
        max_digits=UNITS_DIGITS, decimal_places=UNITS_PLACES, null=True, blank=True
    )
    error_code = models.IntegerField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    error_request_id = models.CharField(max_length=100, blank=True)
    vendor_created_at = models.DateTimeField(null=True, blank=True)
    vendor_updated_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    retry_at = models.DateTimeField(
        null=True, blank=True, help_text="Queued only: when the create call is sent (again)."
    )
    next_poll_at = models.DateTimeField(null=True, blank=True)
    poll_attempts = models.PositiveIntegerField(default=0)
    submit_attempts = models.PositiveIntegerField(default=0)
    claimed_until = models.DateTimeField(null=True, blank=True)
    is_stale = models.BooleanField(default=False)
    poll_errors = models.PositiveIntegerField(
        default=0, help_text="Consecutive failed polls (transient vendor errors); sets back-off."
    )
    imported = models.BooleanField(default=False, help_text="Found on Kling by kling_sync.")
    not_found_checks = models.PositiveIntegerField(
        default=0,
        help_text="Consecutive checks the vendor answered 'not found' (1203) for this sent task.",
    )
    not_found_since = models.DateTimeField(
        null=True, blank=True, help_text="When the first of those 'not found' answers came."
    )
    needs_confirmation = models.BooleanField(
        default=False,
        help_text="Finished on a callback the vendor's query has not confirmed yet: the "
        "poller asks for the full answer.",
    )

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Newest first, ties by id (the list's order, ``ordering``): within a team and
            # across teams. The lists' LIMIT and capped count stop early on them.
            models.Index(fields=["team", "-created_at", "-id"], name="task_team_newest"),
            models.Index(fields=["-created_at", "-id"], name="task_newest"),
            models.Index(fields=["team", "status", "-created_at"], name="task_team_status"),
            models.Index(fields=["team", "family", "-created_at"], name="task_team_family"),
            models.Index(fields=["creator", "-created_at"], name="task_creator_created"),
            models.Index(fields=["status", "next_poll_at"], name="task_due"),
            models.Index(fields=["status", "retry_at"], name="task_submit_due"),
            models.Index(
                fields=["next_poll_at"],
                condition=models.Q(needs_confirmation=True),
                name="task_confirm_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_family_display()} {self.code}"

    @property
    def external_task_id(self) -> str:
        """The id sent to Kling as ``external_task_id``: this task's ``code`` as text."""
        return str(self.code)

    @property
    def is_finished(self) -> bool:
        """True once succeed, failed, error, cancelled or lost (``FINISHED``)."""
        return self.status in FINISHED

    @property
    def is_unfinished(self) -> bool:
        """True while queued, submitted or processing (``UNFINISHED``): its page and list row
        keep refreshing it."""
        return self.status in UNFINISHED

    @property
    def charge(self) -> dict | None:
        """What the ledger holds for this task (its ``Deduction`` rows, corrections
        included), or None when nothing was recorded: ``{"units": Decimal, "money": Decimal
        (in settings.KLING_CURRENCY: cash figures as sent, else units × KLING_UNIT_PRICE),
        "cash": bool (the vendor charged money), "currency": str, "list_price": Decimal |
        None}``. One query; cached on the instance."""
        if not hasattr(self, "_charge_cache"):
            rows = list(self.deductions.all()) if self.pk else []
            if not rows:
                self._charge_cache = None
            else:
                prices = [r.list_price for r in rows if r.list_price is not None]
                self._charge_cache = {
                    "units": sum((r.units for r in rows), Decimal("0")),
                    "money": sum((r.money for r in rows), Decimal("0")),
                    "cash": any(r.is_cash for r in rows),
                    "currency": next((r.currency for r in rows if r.currency), "")
                    or settings.KLING_CURRENCY,
                    "list_price": sum(prices, Decimal("0")) if prices else None,
                }
        return self._charge_cache

    @property
    def is_at_vendor(self) -> bool:
        """True while submitted or processing (``IN_FLIGHT``): Kling has it and the poller
        watches it. A queued task is unfinished but not at the vendor."""
        return self.status in IN_FLIGHT


class TaskEvent(models.Model):
    """One entry of a task's status history (shown on the task page)."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="events")
    status = models.CharField(max_length=12, choices=Status.choices)
    at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=20, blank=True, help_text="form, submit, callback, poll…")
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.task_id}: {self.status} at {self.at:%Y-%m-%d %H:%M:%S}"


class MediaKind(models.TextChoices):
    """What a kept result file is."""

    IMAGE = "image", "Image"
    VIDEO = "video", "Video"


class TaskMedia(models.Model):
    """A result file of a succeeded task, copied from the vendor into the portal's storage.

    ``source_url`` is the vendor's URL (deleted by the vendor 30 days after generation);
    ``file`` is empty until the copy is kept. ``size`` in bytes; ``duration`` in seconds.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="media")
    kind = models.CharField(max_length=10, choices=MediaKind.choices)
    index = models.PositiveIntegerField(default=0)
    variant = models.CharField(max_length=20, blank=True, help_text="url, url_1, watermark…")
    vendor_id = models.CharField(max_length=100, blank=True, help_text="Kling video id")
    source_url = models.URLField(max_length=2000)
    # The storage name is chosen by ``tasks_app.media`` (results/<team>/<task>/…), never by
    # a form upload, so there is no ``upload_to``.
    file = models.FileField(blank=True, max_length=300)
    content_type = models.CharField(max_length=100, blank=True)
    size = models.BigIntegerField(null=True, blank=True)
    duration = models.DecimalField(max_digits=8, decimal_places=3, null=True, blank=True)
    kept_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="Download lease / retry time; null: due now."
    )
    gave_up = models.BooleanField(default=False, help_text="Permanent failure; not retried.")

    class Meta:
        ordering = ["task", "kind", "index", "variant"]
        constraints = [
            models.UniqueConstraint(
                fields=["task", "kind", "index", "variant"], name="one_media_per_slot"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.index} of {self.task_id}"


class Deduction(models.Model):
    """An append-only ledger row: units of Kling credit a team was charged for a task.

    Exactly one primary row per task (``corrects`` null), recorded by
    ``task_apply_remote`` when the task finishes with a ``final_unit_deduction`` — failed
    tasks too when the vendor charged them. A correction is a new row whose ``corrects``
    points at the row it corrects and whose ``units`` is the difference (may be negative).

    Figures are the vendor's, kept exactly (``UNITS_PLACES`` decimal places, no rounding of
    anything the vendor sends with fewer): ``units`` = ``final_unit_deduction`` (or the sum
    of ``billing[charge_type=unit].amount``); for a task charged in cash (KLING_API_2026.md
    §7) also ``amount`` (the money taken: legacy ``final_balance_deduction.quota``, 2026
    ``billing[charge_type=cash].amount``), ``currency`` ("" when the legacy shape named none)
    and ``list_price``.
    """

    team = models.ForeignKey("accounts.Team", on_delete=models.PROTECT, related_name="deductions")
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.PROTECT, related_name="deductions"
    )
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="deductions",
    )
    family = models.CharField(max_length=20, choices=Family.choices)
    model_name = models.CharField(max_length=50, blank=True)
    mode = models.CharField(max_length=10, blank=True)
    task_status = models.CharField(max_length=12, choices=Status.choices, blank=True)
    units = models.DecimalField(max_digits=UNITS_DIGITS, decimal_places=UNITS_PLACES)
    amount = models.DecimalField(
        max_digits=UNITS_DIGITS,
        decimal_places=UNITS_PLACES,
        null=True,
        blank=True,
        help_text="Cash charges only: the money taken from the balance (discounted price).",
    )
    currency = models.CharField(
        max_length=3, blank=True, help_text="Cash charges only: ISO code (CNY, USD)."
    )
    list_price = models.DecimalField(
        max_digits=UNITS_DIGITS,
        decimal_places=UNITS_PLACES,
        null=True,
        blank=True,
        help_text="Cash charges only: the undiscounted price, in ``currency``.",
    )
    recorded_at = models.DateTimeField(default=timezone.now)
    corrects = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="corrections"
    )
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-recorded_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["task"],
                condition=models.Q(corrects__isnull=True),
                name="one_primary_deduction_per_task",
            )
        ]
        indexes = [
            models.Index(fields=["team", "recorded_at"], name="deduction_team_time"),
            models.Index(fields=["member", "recorded_at"], name="deduction_member_time"),
            models.Index(fields=["recorded_at"], name="deduction_time"),
        ]

    def __str__(self) -> str:
        return f"{self.units} units, {self.team} ({self.recorded_at:%Y-%m-%d})"

    @property
    def is_cash(self) -> bool:
        """True when the vendor charged this row in money (``amount`` is set)."""
        return self.amount is not None

    @property
    def money(self) -> Decimal:
        """The row's money in ``settings.KLING_CURRENCY``: the vendor's cash ``amount`` when
        charged in cash, else ``units`` × ``settings.KLING_UNIT_PRICE``."""
        if self.amount is not None:
            return self.amount
        return self.units * Decimal(str(settings.KLING_UNIT_PRICE))


class BudgetPeriod(models.TextChoices):
    """How often a budget resets (at midnight in the team's time zone; weeks start Monday)."""

    DAILY = "daily", "Daily"
    WEEKLY = "weekly", "Weekly"
    MONTHLY = "monthly", "Monthly"


class BudgetMeasure(models.TextChoices):
    """What a budget counts: Kling units, or money in ``settings.KLING_CURRENCY``."""

    UNITS = "units", "Units"
    MONEY = "money", "Money"


class Budget(models.Model):
    """A cap on what a team (or one member of it, when ``member`` is set) may spend per
    period. Checked with estimated costs before a task is queued.

    ``measure``: ``units`` (``units`` is a number of Kling units) or ``money`` (``units`` is
    an amount in ``settings.KLING_CURRENCY``; ledger rows count as their money: the vendor's
    cash figure, else units × ``KLING_UNIT_PRICE``).
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="budgets")
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Empty: the whole team's budget.",
    )
    period = models.CharField(max_length=10, choices=BudgetPeriod.choices)
    measure = models.CharField(
        max_length=5, choices=BudgetMeasure.choices, default=BudgetMeasure.UNITS
    )
    units = models.DecimalField(
        max_digits=12, decimal_places=3, help_text="The limit, in units or money (``measure``)."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["team", "member", "period"], name="one_budget_per_scope_period"
            ),
            models.UniqueConstraint(
                fields=["team", "period"],
                condition=models.Q(member__isnull=True),
                name="one_team_budget_per_period",
            ),
        ]

    def __str__(self) -> str:
        who = self.member or "team"
        return f"{self.team}: {self.units} units {self.period} ({who})"


class BudgetAlert(models.Model):
    """A budget threshold (80, 90, 100 %) reached in one period; unique so it fires once."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    period_start = models.DateTimeField()
    threshold = models.PositiveSmallIntegerField()
    spent = models.DecimalField(max_digits=UNITS_DIGITS, decimal_places=UNITS_PLACES)
    created_at = models.DateTimeField(default=timezone.now)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period_start", "threshold"], name="one_alert_per_threshold"
            )
        ]

    def __str__(self) -> str:
        return f"{self.budget}: {self.threshold}% from {self.period_start:%Y-%m-%d}"


class IssueKind(models.TextChoices):
    """What reconciliation found wrong with a finished task."""

    MISMATCH = "mismatch", "Units differ"
    NOT_FOUND = "not_found", "Unknown at the vendor"
    STATUS = "status", "Status differs"


class ReconciliationIssue(models.Model):
    """A difference between the ledger and the vendor's view of one finished task.

    Found by the nightly reconciliation (``tasks_app.reconcile``); never applied on its own.
    ``ledger_units``: sum of the task's ``Deduction`` rows (corrections included);
    ``vendor_units``: the vendor's ``final_unit_deduction`` (null when it sent none or the
    task is unknown there). A staff member resolves it: ``corrected`` (a correction row was
    appended, ``correction``) or ``dismissed``. At most one open issue per task.
    """

    class Resolution(models.TextChoices):
        CORRECTED = "corrected", "Corrected"
        DISMISSED = "dismissed", "Dismissed"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="reconciliation_issues")
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=12, choices=IssueKind.choices)
    ledger_units = models.DecimalField(max_digits=UNITS_DIGITS, decimal_places=UNITS_PLACES)
    vendor_units = models.DecimalField(
        max_digits=UNITS_DIGITS, decimal_places=UNITS_PLACES, null=True, blank=True
    )
    vendor_status = models.CharField(max_length=12, blank=True)
    detail = models.TextField(blank=True)
    found_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolution = models.CharField(max_length=12, choices=Resolution.choices, blank=True)
    correction = models.ForeignKey(
        Deduction, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-found_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["task"],
                condition=models.Q(resolved_at__isnull=True),
                name="one_open_issue_per_task",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: task {self.task_id}"

    @property
    def difference(self) -> Decimal:
        """Units the ledger lacks (positive) or has too many (negative) versus the vendor."""
        return (self.vendor_units or Decimal("0")) - self.ledger_units


class PollClaim(models.Model):
    """The poller's claim of one (Kling account, family) group: while ``claimed_until`` is in
    the future, one poll cycle is reading the group and no other poller may.

    Taken with a conditional UPDATE (``claimed_until`` unset or passed → the cycle's lease
    value) and released at the end of the cycle; a poller killed mid-cycle leaves a claim that
    simply expires (``tasks_app.polling.group_claim``). ``family``: a ``Task.family`` value,
    not limited to the choices (families of plugged-in apps).
    """

    account = models.ForeignKey("accounts.KlingAccount", on_delete=models.CASCADE, related_name="+")
    family = models.CharField(max_length=40)
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "family"], name="pollclaim_group"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id}/{self.family} until {self.claimed_until or '-'}"


class ResourcePackSnapshot(models.Model):
    """One fetch of a Kling account's resource packs (account costs, KLING_API.md §5.5).

    Written by ``tasks_app.resource_packs.resource_packs_refresh``. ``requested_at`` is set
    before the call (it doubles as the claim that keeps calls per account at most once a
    second); ``received_at`` when the answer came. ``packs``: one dict per pack with
    ``resource_pack_name``, ``resource_pack_id``, ``resource_pack_type``, ``total_quantity``
    and ``remaining_quantity`` (units as decimal strings), ``purchase_time``,
    ``effective_time``, ``invalid_time`` (ISO 8601 or null) and ``status``. ``error``: why
    the fetch failed (then ``packs`` is empty). ``credential_hash``: the credential used
    (``KlingAccount.credential_hash``); a snapshot is shown only while the account still
    holds that credential (issue 14 item 7). The vendor's remaining quantity lags by up to
    12 hours: it informs people and never gates submission.
    """

    account = models.ForeignKey("accounts.KlingAccount", on_delete=models.CASCADE, related_name="+")
    credential_hash = models.CharField(max_length=64, blank=True)
    requested_at = models.DateTimeField(default=timezone.now)
    received_at = models.DateTimeField(null=True, blank=True)
    packs = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [
            models.Index(fields=["account", "-requested_at"], name="packsnap_account_time"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id}: {len(self.packs)} packs at {self.requested_at:%Y-%m-%d %H:%M}"


class UsageRollup(models.Model):
    """Daily sums of the deduction ledger (issue 15 item 3): one row per team × local day ×
    member × family × model × mode × task status × currency.

    Written by ``tasks_app.rollups`` in the transaction that inserts the ledger row it
    counts (``rollup_add``), rebuilt from the ledger by ``manage.py rollups_rebuild`` and
    compared with it by ``manage.py rollups_check`` and the nightly reconciliation (a
    difference is reported, never fixed silently). Reports read it for the company page and
    long ranges (``klingweb.reporting.figures``).

    ``day``: the local day of the row's ``recorded_at`` in the team's time zone
    (``tasks_app.budgets.team_zone``, as the team usage page buckets days); a team whose
    zone changes needs ``rollups_rebuild --team``. ``units``: sum of ledger ``units`` (units
    of Kling credit, the ledger's places). ``amount``: sum of the cash ``amount`` of rows
    charged in cash (in ``currency``, the ledger row's; "" for unit rows). ``priced_units``:
    units of the rows without a cash amount (their money is ``priced_units`` ×
    ``settings.KLING_UNIT_PRICE``, priced when read, as ``ledger_money_expr`` does).
    ``charged``: primary ledger rows (charged tasks); ``rows``: every ledger row.
    ``member`` is null for a deleted account (several such rows may then share a key:
    readers always sum).
    """

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    family = models.CharField(max_length=20, choices=Family.choices)
    model_name = models.CharField(max_length=50, blank=True)
    mode = models.CharField(max_length=10, blank=True)
    task_status = models.CharField(max_length=12, choices=Status.choices, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    units = models.DecimalField(max_digits=UNITS_DIGITS, decimal_places=UNITS_PLACES, default=0)
    amount = models.DecimalField(max_digits=UNITS_DIGITS, decimal_places=UNITS_PLACES, default=0)
    priced_units = models.DecimalField(
        max_digits=UNITS_DIGITS, decimal_places=UNITS_PLACES, default=0
    )
    charged = models.PositiveIntegerField(default=0)
    rows = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "team",
                    "day",
                    "member",
                    "family",
                    "model_name",
                    "mode",
                    "task_status",
                    "currency",
                ],
                name="usage_rollup_key",
            )
        ]
        indexes = [models.Index(fields=["day", "team"], name="usage_rollup_day")]

    def __str__(self) -> str:
        return f"{self.team_id} {self.day} {self.family}/{self.model_name}: {self.units}"


class UsageDay(models.Model):
    """The coarse daily rollup: one row per team × local day (the team's zone, as
    ``UsageRollup``) × family, for the company page and the per-day chart of long ranges
    (a year of a team is at most 365 × families rows, whatever the number of members and
    models). Written with ``UsageRollup`` (``tasks_app.rollups``), same rules. ``units``,
    ``amount``, ``priced_units``, ``charged``, ``rows`` as there; ``failed_units``: the units
    of rows whose task failed (``task_status`` failed)."""

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    family = models.CharField(max_length=20, choices=Family.choices)
    units = models.DecimalField(max_digits=UNITS_DIGITS, decimal_places=UNITS_PLACES, default=0)
    failed_units = models.DecimalField(
        max_digits=UNITS_DIGITS, decimal_places=UNITS_PLACES, default=0
    )
    amount = models.DecimalField(max_digits=UNITS_DIGITS, decimal_places=UNITS_PLACES, default=0)
    priced_units = models.DecimalField(
        max_digits=UNITS_DIGITS, decimal_places=UNITS_PLACES, default=0
    )
    charged = models.PositiveIntegerField(default=0)
    rows = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "day", "family"], name="usage_day_key")
        ]
        indexes = [models.Index(fields=["day", "team"], name="usage_day_day")]

    def __str__(self) -> str:
        return f"{self.team_id} {self.day} {self.family}: {self.units}"


class LedgerState(models.Model):
    """A team's ledger version: bumped in every transaction that adds a ledger row for the
    team (``tasks_app.rollups``), so a cached report keyed by it is never stale.

    ``tasks_version``: bumped in every transaction that creates a task of the team or moves
    one to another status (``tasks_app.rollups.tasks_touch``), so a cached usage page, which
    also counts the tasks run, succeeded and failed, is never stale either. (What a page
    shows of the team's settings is versioned by ``accounts.Team.settings_version``.)"""

    team = models.OneToOneField(
        "accounts.Team", on_delete=models.CASCADE, primary_key=True, related_name="ledger_state"
    )
    version = models.BigIntegerField(default=0)
    tasks_version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.team_id}: v{self.version}"
