"""Usage reports: what each team, member and kind of task cost (issue 7).

Every figure is computed in the database by a grouped query over the deduction ledger
(``Deduction``: units the vendor charged, KLING_API.md §4 ``final_unit_deduction``) or over
``Task`` for counts; Python only reshapes the few aggregated rows (a handful of families,
days, members) for the page. No ledger row is loaded into Python, and the number of queries
of a report is fixed: it does not grow with the data.

Units are Kling credit units: ``Decimal`` with 3 places, summed exactly by the database
(PostgreSQL ``numeric``; on SQLite the sums are quantised back to 3 places, which removes the
binary floating-point error SQLite's ``SUM`` carries).

Periods run from midnight to midnight in a time zone: the team's (``Team.time_zone``) for a
team report, the portal's (``settings.TIME_ZONE``) for the signed-in member's report across
teams and for the company report. ``start`` is inclusive, ``end`` exclusive.

What counts:
- *units spent*: the sum of ledger rows recorded in the period, corrections included (a
  correction's units are the difference and may be negative);
- *units charged for failed tasks*: the part of it whose ``task_status`` is ``failed``;
- *tasks run / succeeded / failed*: tasks created in the period that Kling accepted
  (submitted, processing, succeeded or failed; not queued, not refused);
- *average units per task* of a family: its units divided by the tasks charged in the period
  (primary ledger rows, i.e. not corrections).
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.db.models import Count, DecimalField, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncDay, TruncMonth
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from klingweb.accounts.models import Team
from tasks_app.budgets import period_bounds, team_zone
from tasks_app.models import Budget, Deduction, Family, Status, Task

#: Output field of every units sum: wide enough for a company's lifetime, 3 places.
UNITS_FIELD = DecimalField(max_digits=20, decimal_places=3)
ZERO = Decimal("0.000")
#: Statuses of a task Kling accepted (it ran, or is running).
RUN_STATUSES = (Status.SUBMITTED, Status.PROCESSING, Status.SUCCEED, Status.FAILED)
#: How many of the most expensive tasks a report lists.
TOP_TASKS = 10
#: Longest custom range, in days: a year for the per-day reports, ten for the company's
#: per-month report.
MAX_RANGE_DAYS = 366
MAX_COMPANY_RANGE_DAYS = 3660

TEAM_PERIODS: dict[str, str] = {
    "this_month": "This month",
    "last_month": "Last month",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "90d": "Last 90 days",
    "custom": "Custom range",
}
COMPANY_PERIODS: dict[str, str] = {
    "12m": "Last 12 months",
    "this_year": "This year",
    "last_year": "Last year",
    "custom": "Custom range",
}
FAMILY_LABELS: dict[str, str] = dict(Family.choices)


def units_sum(condition: Q | None = None) -> Coalesce:
    """``SUM(units)`` (optionally ``FILTER (WHERE condition)``), 0 when no row matches."""
    return Coalesce(Sum("units", filter=condition), Value(ZERO), output_field=UNITS_FIELD)


def q3(value: Decimal) -> Decimal:
    """``value`` quantised to 3 places (the ledger's precision). Applied to every sum read
    back: a no-op on PostgreSQL; on SQLite it drops the float error of ``SUM`` (e.g.
    ``299.999999999994`` for a thousand 0.1 + 0.2)."""
    return value.quantize(Decimal("0.001"))


def portal_zone() -> dt.tzinfo:
    """The portal's time zone (``settings.TIME_ZONE``), for reports across teams."""
    return timezone.get_default_timezone()


def local_midnight(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    """The aware datetime at which ``day`` starts in ``tz``."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=tz)


# --- Periods ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """A report period: whole days ``first_day`` … ``last_day`` (inclusive) in ``tz``.

    ``start``/``end`` are the aware instants bounding it (midnight in ``tz``; end exclusive).
    """

    key: str
    label: str
    first_day: dt.date
    last_day: dt.date
    tz: dt.tzinfo

    @property
    def start(self) -> dt.datetime:
        """Midnight at the start of ``first_day`` in ``tz`` (inclusive)."""
        return local_midnight(self.first_day, self.tz)

    @property
    def end(self) -> dt.datetime:
        """Midnight after ``last_day`` in ``tz`` (exclusive)."""
        return local_midnight(self.last_day + dt.timedelta(days=1), self.tz)

    @property
    def days(self) -> list[dt.date]:
        """Every day of the period, in order."""
        count = (self.last_day - self.first_day).days + 1
        return [self.first_day + dt.timedelta(days=i) for i in range(count)]

    @property
    def months(self) -> list[dt.date]:
        """The first day of every month the period touches, in order."""
        out, month = [], self.first_day.replace(day=1)
        while month <= self.last_day:
            out.append(month)
            month = (month + dt.timedelta(days=32)).replace(day=1)
        return out

    @property
    def params(self) -> dict[str, str]:
        """Query parameters that reproduce this period (for links and exports)."""
        if self.key == "custom":
            return {
                "period": "custom",
                "start": self.first_day.isoformat(),
                "end": self.last_day.isoformat(),
            }
        return {"period": self.key}

    @property
    def tz_name(self) -> str:
        """The zone's name, for display (``Europe/Paris``)."""
        return str(getattr(self.tz, "key", self.tz))


def _add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return dt.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def period_resolve(
    *,
    key: str,
    tz: dt.tzinfo,
    now: dt.datetime | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> Period:
    """The ``Period`` for a picker ``key`` (``TEAM_PERIODS`` or ``COMPANY_PERIODS``) as seen
    at ``now`` in ``tz``. "Last N days" ends today and includes it. ``custom`` uses ``start``
    and ``end`` (dates, inclusive). Raises ``ValueError`` for an unknown key or a custom range
    without dates."""
    today = (now or timezone.now()).astimezone(tz).date()
    labels = {**TEAM_PERIODS, **COMPANY_PERIODS}
    if key not in labels:
        raise ValueError(f"Unknown period {key!r}.")
    month_start = today.replace(day=1)
    if key == "this_month":
        first, last = month_start, today
    elif key == "last_month":
        last = month_start - dt.timedelta(days=1)
        first = last.replace(day=1)
    elif key in ("7d", "30d", "90d"):
        first, last = today - dt.timedelta(days=int(key[:-1]) - 1), today
    elif key == "12m":
        first, last = _add_months(month_start, -11), today
    elif key == "this_year":
        first, last = today.replace(month=1, day=1), today
    elif key == "last_year":
        first, last = dt.date(today.year - 1, 1, 1), dt.date(today.year - 1, 12, 31)
    else:
        if start is None or end is None:
            raise ValueError("A custom range needs a start and an end date.")
        first, last = start, end
    label = labels[key]
    if key == "custom":
        label = f"{first:%d %b %Y} – {last:%d %b %Y}"
    return Period(key=key, label=label, first_day=first, last_day=last, tz=tz)


class UsageForm(forms.Form):
    """The period picker and filters of a usage page (GET parameters).

    ``period``: a key of ``periods``; ``start``/``end``: ISO dates for ``custom`` (at most
    ``max_days`` days); ``family``: a ``Family`` value; ``member``: a username (team page);
    ``team``: a team code (my usage). Filters a page does not ``offer`` are removed.
    """

    period = forms.ChoiceField(required=False)
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    family = forms.ChoiceField(required=False)
    member = forms.ChoiceField(required=False)
    team = forms.ChoiceField(required=False)

    def __init__(
        self,
        data: Mapping[str, Any] | None,
        *,
        periods: Mapping[str, str],
        default: str,
        members: Sequence[str] = (),
        teams: Sequence[tuple[str, str]] = (),
        offer: Iterable[str] = ("family",),
        max_days: int = MAX_RANGE_DAYS,
    ):
        super().__init__(data)
        self.default = default
        self.max_days = max_days
        self.fields["period"].choices = list(periods.items())
        self.fields["family"].choices = [("", "All kinds"), *Family.choices]
        self.fields["member"].choices = [("", "All members"), *((m, m) for m in members)]
        self.fields["team"].choices = [("", "All teams"), *teams]
        for name in ("family", "member", "team"):
            if name not in offer:
                del self.fields[name]

    def clean(self) -> dict[str, Any]:
        """A custom range needs both dates, start ≤ end, at most ``max_days`` days."""
        data = super().clean()
        if (data.get("period") or self.default) == "custom":
            start, end = data.get("start"), data.get("end")
            if start is None or end is None:
                raise forms.ValidationError("A custom range needs a start and an end date.")
            if start > end:
                raise forms.ValidationError("The start date is after the end date.")
            if (end - start).days + 1 > self.max_days:
                raise forms.ValidationError(f"A range is at most {self.max_days} days.")
        return data


@dataclass(frozen=True)
class Choice:
    """What a usage request asked for, once validated: a period and optional filters."""

    period: Period
    family: str = ""
    member: str = ""
    team: str = ""

    @property
    def family_label(self) -> str:
        """The display name of the ``family`` filter ("" when none)."""
        return FAMILY_LABELS.get(self.family, self.family)

    @property
    def period_query(self) -> str:
        """The query string reproducing the period alone (``period=…[&start=…&end=…]``)."""
        return urlencode(self.period.params)

    @property
    def query(self) -> str:
        """The query string reproducing this choice (``period=…&family=…``)."""
        params = dict(self.period.params)
        for name in ("family", "member", "team"):
            if getattr(self, name):
                params[name] = getattr(self, name)
        return urlencode(params)


def usage_choice(form: UsageForm, *, tz: dt.tzinfo, now: dt.datetime | None = None) -> Choice:
    """The validated ``Choice`` of a bound ``UsageForm``. An invalid form falls back to the
    default period with no filter (the form keeps its errors for the page to show)."""
    if not form.is_valid():
        return Choice(period=period_resolve(key=form.default, tz=tz, now=now))
    data = form.cleaned_data
    period = period_resolve(
        key=data.get("period") or form.default,
        tz=tz,
        now=now,
        start=data.get("start"),
        end=data.get("end"),
    )
    return Choice(
        period=period,
        family=data.get("family") or "",
        member=data.get("member") or "",
        team=data.get("team") or "",
    )


# --- Scope: which rows a report covers ----------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Which ledger rows and tasks a report covers.

    ``team_id``: one team (team report); ``team_ids``: several teams, a list or a subquery
    (my usage); neither: every team (company). ``member_id``: one member's rows (ledger
    ``member``, task ``creator``). ``member_username``: the same by name (team filter).
    ``family``: one kind of task.
    """

    team_id: int | None = None
    team_ids: Any = None
    member_id: int | None = None
    member_username: str = ""
    family: str = ""

    def ledger(self, period: Period) -> QuerySet[Deduction]:
        """Ledger rows recorded in ``period`` within this scope (unordered)."""
        qs = Deduction.objects.filter(recorded_at__gte=period.start, recorded_at__lt=period.end)
        return self._narrow(qs, member="member").order_by()

    def tasks(self, period: Period) -> QuerySet[Task]:
        """Tasks created in ``period`` within this scope (unordered)."""
        qs = Task.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
        return self._narrow(qs, member="creator").order_by()

    def _narrow(self, qs: QuerySet, *, member: str) -> QuerySet:
        if self.team_id is not None:
            qs = qs.filter(team_id=self.team_id)
        elif self.team_ids is not None:
            qs = qs.filter(team_id__in=self.team_ids)
        if self.member_id is not None:
            qs = qs.filter(**{f"{member}_id": self.member_id})
        if self.member_username:
            qs = qs.filter(**{f"{member}__username": self.member_username})
        if self.family:
            qs = qs.filter(family=self.family)
        return qs


# --- The report ---------------------------------------------------------------------------


@dataclass
class Totals:
    """The headline figures of a report. Units are Decimal Kling credit units."""

    units: Decimal = ZERO
    failed_units: Decimal = ZERO
    charged_tasks: int = 0
    tasks_run: int = 0
    succeeded: int = 0
    failed: int = 0
    in_flight: int = 0

    @property
    def average(self) -> Decimal | None:
        """Units per charged task (3 places), None when nothing was charged."""
        return q3(self.units / self.charged_tasks) if self.charged_tasks else None


@dataclass
class FamilyRow(Totals):
    """``Totals`` of one kind of task."""

    family: str = ""

    @property
    def label(self) -> str:
        """The family's display name."""
        return FAMILY_LABELS.get(self.family, self.family)


@dataclass
class GroupRow:
    """Units of one member (team report) or one team (my usage)."""

    key: str
    label: str
    units: Decimal
    failed_units: Decimal
    charged_tasks: int
    share: Decimal | None = None  # percent of the report's units, 1 place


@dataclass
class ModelRow:
    """Units of one (family, model, mode)."""

    family: str
    model_name: str
    mode: str
    units: Decimal
    charged_tasks: int

    @property
    def family_label(self) -> str:
        """The family's display name."""
        return FAMILY_LABELS.get(self.family, self.family)


@dataclass
class TaskRow:
    """One of the most expensive tasks: its units in the period, and a link to it."""

    task: Task
    units: Decimal
    url: str


@dataclass
class DaySeries:
    """Units per day, one series per family: ``rows`` is ``[(day, [units per family], total)]``
    in the order of ``families``."""

    families: list[str]
    rows: list[tuple[dt.date, list[Decimal], Decimal]]

    @property
    def family_labels(self) -> list[str]:
        """Display names of ``families``."""
        return [FAMILY_LABELS.get(f, f) for f in self.families]

    def chart(self) -> dict[str, Any]:
        """Chart data for ``json_script``: labels (ISO days) and one dataset per family,
        units as decimal strings (exact; the browser turns them into numbers to draw)."""
        return {
            "type": "bar",
            "stacked": True,
            "unit": "units",
            "labels": [day.isoformat() for day, _, _ in self.rows],
            "datasets": [
                {
                    "key": family,
                    "label": FAMILY_LABELS.get(family, family),
                    "data": [str(values[i]) for _, values, _ in self.rows],
                }
                for i, family in enumerate(self.families)
            ],
        }


@dataclass
class UsageReport:
    """Everything a team or personal usage page shows for one period."""

    choice: Choice
    totals: Totals
    families: list[FamilyRow]
    days: DaySeries
    groups: list[GroupRow]
    group_kind: str  # "member" or "team"
    models: list[ModelRow]
    top_tasks: list[TaskRow]

    @property
    def period(self) -> Period:
        """The report's period."""
        return self.choice.period

    def groups_chart(self) -> dict[str, Any]:
        """Chart data for units per member (or team), as in ``DaySeries.chart``."""
        return {
            "type": "bar",
            "horizontal": True,
            "unit": "units",
            "labels": [g.label for g in self.groups],
            "datasets": [
                {"key": "units", "label": "Units", "data": [str(g.units) for g in self.groups]}
            ],
        }


def _task_url(team_code: Any, code: Any) -> str:
    try:
        return reverse("tasks-detail", kwargs={"team": team_code, "code": code})
    except NoReverseMatch:  # the tasks pages follow the contract's path
        return f"/t/{team_code}/tasks/{code}/"


def usage_by_day_family(*, ledger: QuerySet[Deduction], period: Period) -> QuerySet:
    """Grouped query: one row per (local day, family) with ``spent``, ``failed_spent`` and
    ``charged`` (primary ledger rows). Days are truncated in ``period.tz``."""
    return (
        ledger.annotate(day=TruncDay("recorded_at", tzinfo=period.tz))
        .values("day", "family")
        .annotate(
            spent=units_sum(),
            failed_spent=units_sum(Q(task_status=Status.FAILED)),
            charged=Count("id", filter=Q(corrects__isnull=True)),
        )
        .order_by()
    )


def usage_task_counts(*, tasks: QuerySet[Task]) -> QuerySet:
    """Grouped query: one row per (family, status) with ``n`` tasks."""
    return tasks.values("family", "status").annotate(n=Count("id")).order_by()


def usage_by_member(*, ledger: QuerySet[Deduction]) -> QuerySet:
    """Grouped query: one row per member (``member_id``, ``member__username``; None for a
    deleted account) with ``spent``, ``failed_spent``, ``charged``; most units first."""
    return (
        ledger.values("member_id", "member__username")
        .annotate(
            spent=units_sum(),
            failed_spent=units_sum(Q(task_status=Status.FAILED)),
            charged=Count("id", filter=Q(corrects__isnull=True)),
        )
        .order_by("-spent", "member__username")
    )


def usage_by_team(*, ledger: QuerySet[Deduction]) -> QuerySet:
    """Grouped query: one row per team (``team_id``, ``team__code``, ``team__name``) with
    ``spent``, ``failed_spent``, ``charged``; most units first."""
    return (
        ledger.values("team_id", "team__code", "team__name")
        .annotate(
            spent=units_sum(),
            failed_spent=units_sum(Q(task_status=Status.FAILED)),
            charged=Count("id", filter=Q(corrects__isnull=True)),
        )
        .order_by("-spent", "team__name")
    )


def usage_by_model(*, ledger: QuerySet[Deduction]) -> QuerySet:
    """Grouped query: one row per (family, model_name, mode) with ``spent`` and ``charged``;
    most units first."""
    return (
        ledger.values("family", "model_name", "mode")
        .annotate(spent=units_sum(), charged=Count("id", filter=Q(corrects__isnull=True)))
        .order_by("-spent", "family", "model_name", "mode")
    )


def usage_by_task(*, ledger: QuerySet[Deduction]) -> QuerySet:
    """Grouped query: one row per task (``task_id``) with its ``spent`` units in the period
    (its charge plus corrections recorded in the period); most units first."""
    return (
        ledger.filter(task__isnull=False)
        .values("task_id")
        .annotate(spent=units_sum())
        .order_by("-spent", "-task_id")
    )


@dataclass
class Breakdown:
    """Totals, the families table, units per day and the models table of one period."""

    totals: Totals
    families: list[FamilyRow]
    days: DaySeries
    models: list[ModelRow]


def usage_breakdown(*, scope: Scope, period: Period) -> Breakdown:
    """Totals, families, units per day and models of ``scope`` in ``period``: three grouped
    queries (ledger by local day × family; ledger by family × model × mode; tasks by
    family × status)."""
    ledger = scope.ledger(period)
    by_family: dict[str, FamilyRow] = {}
    per_day: dict[tuple[dt.date, str], Decimal] = {}
    for row in usage_by_day_family(ledger=ledger, period=period):
        fam = by_family.setdefault(row["family"], FamilyRow(family=row["family"]))
        fam.units += q3(row["spent"])
        fam.failed_units += q3(row["failed_spent"])
        fam.charged_tasks += row["charged"]
        day = row["day"].astimezone(period.tz).date()
        per_day[(day, row["family"])] = q3(row["spent"])

    for row in usage_task_counts(tasks=scope.tasks(period)):
        fam = by_family.setdefault(row["family"], FamilyRow(family=row["family"]))
        if row["status"] in RUN_STATUSES:
            fam.tasks_run += row["n"]
        if row["status"] == Status.SUCCEED:
            fam.succeeded += row["n"]
        elif row["status"] == Status.FAILED:
            fam.failed += row["n"]
        elif row["status"] in (Status.SUBMITTED, Status.PROCESSING):
            fam.in_flight += row["n"]

    order = {key: i for i, key in enumerate(Family.values)}
    families = sorted(by_family.values(), key=lambda f: (order.get(f.family, 99), f.family))
    totals = Totals()
    for fam in families:
        for name in (
            "units",
            "failed_units",
            "charged_tasks",
            "tasks_run",
            "succeeded",
            "failed",
            "in_flight",
        ):
            setattr(totals, name, getattr(totals, name) + getattr(fam, name))

    charted = [f.family for f in families if any(k[1] == f.family for k in per_day)]
    day_rows = []
    for day in period.days:
        values = [per_day.get((day, fam), ZERO) for fam in charted]
        day_rows.append((day, values, sum(values, ZERO)))
    models = [
        ModelRow(
            family=r["family"],
            model_name=r["model_name"],
            mode=r["mode"],
            units=q3(r["spent"]),
            charged_tasks=r["charged"],
        )
        for r in usage_by_model(ledger=ledger)
    ]
    return Breakdown(
        totals=totals,
        families=families,
        days=DaySeries(families=charted, rows=day_rows),
        models=models,
    )


def usage_report(*, scope: Scope, choice: Choice, group_kind: str = "member") -> UsageReport:
    """Build the report of ``scope`` for ``choice``: 7 queries whatever the data.

    ``group_kind``: ``"member"`` (team report: units per member) or ``"team"`` (my usage:
    units per team).
    """
    period = choice.period
    ledger = scope.ledger(period)
    breakdown = usage_breakdown(scope=scope, period=period)
    totals = breakdown.totals

    if group_kind == "team":
        groups = [
            GroupRow(
                key=str(r["team__code"]),
                label=r["team__name"],
                units=q3(r["spent"]),
                failed_units=q3(r["failed_spent"]),
                charged_tasks=r["charged"],
            )
            for r in usage_by_team(ledger=ledger)
        ]
    else:
        groups = [
            GroupRow(
                key=r["member__username"] or "",
                label=r["member__username"] or "(deleted account)",
                units=q3(r["spent"]),
                failed_units=q3(r["failed_spent"]),
                charged_tasks=r["charged"],
            )
            for r in usage_by_member(ledger=ledger)
        ]
    for g in groups:
        if totals.units:
            g.share = (g.units * 100 / totals.units).quantize(Decimal("0.1"))

    top = {r["task_id"]: q3(r["spent"]) for r in usage_by_task(ledger=ledger)[:TOP_TASKS]}
    tasks = Task.objects.filter(pk__in=list(top)).select_related("team", "creator")
    top_tasks = sorted(
        (TaskRow(task=t, units=top[t.pk], url=_task_url(t.team.code, t.code)) for t in tasks),
        key=lambda r: (-r.units, -r.task.pk),
    )
    return UsageReport(
        choice=choice,
        totals=totals,
        families=breakdown.families,
        days=breakdown.days,
        groups=groups,
        group_kind=group_kind,
        models=breakdown.models,
        top_tasks=top_tasks,
    )


# --- Budgets ------------------------------------------------------------------------------


@dataclass
class BudgetRow:
    """A budget's progress in its current window (``tasks_app.budgets.period_bounds``: from
    midnight in the team's zone; weeks from Monday). ``percent`` is of ``budget.units`` (may
    pass 100); ``resets_at`` is the next window's start (aware, in the team's zone)."""

    budget: Budget
    spent: Decimal
    starts_at: dt.datetime
    resets_at: dt.datetime

    @property
    def percent(self) -> Decimal:
        """Spent as a percentage of the budget, 1 place (0 for a zero budget)."""
        if not self.budget.units:
            return Decimal("0.0")
        return (self.spent * 100 / self.budget.units).quantize(Decimal("0.1"))

    @property
    def bar_value(self) -> Decimal:
        """``spent`` capped at the budget, for a ``<progress>`` bar."""
        return min(self.spent, self.budget.units)

    @property
    def over(self) -> bool:
        """True when the budget is used up."""
        return self.spent >= self.budget.units

    @property
    def scope_label(self) -> str:
        """Who the budget caps: "Whole team", or the member's username."""
        return self.budget.member.get_username() if self.budget.member_id else "Whole team"


def budgets_progress(
    *, budgets: Sequence[Budget], now: dt.datetime | None = None
) -> list[BudgetRow]:
    """Progress of ``budgets`` (with ``team`` and ``member`` loaded) in their current windows,
    from the ledger in one aggregate query (none when there is no budget). A team budget
    counts every member's units in the team; a member budget that member's units there."""
    if not budgets:
        return []
    now = now or timezone.now()
    windows = {
        b.pk: period_bounds(period=b.period, zone=team_zone(b.team), now=now) for b in budgets
    }
    sums = {}
    for b in budgets:
        cond = Q(team_id=b.team_id, recorded_at__gte=windows[b.pk][0])
        if b.member_id is not None:
            cond &= Q(member_id=b.member_id)
        sums[f"b{b.pk}"] = units_sum(cond)
    spent = (
        Deduction.objects.filter(
            team_id__in={b.team_id for b in budgets},
            recorded_at__gte=min(w[0] for w in windows.values()),
        )
        .order_by()
        .aggregate(**sums)
    )
    return [
        BudgetRow(
            budget=b,
            spent=q3(spent[f"b{b.pk}"]),
            starts_at=windows[b.pk][0],
            resets_at=windows[b.pk][1],
        )
        for b in budgets
    ]


# --- Company ------------------------------------------------------------------------------


@dataclass
class CompanyTeamRow:
    """One team's units per month (``months`` in the report's order) and in total."""

    team: dict[str, Any]  # pk, code, name
    months: list[Decimal]
    total: Decimal


@dataclass
class CompanyReport:
    """Units per team per month across all teams, for the staff's company page."""

    choice: Choice
    months: list[dt.date]
    teams: list[CompanyTeamRow]
    month_totals: list[Decimal]
    total: Decimal = ZERO
    used_teams: list[CompanyTeamRow] = field(default_factory=list)

    @property
    def period(self) -> Period:
        """The report's period."""
        return self.choice.period

    def chart(self) -> dict[str, Any]:
        """Chart data: months as labels, one stacked dataset per team that spent units."""
        return {
            "type": "bar",
            "stacked": True,
            "unit": "units",
            "labels": [m.strftime("%Y-%m") for m in self.months],
            "datasets": [
                {
                    "key": str(t.team["code"]),
                    "label": t.team["name"],
                    "data": [str(u) for u in t.months],
                }
                for t in self.used_teams
            ],
        }


def usage_by_team_month(*, period: Period) -> QuerySet:
    """Grouped query: one row per (team_id, month in ``period.tz``) with ``spent``, over every
    team's ledger rows recorded in ``period``."""
    return (
        Deduction.objects.filter(recorded_at__gte=period.start, recorded_at__lt=period.end)
        .annotate(month=TruncMonth("recorded_at", tzinfo=period.tz))
        .values("team_id", "month")
        .annotate(spent=units_sum())
        .order_by()
    )


def company_report(*, choice: Choice) -> CompanyReport:
    """Units per team per month for ``choice.period`` (months in the period's zone): two
    queries whatever the data (the grouped ledger query, and the list of teams)."""
    period = choice.period
    months = period.months
    index = {m: i for i, m in enumerate(months)}
    cells: dict[int, list[Decimal]] = {}
    for row in usage_by_team_month(period=period):
        month = row["month"].astimezone(period.tz).date().replace(day=1)
        cells.setdefault(row["team_id"], [ZERO] * len(months))[index[month]] += q3(row["spent"])
    rows = [
        CompanyTeamRow(team=t, months=cells.get(t["pk"], [ZERO] * len(months)), total=ZERO)
        for t in Team.objects.order_by("name", "pk").values("pk", "code", "name")
    ]
    for r in rows:
        r.total = sum(r.months, ZERO)
    month_totals = [sum((r.months[i] for r in rows), ZERO) for i in range(len(months))]
    return CompanyReport(
        choice=choice,
        months=months,
        teams=rows,
        month_totals=month_totals,
        total=sum(month_totals, ZERO),
        used_teams=[r for r in rows if r.team["pk"] in cells],
    )


# --- CSV rows -----------------------------------------------------------------------------

#: Exportable tables of a team / personal report, with their header rows.
REPORT_TABLES: dict[str, list[str]] = {
    "ledger": [
        "recorded_at",
        "team",
        "member",
        "task",
        "kind",
        "family",
        "model_name",
        "mode",
        "task_status",
        "units",
        "note",
    ],
    "days": ["day", "family", "units"],
    "families": [
        "family",
        "units",
        "failed_task_units",
        "tasks_charged",
        "average_units_per_task",
        "tasks_run",
        "succeeded",
        "failed",
    ],
    "members": ["member", "units", "failed_task_units", "tasks_charged"],
    "teams": ["team", "units", "failed_task_units", "tasks_charged"],
    "models": ["family", "model_name", "mode", "units", "tasks_charged"],
    "tasks": [
        "task",
        "team",
        "family",
        "model_name",
        "mode",
        "status",
        "creator",
        "created_at",
        "units",
    ],
}
COMPANY_TABLES: dict[str, list[str]] = {
    "months": ["team", "month", "units"],
    "ledger": REPORT_TABLES["ledger"],
}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: Any) -> str:
    """A free-text cell made safe for spreadsheets: a leading ``= + - @`` is prefixed with
    ``'`` so the cell is never run as a formula (units are written as numbers, unprefixed)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _iso(value: dt.datetime | None, tz: dt.tzinfo) -> str:
    return value.astimezone(tz).isoformat() if value else ""


def ledger_csv_rows(*, ledger: QuerySet[Deduction], tz: dt.tzinfo) -> Iterator[list[str]]:
    """Rows of the ``ledger`` table, oldest first, streamed from the database in chunks of
    2000 (``QuerySet.iterator``): a year of rows never sits in memory. Timestamps ISO 8601
    with the offset of ``tz``; units as plain decimal strings."""
    rows = ledger.order_by("recorded_at", "id").values_list(
        "recorded_at",
        "team__name",
        "member__username",
        "task__code",
        "corrects_id",
        "family",
        "model_name",
        "mode",
        "task_status",
        "units",
        "note",
    )
    for (
        recorded,
        team,
        member,
        task,
        corrects,
        family,
        model,
        mode,
        status,
        units,
        note,
    ) in rows.iterator(chunk_size=2000):
        yield [
            _iso(recorded, tz),
            csv_text(team),
            csv_text(member),
            str(task) if task else "",
            "correction" if corrects else "charge",
            family,
            csv_text(model),
            csv_text(mode),
            status,
            str(units),
            csv_text(note),
        ]


def report_csv_rows(*, table: str, scope: Scope, choice: Choice) -> Iterator[list[str]]:
    """Rows (without header) of ``table`` (a key of ``REPORT_TABLES``) for ``scope`` and
    ``choice``; the same grouped queries as the page. Raises ``KeyError`` for an unknown
    table."""
    if table not in REPORT_TABLES:
        raise KeyError(table)
    period = choice.period
    ledger = scope.ledger(period)
    tz = period.tz
    if table == "ledger":
        yield from ledger_csv_rows(ledger=ledger, tz=tz)
    elif table == "days":
        rows = usage_by_day_family(ledger=ledger, period=period).order_by("day", "family")
        for r in rows.iterator(chunk_size=2000):
            yield [r["day"].astimezone(tz).date().isoformat(), r["family"], str(q3(r["spent"]))]
    elif table == "families":
        for f in usage_breakdown(scope=scope, period=period).families:
            yield [
                f.family,
                str(f.units),
                str(f.failed_units),
                str(f.charged_tasks),
                "" if f.average is None else str(f.average),
                str(f.tasks_run),
                str(f.succeeded),
                str(f.failed),
            ]
    elif table == "members":
        for r in usage_by_member(ledger=ledger).iterator(chunk_size=2000):
            yield [
                csv_text(r["member__username"]),
                str(q3(r["spent"])),
                str(q3(r["failed_spent"])),
                str(r["charged"]),
            ]
    elif table == "teams":
        for r in usage_by_team(ledger=ledger).iterator(chunk_size=2000):
            yield [
                csv_text(r["team__name"]),
                str(q3(r["spent"])),
                str(q3(r["failed_spent"])),
                str(r["charged"]),
            ]
    elif table == "models":
        for r in usage_by_model(ledger=ledger).iterator(chunk_size=2000):
            yield [
                r["family"],
                csv_text(r["model_name"]),
                csv_text(r["mode"]),
                str(q3(r["spent"])),
                str(r["charged"]),
            ]
    else:  # tasks: every task charged in the period, most units first
        rows = (
            ledger.filter(task__isnull=False)
            .values(
                "task_id",
                "task__code",
                "task__team__name",
                "task__family",
                "task__model_name",
                "task__mode",
                "task__status",
                "task__creator__username",
                "task__created_at",
            )
            .annotate(spent=units_sum())
            .order_by("-spent", "-task_id")
        )
        for r in rows.iterator(chunk_size=2000):
            yield [
                str(r["task__code"]),
                csv_text(r["task__team__name"]),
                r["task__family"],
                csv_text(r["task__model_name"]),
                csv_text(r["task__mode"]),
                r["task__status"],
                csv_text(r["task__creator__username"]),
                _iso(r["task__created_at"], tz),
                str(q3(r["spent"])),
            ]


def company_csv_rows(*, table: str, choice: Choice) -> Iterator[list[str]]:
    """Rows (without header) of a company table (``COMPANY_TABLES``): ``months`` (team,
    YYYY-MM, units; long format, teams with no units left out) or ``ledger`` (every team's
    ledger rows). Raises ``KeyError`` for an unknown table."""
    if table not in COMPANY_TABLES:
        raise KeyError(table)
    period = choice.period
    if table == "ledger":
        yield from ledger_csv_rows(ledger=Scope().ledger(period), tz=period.tz)
        return
    rows = (
        Deduction.objects.filter(recorded_at__gte=period.start, recorded_at__lt=period.end)
        .annotate(month=TruncMonth("recorded_at", tzinfo=period.tz))
        .values("team_id", "team__name", "month")
        .annotate(spent=units_sum())
        .order_by("team__name", "team_id", "month")
    )
    for r in rows.iterator(chunk_size=2000):
        month = r["month"].astimezone(period.tz)
        yield [csv_text(r["team__name"]), f"{month:%Y-%m}", str(q3(r["spent"]))]
