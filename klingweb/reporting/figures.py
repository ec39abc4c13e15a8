"""Usage reports: what each team, member and kind of task cost (issue 7).

Every figure is computed in the database by grouped queries over the deduction ledger
(``Deduction``: units the vendor charged, KLING_API.md §4 ``final_unit_deduction``) and over
``Task`` for counts. A team or personal report runs them as ONE statement (``usage_figures``):
the period's ledger rows are read from the table once, into a common table expression, and
each grouping (per day × family, per member or team, per model and mode, the most expensive
tasks) is a branch of a ``UNION ALL``. Python only reshapes the few hundred aggregated rows
(bounded by days × families, members, models) for the page. No ledger row is loaded into
Python, and the number of queries of a report is fixed: it does not grow with the data.

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
import functools
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib.auth import get_user_model
from django.db import connections
from django.db.models import CharField, DecimalField, F, Q, QuerySet, Sum, Value
from django.db.models.functions import Cast, Coalesce, TruncDay, TruncMonth
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
#: What the most expensive tasks table shows of a task (not its parameters and results).
TOP_TASK_FIELDS = (
    "code",
    "family",
    "model_name",
    "mode",
    "prompt",
    "summary",
    "status",
    "created_at",
    "team__code",
    "team__name",
    "creator__username",
)
#: The ``Totals`` fields a report adds up over its families.
TOTAL_FIELDS = (
    "units",
    "failed_units",
    "charged_tasks",
    "tasks_run",
    "succeeded",
    "failed",
    "in_flight",
)
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


def _pairs(values: Iterable[str]) -> list[tuple[str, str]]:
    return [(v, v) for v in values]


class UsageForm(forms.Form):
    """The period picker and filters of a usage page (GET parameters).

    ``period``: a key of ``periods``; ``start``/``end``: ISO dates for ``custom`` (at most
    ``max_days`` days); ``family``: a ``Family`` value; ``member``: a username (team page);
    ``team``: a team code (my usage). Filters a page does not ``offer`` are removed.

    ``members`` may be a callable returning the usernames: it is then called at most once,
    and only when the choices are needed (a ``member`` value to validate, or the picker to
    draw), so a report region without a member filter costs no query for them.
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
        members: Sequence[str] | Callable[[], Iterable[str]] = (),
        teams: Sequence[tuple[str, str]] = (),
        offer: Iterable[str] = ("family",),
        max_days: int = MAX_RANGE_DAYS,
    ):
        super().__init__(data)
        self.default = default
        self.max_days = max_days
        self.fields["period"].choices = list(periods.items())
        self.fields["family"].choices = [("", "All kinds"), *Family.choices]
        if callable(members):
            load = functools.cache(members)
            self.fields["member"].choices = lambda: [("", "All members"), *_pairs(load())]
        else:
            self.fields["member"].choices = [("", "All members"), *_pairs(members)]
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


def _group_labels(kind: str) -> QuerySet:
    """The rows naming a report's groups (``k_id``, ``k_key``, ``k_label``): users by username
    for ``member``, teams by code and name for ``team``. Joined to the few grouped rows, not to
    every ledger row. Raises ``KeyError`` for another ``kind``."""
    if kind == "member":
        username = get_user_model().USERNAME_FIELD
        return get_user_model().objects.values(k_id=F("pk"), k_key=F(username), k_label=F(username))
    if kind == "team":
        return Team.objects.values(
            k_id=F("pk"), k_key=Cast("code", output_field=CharField()), k_label=F("name")
        )
    raise KeyError(kind)


#: The ledger column a report's second table groups on: ``member`` (team report) or
#: ``team`` (my usage).
GROUP_FIELDS = {"member": "member_id", "team": "team_id"}

# One statement for every figure of a report. ``l`` is the period's ledger rows of the scope,
# ``t`` its tasks and ``x`` the names of members (or teams), all three compiled by the ORM
# (``Scope.ledger`` / ``Scope.tasks`` / ``_group_labels``) so the filters live in one place.
# Each branch is one grouping of ``l`` (or ``t``); the CTE ``l`` is read once from the table
# (PostgreSQL materialises a CTE used more than once) and each grouping hashes its few thousand
# rows. Rows come back as (part, day, family, ref, name1, name2, spent, failed_spent, n):
#   day   — per (local day, family): units, units of failed tasks, primary rows (charged tasks);
#   group — per member or team (ref = its id; name1/name2 = key/label): the same three sums;
#   model — per (family, model_name = name1, mode = name2): units and charged tasks;
#   task  — the TOP_TASKS tasks with the most units in the period (ref = task id), most first;
#   tasks — tasks created in the period per (family, status = name1): n.
# Top tasks without grouping every task: a task has at most one primary row (constraint
# ``one_primary_deduction_per_task``), so a task with no correction recorded in the period has
# one row there and its units are that row's; only the few tasks with a correction in the period
# are summed. The NULL placeholders of the first branch carry types so that PostgreSQL can match
# the branches' columns; the SQL is otherwise plain and runs on SQLite as well.
_LEDGER_BRANCHES = """
SELECT 'day' AS part, l_day AS day, l_family AS family, CAST(NULL AS bigint) AS ref,
       CAST(NULL AS text) AS name1, CAST(NULL AS text) AS name2, SUM(l_units) AS spent,
       SUM(CASE WHEN l_status = %s THEN l_units ELSE 0 END) AS failed_spent,
       COUNT(CASE WHEN l_corrects IS NULL THEN 1 END) AS n
  FROM l GROUP BY l_day, l_family
UNION ALL
SELECT 'group', NULL, NULL, g.l_group, x.k_key, x.k_label, g.spent, g.failed_spent, g.n
  FROM (SELECT l_group, SUM(l_units) AS spent,
               SUM(CASE WHEN l_status = %s THEN l_units ELSE 0 END) AS failed_spent,
               COUNT(CASE WHEN l_corrects IS NULL THEN 1 END) AS n
          FROM l GROUP BY l_group) g
  LEFT JOIN x ON x.k_id = g.l_group
UNION ALL
SELECT 'model', NULL, l_family, NULL, l_model, l_mode, SUM(l_units), NULL,
       COUNT(CASE WHEN l_corrects IS NULL THEN 1 END)
  FROM l GROUP BY l_family, l_model, l_mode
UNION ALL
SELECT 'task', NULL, NULL, task, NULL, NULL, spent, NULL, NULL FROM (
  SELECT l_task AS task, l_units AS spent FROM l
   WHERE l_corrects IS NULL AND l_task IS NOT NULL
     AND l_task NOT IN (SELECT l_task FROM l WHERE l_corrects IS NOT NULL AND l_task IS NOT NULL)
  UNION ALL
  SELECT l_task, SUM(l_units) FROM l
   WHERE l_task IN (SELECT l_task FROM l WHERE l_corrects IS NOT NULL)
   GROUP BY l_task
  ORDER BY spent DESC, task DESC LIMIT %s
) top_tasks"""
_TASK_BRANCH = """
SELECT 'tasks', NULL, t_family, NULL, t_status, NULL, NULL, NULL, COUNT(*)
  FROM t GROUP BY t_family, t_status"""


def _compiled(qs: QuerySet) -> tuple[str, tuple[Any, ...]]:
    """SQL and parameters of ``qs`` as the ORM would run it. A filter that can match nothing
    (``team_id__in=[]``) compiles to an always-false predicate instead of raising."""
    compiler = qs.query.get_compiler(using=qs.db, elide_empty=False)
    sql, params = compiler.as_sql()
    return sql, tuple(params)


def _units(value: Any) -> Decimal:
    """A sum read back from the statement as Decimal units (3 places; 0 for NULL).
    PostgreSQL returns ``Decimal``; SQLite an int or a float, quantised here (``q3``)."""
    if value is None:
        return ZERO
    return q3(value if isinstance(value, Decimal) else Decimal(str(value)))


def _local_day(value: Any, tz: dt.tzinfo) -> dt.date:
    """The local day of a truncated timestamp read back from the statement: a naive local
    midnight (PostgreSQL), an aware datetime, or ``YYYY-MM-DD HH:MM:SS`` text (SQLite)."""
    if isinstance(value, dt.datetime):
        return value.astimezone(tz).date() if value.tzinfo else value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _group_key(kind: str, value: Any) -> str:
    """A group's key as the page links with it: a username ("" for a deleted account), or a
    team code in its canonical dashed form (SQLite stores it as 32 hex digits)."""
    if value is None:
        return ""
    return str(uuid.UUID(str(value))) if kind == "team" else str(value)


@dataclass
class Figures:
    """Every figure of a report period, from ``usage_figures``. Units are Decimal (3 places).

    ``per_day``: units per (local day, family), only the pairs with ledger rows;
    ``families``: ``FamilyRow`` per family with ledger rows or tasks, in ``Family`` order;
    ``totals``: the sum of ``families``; ``groups``: per member or team, most units first;
    ``models``: per (family, model, mode), most units first; ``top``: (task pk, units) of the
    ``TOP_TASKS`` tasks with the most units, most first (ties: newest task first).
    """

    totals: Totals
    families: list[FamilyRow]
    per_day: dict[tuple[dt.date, str], Decimal]
    groups: list[GroupRow]
    models: list[ModelRow]
    top: list[tuple[int, Decimal]]

    def days(self, period: Period) -> DaySeries:
        """Units per day of ``period`` (every day, zeros included), one series per family
        that has ledger rows, in ``families`` order."""
        charted = {family for _, family in self.per_day}
        families = [f.family for f in self.families if f.family in charted]
        rows = []
        for day in period.days:
            values = [self.per_day.get((day, family), ZERO) for family in families]
            rows.append((day, values, sum(values, ZERO)))
        return DaySeries(families=families, rows=rows)


def usage_figures(*, scope: Scope, period: Period, group_kind: str = "member") -> Figures:
    """Every figure of ``scope`` in ``period`` from ONE statement (``_LEDGER_BRANCHES``):
    units per local day × family, per member (``group_kind="member"``) or team (``"team"``),
    per family × model × mode, the most expensive tasks, and the tasks run per family ×
    status. The database groups; Python only reshapes the few hundred grouped rows (bounded by
    days × families, members, models — not by ledger rows). Raises ``KeyError`` for an unknown
    ``group_kind``."""
    ledger = scope.ledger(period).values(
        l_day=TruncDay("recorded_at", tzinfo=period.tz),
        l_family=F("family"),
        l_model=F("model_name"),
        l_mode=F("mode"),
        l_status=F("task_status"),
        l_units=F("units"),
        l_corrects=F("corrects_id"),
        l_task=F("task_id"),
        l_group=F(GROUP_FIELDS[group_kind]),
    )
    tasks = scope.tasks(period).values(t_family=F("family"), t_status=F("status"))
    ledger_sql, ledger_params = _compiled(ledger)
    tasks_sql, tasks_params = _compiled(tasks)
    labels_sql, labels_params = _compiled(_group_labels(group_kind))
    sql = (
        f"WITH l AS ({ledger_sql}), t AS ({tasks_sql}), x AS ({labels_sql})"
        f"{_LEDGER_BRANCHES} UNION ALL {_TASK_BRANCH}"
    )
    params = (
        *ledger_params,
        *tasks_params,
        *labels_params,
        Status.FAILED,
        Status.FAILED,
        TOP_TASKS,
    )
    with connections[ledger.db].cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()

    by_family: dict[str, FamilyRow] = {}
    per_day: dict[tuple[dt.date, str], Decimal] = {}
    groups: list[GroupRow] = []
    models: list[ModelRow] = []
    top: list[tuple[int, Decimal]] = []
    for part, day, family, ref, name1, name2, spent, failed_spent, n in rows:
        if part == "day":
            fam = by_family.setdefault(family, FamilyRow(family=family))
            units = _units(spent)
            fam.units += units
            fam.failed_units += _units(failed_spent)
            fam.charged_tasks += n
            per_day[(_local_day(day, period.tz), family)] = units
        elif part == "group":
            groups.append(
                GroupRow(
                    key=_group_key(group_kind, name1),
                    label=name2 or ("(deleted account)" if group_kind == "member" else ""),
                    units=_units(spent),
                    failed_units=_units(failed_spent),
                    charged_tasks=n,
                )
            )
        elif part == "model":
            models.append(
                ModelRow(
                    family=family,
                    model_name=name1,
                    mode=name2,
                    units=_units(spent),
                    charged_tasks=n,
                )
            )
        elif part == "task":
            top.append((ref, _units(spent)))
        else:  # tasks created in the period, per family and status
            fam = by_family.setdefault(family, FamilyRow(family=family))
            if name1 in RUN_STATUSES:
                fam.tasks_run += n
            if name1 == Status.SUCCEED:
                fam.succeeded += n
            elif name1 == Status.FAILED:
                fam.failed += n
            elif name1 in (Status.SUBMITTED, Status.PROCESSING):
                fam.in_flight += n

    order = {key: i for i, key in enumerate(Family.values)}
    families = sorted(by_family.values(), key=lambda f: (order.get(f.family, 99), f.family))
    totals = Totals()
    for fam in families:
        for name in TOTAL_FIELDS:
            setattr(totals, name, getattr(totals, name) + getattr(fam, name))
    for g in groups:
        if totals.units:
            g.share = (g.units * 100 / totals.units).quantize(Decimal("0.1"))
    groups.sort(key=lambda g: (-g.units, g.label))
    models.sort(key=lambda m: (-m.units, m.family, m.model_name, m.mode))
    top.sort(key=lambda t: (-t[1], -t[0]))
    return Figures(
        totals=totals,
        families=families,
        per_day=per_day,
        groups=groups,
        models=models,
        top=top,
    )


def usage_report(*, scope: Scope, choice: Choice, group_kind: str = "member") -> UsageReport:
    """Build the report of ``scope`` for ``choice``: two queries whatever the data (the
    statement of ``usage_figures``, then the most expensive tasks with their team and creator;
    none for the latter when nothing was charged).

    ``group_kind``: ``"member"`` (team report: units per member) or ``"team"`` (my usage:
    units per team).
    """
    period = choice.period
    figures = usage_figures(scope=scope, period=period, group_kind=group_kind)
    units = dict(figures.top)
    tasks = (
        Task.objects.filter(pk__in=list(units))
        .select_related("team", "creator")
        .only(*TOP_TASK_FIELDS)
    )
    top_tasks = sorted(
        (TaskRow(task=t, units=units[t.pk], url=_task_url(t.team.code, t.code)) for t in tasks),
        key=lambda r: (-r.units, -r.task.pk),
    )
    return UsageReport(
        choice=choice,
        totals=figures.totals,
        families=figures.families,
        days=figures.days(period),
        groups=figures.groups,
        group_kind=group_kind,
        models=figures.models,
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
    ``choice``: the tables are the page's figures (``usage_figures``), the ledger and the
    per-task table stream from grouped queries. Raises ``KeyError`` for an unknown table."""
    if table not in REPORT_TABLES:
        raise KeyError(table)
    period = choice.period
    ledger = scope.ledger(period)
    tz = period.tz
    if table == "ledger":
        yield from ledger_csv_rows(ledger=ledger, tz=tz)
    elif table == "days":
        figures = usage_figures(scope=scope, period=period)
        for (day, family), units in sorted(figures.per_day.items()):
            yield [day.isoformat(), family, str(units)]
    elif table == "families":
        for f in usage_figures(scope=scope, period=period).families:
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
    elif table in ("members", "teams"):
        kind = "member" if table == "members" else "team"
        for g in usage_figures(scope=scope, period=period, group_kind=kind).groups:
            yield [
                csv_text(g.key if kind == "member" else g.label),
                str(g.units),
                str(g.failed_units),
                str(g.charged_tasks),
            ]
    elif table == "models":
        for m in usage_figures(scope=scope, period=period).models:
            yield [
                m.family,
                csv_text(m.model_name),
                csv_text(m.mode),
                str(m.units),
                str(m.charged_tasks),
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
