"""Usage figures: what each team, member and kind of task cost (issue 7).

Every figure is computed in the database by grouped queries over the deduction ledger
(``Deduction``: units the vendor charged, KLING_API.md §4 ``final_unit_deduction``) and over
``Task`` for counts. A team or personal report runs them as ONE statement (``usage_figures``):
the period's ledger rows are read from the table once, into a common table expression, and
each grouping (per day × family, per member or team, per model and mode, the most expensive
tasks) is a branch of a ``UNION ALL``. Python only reshapes the few hundred aggregated rows
(bounded by days × families, members, models) for the page. No ledger row is loaded into
Python, and the number of queries of a report is fixed: it does not grow with the data.

Units are Kling credit units: ``Decimal`` with the ledger's places (``UNITS_PLACES``, 8),
summed exactly by the database (PostgreSQL ``numeric``; on SQLite the sums are quantised back
to those places, which removes the binary floating-point error SQLite's ``SUM`` carries).
Money is in ``settings.KLING_CURRENCY``: a row's vendor cash figure when it was charged in
cash, else its units × ``settings.KLING_UNIT_PRICE`` (``tasks_app.ledger.ledger_money_expr``).

A report covers a ``Period`` (``klingweb.reporting.periods``: whole days, midnight to midnight
in the team's or the portal's time zone) and a ``Scope`` (which teams, member, family). Besides
the team and personal reports, this module computes the company report (units per team per
month) and the budget bars of the usage pages (``budgets_progress``, windows from
``tasks_app.budgets``).

What counts:
- *units spent*: the sum of ledger rows recorded in the period, corrections included (a
  correction's units are the difference and may be negative);
- *units charged for failed tasks*: the part of it whose ``task_status`` is ``failed``;
- *tasks run / succeeded / failed / lost*: tasks created in the period that Kling accepted
  (submitted, processing, succeeded, failed or lost at vendor; not queued, not refused);
- *average units per task* of a family: its units divided by the tasks charged in the period
  (primary ledger rows, i.e. not corrections).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.db import connections
from django.db.models import CharField, DecimalField, F, Q, QuerySet, Sum, Value
from django.db.models.functions import Cast, Coalesce, TruncDay, TruncMonth
from django.urls import reverse
from django.utils import timezone

from klingweb.accounts.models import Team
from klingweb.reporting.periods import FAMILY_LABELS, Choice, Period
from tasks_app.budgets import measure_text, period_bounds, team_zone
from tasks_app.ledger import ledger_money_expr, ledger_units_expr
from tasks_app.models import (
    IN_FLIGHT,
    UNITS_PLACES,
    VENDOR_STATUSES,
    Budget,
    BudgetMeasure,
    Deduction,
    Family,
    Status,
    Task,
    UsageDay,
    UsageRollup,
)
from tasks_app.prices import unit_price
from tasks_app.rollups import ledger_versions, team_zone_of

#: Output field of every units sum: wide enough for a company's lifetime, the ledger's places.
UNITS_FIELD = DecimalField(max_digits=30, decimal_places=UNITS_PLACES)
ZERO = Decimal("0")
PLACES = Decimal(1).scaleb(-UNITS_PLACES)
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
    "money",
    "failed_units",
    "charged_tasks",
    "tasks_run",
    "succeeded",
    "failed",
    "lost",
    "in_flight",
)


def units_sum(condition: Q | None = None) -> Coalesce:
    """``SUM(units)`` (optionally ``FILTER (WHERE condition)``), 0 when no row matches."""
    return Coalesce(Sum("units", filter=condition), Value(ZERO), output_field=UNITS_FIELD)


def money_sum(condition: Q | None = None) -> Coalesce:
    """``SUM`` of each row's money (``ledger_money_expr``), 0 when no row matches."""
    return Coalesce(
        Sum(ledger_money_expr(), filter=condition, output_field=UNITS_FIELD),
        Value(ZERO),
        output_field=UNITS_FIELD,
    )


def q3(value: Decimal) -> Decimal:
    """``value`` quantised to the ledger's places (``UNITS_PLACES``). Applied to every sum
    read back: a no-op on PostgreSQL; on SQLite it drops the float error of ``SUM`` (e.g.
    ``299.999999999994`` for a thousand 0.1 + 0.2) and keeps 0.3333 as 0.3333."""
    return value.quantize(PLACES)


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
    money: Decimal = ZERO
    failed_units: Decimal = ZERO
    charged_tasks: int = 0
    tasks_run: int = 0
    succeeded: int = 0
    failed: int = 0
    lost: int = 0
    in_flight: int = 0

    @property
    def average(self) -> Decimal | None:
        """Units per charged task (3 places: a derived figure, not a vendor one), None when
        nothing was charged."""
        if not self.charged_tasks:
            return None
        return (self.units / self.charged_tasks).quantize(Decimal("0.001"))


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
    money: Decimal = ZERO  # in settings.KLING_CURRENCY


@dataclass
class ModelRow:
    """Units of one (family, model, mode)."""

    family: str
    model_name: str
    mode: str
    units: Decimal
    charged_tasks: int
    money: Decimal = ZERO  # in settings.KLING_CURRENCY

    @property
    def family_label(self) -> str:
        """The family's display name."""
        return FAMILY_LABELS.get(self.family, self.family)


@dataclass
class TaskRow:
    """One of the most expensive tasks: its units and money in the period, and a link."""

    task: Task
    units: Decimal
    url: str
    money: Decimal = ZERO


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
# rows. Rows come back as (part, day, family, ref, name1, name2, spent, failed_spent, n, money)
# where ``money`` is the sum of each row's money (``l_money``, see ``ledger_money_expr``):
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
#: The most expensive tasks of the period's ledger rows ``l`` (see ``_LEDGER_BRANCHES``).
_TOP_TASKS_SQL = """
  SELECT l_task AS task, l_units AS spent, l_money AS money FROM l
   WHERE l_corrects IS NULL AND l_task IS NOT NULL
     AND l_task NOT IN (SELECT l_task FROM l WHERE l_corrects IS NOT NULL AND l_task IS NOT NULL)
  UNION ALL
  SELECT l_task, SUM(l_units), SUM(l_money) FROM l
   WHERE l_task IN (SELECT l_task FROM l WHERE l_corrects IS NOT NULL)
   GROUP BY l_task
  ORDER BY spent DESC, task DESC LIMIT %s
"""
_LEDGER_BRANCHES = "".join(
    (
        """
SELECT 'day' AS part, l_day AS day, l_family AS family, CAST(NULL AS bigint) AS ref,
       CAST(NULL AS text) AS name1, CAST(NULL AS text) AS name2, SUM(l_units) AS spent,
       SUM(CASE WHEN l_status = %s THEN l_units ELSE 0 END) AS failed_spent,
       COUNT(CASE WHEN l_corrects IS NULL THEN 1 END) AS n, SUM(l_money) AS money
  FROM l GROUP BY l_day, l_family
UNION ALL
SELECT 'group', NULL, NULL, g.l_group, x.k_key, x.k_label, g.spent, g.failed_spent, g.n, g.money
  FROM (SELECT l_group, SUM(l_units) AS spent,
               SUM(CASE WHEN l_status = %s THEN l_units ELSE 0 END) AS failed_spent,
               COUNT(CASE WHEN l_corrects IS NULL THEN 1 END) AS n, SUM(l_money) AS money
          FROM l GROUP BY l_group) g
  LEFT JOIN x ON x.k_id = g.l_group
UNION ALL
SELECT 'model', NULL, l_family, NULL, l_model, l_mode, SUM(l_units), NULL,
       COUNT(CASE WHEN l_corrects IS NULL THEN 1 END), SUM(l_money)
  FROM l GROUP BY l_family, l_model, l_mode
UNION ALL
SELECT 'task', NULL, NULL, task, NULL, NULL, spent, NULL, NULL, money FROM (""",
        _TOP_TASKS_SQL,
        ") top_tasks",
    )
)
# The statement of a report read from the rollups (``usage_figures(source="rollups")``): only
# the most expensive tasks come from the ledger rows ``l``, and the tasks run from ``t``.
_TOP_ONLY_BRANCH = "".join(
    (
        """
SELECT 'task' AS part, CAST(NULL AS text) AS day, CAST(NULL AS text) AS family, task AS ref,
       CAST(NULL AS text) AS name1, CAST(NULL AS text) AS name2, spent,
       CAST(NULL AS numeric) AS failed_spent, CAST(NULL AS bigint) AS n, money FROM (""",
        _TOP_TASKS_SQL,
        ") top_tasks",
    )
)
_TASK_BRANCH = """
SELECT 'tasks', NULL, t_family, NULL, t_status, NULL, NULL, NULL, COUNT(*), NULL
  FROM t GROUP BY t_family, t_status"""


def _compiled(qs: QuerySet) -> tuple[str, tuple[Any, ...]]:
    """SQL and parameters of ``qs`` as the ORM would run it. A filter that can match nothing
    (``team_id__in=[]``) compiles to an always-false predicate instead of raising."""
    compiler = qs.query.get_compiler(using=qs.db, elide_empty=False)
    sql, params = compiler.as_sql()
    return sql, tuple(params)


def _units(value: Any) -> Decimal:
    """A sum read back from the statement as Decimal units or money (the ledger's places; 0
    for NULL).
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
    top_money: dict[int, Decimal] = field(default_factory=dict)
    per_day_money: dict[tuple[dt.date, str], Decimal] = field(default_factory=dict)

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


def _rollups(scope: Scope, period: Period, model=UsageRollup) -> QuerySet:
    """Rollup rows (``model``: ``UsageRollup``, or ``UsageDay`` for a scope without member)
    of ``scope`` (one team) for the days of ``period`` (unordered)."""
    qs = model.objects.filter(
        team_id=scope.team_id, day__gte=period.first_day, day__lte=period.last_day
    )
    if scope.member_id is not None:
        qs = qs.filter(member_id=scope.member_id)
    if scope.member_username:
        qs = qs.filter(member__username=scope.member_username)
    if scope.family:
        qs = qs.filter(family=scope.family)
    return qs.order_by()


def rollup_figure_rows(*, scope: Scope, period: Period) -> list[tuple]:
    """The ``day``, ``group`` (per member) and ``model`` rows of ``usage_figures``' statement,
    in its shape (part, day, family, ref, name1, name2, spent, failed_spent, n, money), from
    the daily rollups (``tasks_app.models.UsageRollup``) in three grouped queries. Money is
    the rollups' cash ``amount`` plus ``priced_units`` × ``settings.KLING_UNIT_PRICE``, as
    ``ledger_money_expr`` prices a ledger row."""
    price = unit_price()
    failed = Q(task_status=Status.FAILED)
    sums = {
        "spent": units_sum(),
        "failed_spent": Coalesce(
            Sum("units", filter=failed), Value(ZERO), output_field=UNITS_FIELD
        ),
        "n": Coalesce(Sum("charged"), Value(0)),
        "cash": Coalesce(Sum("amount"), Value(ZERO), output_field=UNITS_FIELD),
        "priced": Coalesce(Sum("priced_units"), Value(ZERO), output_field=UNITS_FIELD),
    }

    def money(r: dict) -> Decimal:
        return _units(r["cash"]) + _units(_units(r["priced"]) * price)

    base = _rollups(scope, period)
    out: list[tuple] = []
    # Per day and family: the coarse UsageDay (365 × families rows a year) unless a member
    # is chosen (only UsageRollup knows members).
    by_member = scope.member_id is not None or bool(scope.member_username)
    days = base
    if not by_member:
        days = _rollups(scope, period, UsageDay)
        sums_day = {
            **sums,
            "failed_spent": Coalesce(Sum("failed_units"), Value(ZERO), output_field=UNITS_FIELD),
        }
    for r in days.values("day", "family").annotate(**(sums if by_member else sums_day)):
        out.append(
            ("day", r["day"], r["family"], None, None, None)
            + (r["spent"], r["failed_spent"], r["n"], money(r))
        )
    username = get_user_model().USERNAME_FIELD
    for r in base.values("member_id", name=F(f"member__{username}")).annotate(**sums):
        out.append(
            ("group", None, None, r["member_id"], r["name"], r["name"])
            + (r["spent"], r["failed_spent"], r["n"], money(r))
        )
    for r in base.values("family", "model_name", "mode").annotate(**sums):
        out.append(
            ("model", None, r["family"], None, r["model_name"], r["mode"])
            + (r["spent"], None, r["n"], money(r))
        )
    return out


def usage_figures(
    *, scope: Scope, period: Period, group_kind: str = "member", source: str = "ledger"
) -> Figures:
    """Every figure of ``scope`` in ``period`` from ONE statement (``_LEDGER_BRANCHES``):
    units per local day × family, per member (``group_kind="member"``) or team (``"team"``),
    per family × model × mode, the most expensive tasks, and the tasks run per family ×
    status. The database groups; Python only reshapes the few hundred grouped rows (bounded by
    days × families, members, models — not by ledger rows). Raises ``KeyError`` for an unknown
    ``group_kind``.

    ``source="rollups"``: the sums (per day, member, model) are read from the daily rollups
    (``rollup_figure_rows``: same figures, far fewer rows); only the most expensive tasks
    and the tasks run come from the ledger and tasks. Only for a one-team scope whose period
    runs in the team's zone (the rollups' days), ``group_kind="member"``."""
    ledger = scope.ledger(period).values(
        l_day=TruncDay("recorded_at", tzinfo=period.tz),
        l_family=F("family"),
        l_model=F("model_name"),
        l_mode=F("mode"),
        l_status=F("task_status"),
        l_units=F("units"),
        l_money=ledger_money_expr(),
        l_corrects=F("corrects_id"),
        l_task=F("task_id"),
        l_group=F(GROUP_FIELDS[group_kind]),
    )
    tasks = scope.tasks(period).values(t_family=F("family"), t_status=F("status"))
    ledger_sql, ledger_params = _compiled(ledger)
    tasks_sql, tasks_params = _compiled(tasks)
    labels_sql, labels_params = _compiled(_group_labels(group_kind))
    key = _cache_key(scope=scope, period=period, group_kind=group_kind, source=source)
    cached = caches[settings.REPORT_CACHE].get(key) if key else None
    if cached is not None:  # the ledger's figures; the tasks run are counted afresh
        with connections[ledger.db].cursor() as cursor:
            cursor.execute(f"WITH t AS ({tasks_sql}){_TASK_BRANCH}", tasks_params)
            rows = [*cached, *cursor.fetchall()]
        return _figures_from_rows(rows, period=period, group_kind=group_kind)
    if source == "rollups":
        sql = f"WITH l AS ({ledger_sql}), t AS ({tasks_sql}){_TOP_ONLY_BRANCH} UNION ALL {_TASK_BRANCH}"
        params = (*ledger_params, *tasks_params, TOP_TASKS)
    else:
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
    if source == "rollups":
        rows = [*rollup_figure_rows(scope=scope, period=period), *rows]
    if key:
        caches[settings.REPORT_CACHE].set(
            key, [r for r in rows if r[0] != "tasks"], settings.REPORT_CACHE_SECONDS
        )
    return _figures_from_rows(rows, period=period, group_kind=group_kind)


def key_digest(parts: Any) -> str:
    """The digest (32 hex characters of SHA-256 over ``repr(parts)``) that ends every report
    cache key (``settings.REPORT_CACHE``): ``parts`` is a tuple of plain values (ints,
    strings, dates, Decimals) naming everything the cached value depends on."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def _cache_key(*, scope: Scope, period: Period, group_kind: str, source: str) -> str:
    """The cache key of a one-team report's ledger figures: team, its ledger version
    (``LedgerState.version``, bumped by every ledger row of the team) and settings version
    (``Team.settings_version``, bumped by a member's username change among others: the
    figures name members), read in one query, period (days and zone), filters, grouping,
    source and unit price. "" (no caching) for a scope of several teams."""
    if scope.team_id is None:
        return ""
    version, settings_version = (
        Team.objects.filter(pk=scope.team_id)
        .values_list("ledger_state__version", "settings_version")
        .first()
    ) or (None, None)
    version = version or 0
    parts = (
        scope.team_id,
        version,
        settings_version,
        period.first_day,
        period.last_day,
        period.tz_name,
        scope.member_id,
        scope.member_username,
        scope.family,
        group_kind,
        source,
        unit_price(),
        TOP_TASKS,
    )
    return f"usage:{scope.team_id}:{version}:{key_digest(parts)}"


def _figures_from_rows(rows: list[tuple], *, period: Period, group_kind: str) -> Figures:
    """Reshape the rows of ``usage_figures``' statement into ``Figures``."""

    by_family: dict[str, FamilyRow] = {}
    per_day: dict[tuple[dt.date, str], Decimal] = {}
    per_day_money: dict[tuple[dt.date, str], Decimal] = {}
    groups: list[GroupRow] = []
    models: list[ModelRow] = []
    top: list[tuple[int, Decimal]] = []
    top_money: dict[int, Decimal] = {}
    for part, day, family, ref, name1, name2, spent, failed_spent, n, money in rows:
        if part == "day":
            fam = by_family.setdefault(family, FamilyRow(family=family))
            units = _units(spent)
            fam.units += units
            fam.money += _units(money)
            fam.failed_units += _units(failed_spent)
            fam.charged_tasks += n
            per_day[(_local_day(day, period.tz), family)] = units
            per_day_money[(_local_day(day, period.tz), family)] = _units(money)
        elif part == "group":
            groups.append(
                GroupRow(
                    key=_group_key(group_kind, name1),
                    label=name2 or ("(deleted account)" if group_kind == "member" else ""),
                    units=_units(spent),
                    failed_units=_units(failed_spent),
                    charged_tasks=n,
                    money=_units(money),
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
                    money=_units(money),
                )
            )
        elif part == "task":
            top.append((ref, _units(spent)))
            top_money[ref] = _units(money)
        else:  # tasks created in the period, per family and status
            fam = by_family.setdefault(family, FamilyRow(family=family))
            if name1 in VENDOR_STATUSES or name1 == Status.LOST:  # Kling accepted it
                fam.tasks_run += n
            if name1 == Status.SUCCEED:
                fam.succeeded += n
            elif name1 == Status.FAILED:
                fam.failed += n
            elif name1 == Status.LOST:  # Kling no longer knew it: ended uncharged
                fam.lost += n
            elif name1 in IN_FLIGHT:
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
        top_money=top_money,
        per_day_money=per_day_money,
    )


#: A team report longer than this many days reads the daily rollups (``source="rollups"``).
ROLLUP_MIN_DAYS = 32


def team_figures_source(period: Period) -> str:
    """Where a team report (one team, days in its zone) reads its sums: ``"rollups"`` for a
    long range (``ROLLUP_MIN_DAYS`` days or more), else ``"ledger"``."""
    return "rollups" if len(period.days) >= ROLLUP_MIN_DAYS else "ledger"


def usage_report(
    *,
    scope: Scope,
    choice: Choice,
    group_kind: str = "member",
    source: str = "ledger",
) -> UsageReport:
    """Build the report of ``scope`` for ``choice``: two queries whatever the data (the
    statement of ``usage_figures``, then the most expensive tasks with their team and creator;
    none for the latter when nothing was charged).

    ``group_kind``: ``"member"`` (team report: units per member) or ``"team"`` (my usage:
    units per team). ``source``: see ``usage_figures`` (a one-team report's ledger figures
    are cached there, keyed by the team's ledger version).
    """
    period = choice.period
    figures = usage_figures(scope=scope, period=period, group_kind=group_kind, source=source)
    units = dict(figures.top)
    tasks = (
        Task.objects.filter(pk__in=list(units))
        .select_related("team", "creator")
        .only(*TOP_TASK_FIELDS)
    )
    top_tasks = sorted(
        (
            TaskRow(
                task=t,
                units=units[t.pk],
                money=figures.top_money.get(t.pk, ZERO),
                url=reverse("tasks-detail", kwargs={"team": t.team.code, "code": t.code}),
            )
            for t in tasks
        ),
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
    def spent_text(self) -> str:
        """Spent in the budget's measure (``"12.5 units"``, ``"$1.75"``)."""
        return measure_text(self.spent, self.budget.measure)

    @property
    def limit_text(self) -> str:
        """The budget's limit in its measure."""
        return measure_text(self.budget.units, self.budget.measure)

    @property
    def scope_label(self) -> str:
        """Who the budget caps: "Whole team", or the member's username."""
        return self.budget.member.get_username() if self.budget.member_id else "Whole team"


def budgets_progress(
    *,
    budgets: Sequence[Budget],
    now: dt.datetime | None = None,
    ledger_version: int | None = None,
) -> list[BudgetRow]:
    """Progress of ``budgets`` (with ``team`` and ``member`` loaded) in their current windows,
    from the ledger in one aggregate query (none when there is no budget). A team budget
    counts every member's units in the team; a member budget that member's units there. A
    budget in money counts each row's money (``ledger_money_expr``), one in units each row's
    units (``ledger_units_expr``: a cash-only row as its money ÷ the unit price).

    ``ledger_version``: the version (``LedgerState.version``) of the ONE team
    all ``budgets`` belong to, read before this call; the sums are then kept in the report
    cache, keyed by it, the budgets' scopes, measures and window starts and the unit price,
    so a page load after a charge (a new version) or a window's reset sums afresh."""
    if not budgets:
        return []
    now = now or timezone.now()
    windows = {
        b.pk: period_bounds(period=b.period, zone=team_zone(b.team), now=now) for b in budgets
    }
    key = ""
    if ledger_version is not None and len({b.team_id for b in budgets}) == 1:
        parts = [
            (b.pk, b.team_id, b.member_id, b.measure, windows[b.pk][0].isoformat()) for b in budgets
        ]
        digest = key_digest((parts, unit_price()))
        key = f"budgets:{budgets[0].team_id}:{ledger_version}:{digest}"
        cached = caches[settings.REPORT_CACHE].get(key)
        if cached is not None:
            return [
                BudgetRow(
                    budget=b,
                    spent=cached[b.pk],
                    starts_at=windows[b.pk][0],
                    resets_at=windows[b.pk][1],
                )
                for b in budgets
            ]
    sums = {}
    for b in budgets:
        cond = Q(team_id=b.team_id, recorded_at__gte=windows[b.pk][0])
        if b.member_id is not None:
            cond &= Q(member_id=b.member_id)
        expr = ledger_money_expr() if b.measure == BudgetMeasure.MONEY else ledger_units_expr()
        sums[f"b{b.pk}"] = Coalesce(
            Sum(expr, filter=cond, output_field=UNITS_FIELD), Value(ZERO), output_field=UNITS_FIELD
        )
    spent = (
        Deduction.objects.filter(
            team_id__in={b.team_id for b in budgets},
            recorded_at__gte=min(w[0] for w in windows.values()),
        )
        .order_by()
        .aggregate(**sums)
    )
    if key:
        caches[settings.REPORT_CACHE].set(
            key, {b.pk: q3(spent[f"b{b.pk}"]) for b in budgets}, settings.REPORT_CACHE_SECONDS
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
    money: Decimal = ZERO  # the team's money over the period, settings.KLING_CURRENCY


@dataclass
class CompanyReport:
    """Units per team per month across all teams, for the staff's company page."""

    choice: Choice
    months: list[dt.date]
    teams: list[CompanyTeamRow]
    month_totals: list[Decimal]
    total: Decimal = ZERO
    used_teams: list[CompanyTeamRow] = field(default_factory=list)
    money: Decimal = ZERO  # every team's money over the period

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
    """Grouped query: one row per (team_id, month in ``period.tz``) with ``spent`` (units)
    and ``spent_money`` (money), over every team's ledger rows recorded in ``period``."""
    return (
        Deduction.objects.filter(recorded_at__gte=period.start, recorded_at__lt=period.end)
        .annotate(month=TruncMonth("recorded_at", tzinfo=period.tz))
        .values("team_id", "month")
        .annotate(spent=units_sum(), spent_money=money_sum())
        .order_by()
    )


def rollups_by_team_month(*, period: Period, team_ids: list[int]) -> QuerySet:
    """Grouped query over the coarse daily rollups (``UsageDay``: team × day × family): one
    row per (team_id, month) with ``spent``
    (units), ``cash`` (cash money) and ``priced`` (units priced at
    ``settings.KLING_UNIT_PRICE``), for ``team_ids`` — teams whose zone is ``period.tz``, so
    that the rollups' days are the period's days."""
    return (
        UsageDay.objects.filter(
            team_id__in=team_ids, day__gte=period.first_day, day__lte=period.last_day
        )
        .annotate(month=TruncMonth("day"))
        .values("team_id", "month")
        .annotate(
            spent=units_sum(),
            cash=Coalesce(Sum("amount"), Value(ZERO), output_field=UNITS_FIELD),
            priced=Coalesce(Sum("priced_units"), Value(ZERO), output_field=UNITS_FIELD),
        )
        .order_by()
    )


def _month(value: Any) -> dt.date:
    """The first day of a month read back from a grouped rollup query (a date, or ISO text
    on SQLite)."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if not isinstance(value, dt.date):
        value = dt.date.fromisoformat(str(value)[:10])
    return value.replace(day=1)


def company_report(*, choice: Choice) -> CompanyReport:
    """Units per team per month for ``choice.period`` (months in the period's zone): four
    queries whatever the data (the list of teams; every team's ledger version; the daily
    rollups grouped by team and month for the teams whose zone is the period's; the grouped
    ledger query for the other teams, skipped when there is none). Figures equal the
    ledger's: a rollup's day is the team's local day, the period's day for those teams.

    The report is kept in the report cache (``settings.REPORT_CACHE``), keyed by every
    team's ledger version (``tasks_app.rollups.ledger_versions``: bumped in the transaction
    of each ledger row), the teams (code, name, zone), the period's days and zone and the
    unit price: a page load after any charge computes it afresh; otherwise two queries."""
    period = choice.period
    teams = list(Team.objects.order_by("name", "pk").values("pk", "code", "name", "time_zone"))
    zone = str(getattr(period.tz, "key", period.tz))
    price = unit_price()
    parts = (
        sorted(ledger_versions().items()),
        [(t["pk"], str(t["code"]), t["name"], t["time_zone"]) for t in teams],
        period.first_day,
        period.last_day,
        zone,
        price,
    )
    key = "company:" + key_digest(parts)
    cached = caches[settings.REPORT_CACHE].get(key)
    if cached is not None:
        cached.choice = choice
        return cached
    report = _company_report(choice=choice, teams=teams, zone=zone, price=price)
    caches[settings.REPORT_CACHE].set(key, report, settings.REPORT_CACHE_SECONDS)
    return report


def _company_report(
    *, choice: Choice, teams: list[dict[str, Any]], zone: str, price: Decimal
) -> CompanyReport:
    """``company_report`` computed (not cached): ``teams`` as read by it (pk, code, name,
    time_zone), ``zone`` the period's zone name, ``price`` the unit price."""
    period = choice.period
    months = period.months
    index = {m: i for i, m in enumerate(months)}
    cells: dict[int, list[Decimal]] = {}
    money: dict[int, Decimal] = {}
    same_zone = [t["pk"] for t in teams if team_zone_of(t["time_zone"]).key == zone]
    others = [t["pk"] for t in teams if t["pk"] not in set(same_zone)]
    for row in rollups_by_team_month(period=period, team_ids=same_zone):
        month = _month(row["month"])
        cells.setdefault(row["team_id"], [ZERO] * len(months))[index[month]] += q3(row["spent"])
        spent_money = q3(row["cash"]) + q3(q3(row["priced"]) * price)
        money[row["team_id"]] = money.get(row["team_id"], ZERO) + spent_money
    if others:
        for row in usage_by_team_month(period=period).filter(team_id__in=others):
            month = row["month"].astimezone(period.tz).date().replace(day=1)
            cells.setdefault(row["team_id"], [ZERO] * len(months))[index[month]] += q3(row["spent"])
            money[row["team_id"]] = money.get(row["team_id"], ZERO) + q3(row["spent_money"])
    for t in teams:
        del t["time_zone"]
    rows = [
        CompanyTeamRow(
            team=t,
            months=cells.get(t["pk"], [ZERO] * len(months)),
            total=ZERO,
            money=money.get(t["pk"], ZERO),
        )
        for t in teams
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
        money=sum(money.values(), ZERO),
        used_teams=[r for r in rows if r.team["pk"] in cells],
    )
