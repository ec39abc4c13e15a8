"""Team budgets: cost estimates, the check before a task is queued, alerts and banners.

Periods are computed in the team's time zone (``Team.time_zone``): days start at midnight,
weeks on Monday at midnight, months on the 1st at midnight. A budget counts Kling credit
units or money (``Budget.measure``; money in ``settings.KLING_CURRENCY``, see
``tasks_app.ledger.ledger_money_expr``). "Spent" in a period = the ledger (``Deduction`` rows
recorded in the period, corrections included) + the reservations: the ``estimated_units`` of
the scope's tasks that can still be charged (queued, submitted, processing — released the
moment a task ends, whatever the end), so that parallel submissions cannot overshoot a
budget. Estimates come from the vendor's price table (``tasks_app.prices.task_estimate``).
Alerts (80/90/100 %) are raised on the ledger alone: they report what was actually charged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from klingweb.accounts.services import team_settings_touch
from klingweb.safe_text import mail_subject
from tasks_app.ledger import MONEY_FIELD, ledger_money_expr, ledger_units_expr
from tasks_app.models import (
    Budget,
    BudgetAlert,
    BudgetMeasure,
    BudgetPeriod,
    Deduction,
    Task,
)
from tasks_app.prices import (
    money_text,
    number_text,
    task_estimate_or_none,
    unit_price,
)

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

    from klingweb.accounts.models import Team

log = logging.getLogger(__name__)

THRESHOLDS = (80, 90, 100)  # percent of a budget's units
ZERO = Decimal("0")


class BudgetExceeded(Exception):
    """A task would pass one or more budgets. ``str(exc)`` names every budget it would pass
    and when each resets, one sentence each.

    Attributes: ``exceeded`` (every ``BudgetStatus`` passed, team budgets first);
    ``budget``, ``spent``, ``needed`` (the first one's budget, spent and need, in its
    measure) and ``resets_at`` (aware datetime in the team's time zone) for callers that
    show one.
    """

    def __init__(
        self,
        message: str,
        *,
        budget: Budget | None = None,
        spent: Decimal = ZERO,
        needed: Decimal = ZERO,
        resets_at: datetime | None = None,
        exceeded: list | None = None,
    ):
        super().__init__(message)
        self.budget = budget
        self.spent = spent
        self.needed = needed
        self.resets_at = resets_at
        self.exceeded = exceeded or []


# --- Writes -------------------------------------------------------------------------------


def budget_set(
    *,
    team: Team,
    member: AbstractBaseUser | None,
    period: str,
    units: Decimal,
    measure: str,
    by: AbstractBaseUser | None,
) -> tuple[Budget, bool]:
    """Create or replace the budget of ``team`` for ``member`` (None: the whole team) and
    ``period`` (a ``BudgetPeriod`` value): its limit ``units`` (≥ 0, in ``measure``: a
    ``BudgetMeasure`` value), ``created_by`` = ``by`` when new. Returns (budget, created).
    In one transaction with the team's settings version bump
    (``klingweb.accounts.services.team_settings_touch``: a cached usage page shows the new
    limit on its next load). Raises ``IntegrityError`` when the same budget is created by
    two calls at once (the caller asks to try again)."""
    with transaction.atomic():
        budget, created = Budget.objects.update_or_create(
            team=team,
            member=member,
            period=period,
            defaults={"units": units, "measure": measure},
            create_defaults={"units": units, "measure": measure, "created_by": by},
        )
        team_settings_touch(team_ids=[team.pk])
    return budget, created


def budget_remove(*, budget: Budget) -> None:
    """Delete ``budget`` (its alerts with it), bumping its team's settings version in the
    same transaction (``team_settings_touch``)."""
    with transaction.atomic():
        budget.delete()
        team_settings_touch(team_ids=[budget.team_id])


def estimate_units(*, family: str, params: dict) -> Decimal:
    """Estimated units of Kling credit for a task of ``family`` with request ``params``:
    ``tasks_app.prices.task_estimate`` (the vendor's published table, times
    ``settings.TASK_COST_MULTIPLIER``); 0 when the table has no figure for it."""
    return task_estimate_or_none(family, params) or ZERO


# --- periods and formatting --------------------------------------------------------------


def team_zone(team) -> ZoneInfo:
    """The team's time zone (``ZoneInfo``); UTC when the stored name is unknown."""
    try:
        return ZoneInfo(team.time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def period_bounds(*, period: str, zone: ZoneInfo, now: datetime | None = None):
    """``(start, end)`` of the ``BudgetPeriod`` containing ``now``, aware in ``zone``.

    Daily: local midnight to midnight; weekly: Monday 00:00 to the next Monday; monthly: the
    1st 00:00 to the next 1st. ``end`` is the reset moment.
    """
    local = (now or timezone.now()).astimezone(zone)
    today = local.date()
    if period == BudgetPeriod.DAILY:
        first, nxt = today, today + timedelta(days=1)
    elif period == BudgetPeriod.WEEKLY:
        first = today - timedelta(days=today.weekday())
        nxt = first + timedelta(days=7)
    else:
        first = date(today.year, today.month, 1)
        nxt = date(today.year + (today.month == 12), today.month % 12 + 1, 1)
    start = datetime(first.year, first.month, first.day, tzinfo=zone)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone)
    return start, end


def units_text(units: Decimal) -> str:
    """Units for people (``tasks_app.prices.number_text``): ``Decimal("950.000")`` →
    ``"950"``, ``"12.500"`` → ``"12.5"``, ``"1234.5"`` → ``"1,234.5"``."""
    return number_text(Decimal(units))


def measure_text(value: Decimal, measure: str) -> str:
    """A budget figure in its measure: ``"1,000 units"`` / ``"1 unit"``, or money
    (``"$12.50"``)."""
    if measure == BudgetMeasure.MONEY:
        return money_text(Decimal(value))
    word = "unit" if Decimal(value) == 1 else "units"
    return f"{units_text(value)} {word}"


def in_measure(units: Decimal, measure: str) -> Decimal:
    """Estimated ``units`` expressed in a budget's ``measure`` (money: × unit price)."""
    return units * unit_price() if measure == BudgetMeasure.MONEY else units


def budget_label(budget: Budget) -> str:
    """ "Team monthly budget" or "Monthly cap for alice"."""
    period = budget.get_period_display()
    if budget.member_id is None:
        return f"Team {period.lower()} budget"
    return f"{period} cap for {budget.member.get_username()}"


def resets_text(resets_at: datetime, zone: ZoneInfo) -> str:
    """``"2026-12-01 00:00 Europe/Paris"``."""
    return f"{resets_at.astimezone(zone):%Y-%m-%d %H:%M} {zone.key}"


# --- spending ----------------------------------------------------------------------------


PLACES = Decimal("0.00000001")


def _q(value) -> Decimal:
    """A sum read back exactly (PostgreSQL) or without SQLite's float error (8 places)."""
    return Decimal(str(value or 0)).quantize(PLACES)


def _ledger_sums() -> dict:
    """``Sum`` aggregates of the ledger in both measures: ``sum_units`` and ``sum_money``
    (not named after a field: an annotation called ``units`` would shadow the column)."""
    return {
        "sum_units": Sum(ledger_units_expr(), output_field=MONEY_FIELD),
        "sum_money": Sum(ledger_money_expr(), output_field=MONEY_FIELD),
    }


def ledger_totals(*, budget: Budget, start: datetime, end: datetime) -> tuple[Decimal, Decimal]:
    """``(units, money)``: what the ledger recorded for the budget's scope between ``start``
    and ``end``, in Kling units and in money (``KLING_CURRENCY``), whatever its measure."""
    qs = Deduction.objects.filter(
        team_id=budget.team_id, recorded_at__gte=start, recorded_at__lt=end
    )
    if budget.member_id is not None:
        qs = qs.filter(member_id=budget.member_id)
    sums = qs.aggregate(**_ledger_sums())
    return _q(sums["sum_units"]), _q(sums["sum_money"])


def ledger_spent(*, budget: Budget, start: datetime, end: datetime) -> Decimal:
    """What the ledger recorded for the budget's scope between ``start`` and ``end``, in the
    budget's measure (units, or money in ``KLING_CURRENCY``)."""
    units, money = ledger_totals(budget=budget, start=start, end=end)
    return money if budget.measure == BudgetMeasure.MONEY else units


def reserved_tasks(*, budget: Budget):
    """The scope's tasks that hold a reservation on ``budget``: those that can still be
    charged (queued, submitted, processing; ``TaskQuerySet.unfinished``), newest first. A
    task that ends — succeeds, fails, is refused, cancelled or lost — drops out at once."""
    qs = Task.objects.unfinished().filter(team_id=budget.team_id)
    if budget.member_id is not None:
        qs = qs.filter(creator_id=budget.member_id)
    return qs.order_by("-created_at", "-id")


def pending_units(*, budget: Budget) -> Decimal:
    """Reservations on ``budget`` in its measure: the estimates of ``reserved_tasks``."""
    total = reserved_tasks(budget=budget).aggregate(total=Sum("estimated_units"))["total"]
    return in_measure(_q(total), budget.measure)


@dataclass(frozen=True)
class BudgetStatus:
    """A budget as the budgets page shows it. Units are Decimal; times aware, team zone."""

    budget: Budget
    label: str
    units: Decimal
    ledger: Decimal
    pending: Decimal
    period_start: datetime
    resets_at: datetime
    resets: str

    @property
    def measure(self) -> str:
        """``units`` or ``money`` (``BudgetMeasure``): what ``units``, ``ledger`` and
        ``pending`` count."""
        return self.budget.measure

    def text(self, value: Decimal) -> str:
        """``value`` written in this budget's measure (``measure_text``)."""
        return measure_text(value, self.measure)

    def of_text(self, value: Decimal) -> str:
        """``value`` against the limit: ``"101 of 100 units"`` or ``"$1.01 of $1.00"``."""
        if self.measure == BudgetMeasure.MONEY:
            return f"{money_text(value)} of {money_text(self.units)}"
        return f"{units_text(value)} of {units_text(self.units)} units"

    @property
    def limit_text(self) -> str:
        """The limit in its measure, e.g. ``"1,000 units"`` or ``"$50.00"``."""
        return self.text(self.units)

    @property
    def ledger_text(self) -> str:
        """Charged this period, in the measure."""
        return self.text(self.ledger)

    @property
    def pending_text(self) -> str:
        """Reserved by tasks that can still be charged, in the measure."""
        return self.text(self.pending)

    @property
    def spent(self) -> Decimal:
        """Ledger + pending estimates: what ``budget_check`` compares with ``units``."""
        return self.ledger + self.pending

    @property
    def percent(self) -> int:
        """Spent as a whole percentage of the budget (0 when the budget is 0)."""
        if self.units <= 0:
            return 100 if self.spent > 0 else 0
        return int(self.spent * 100 / self.units)


def budget_status(*, budget: Budget, now: datetime | None = None) -> BudgetStatus:
    """Current spending of one budget (``BudgetStatus``)."""
    zone = team_zone(budget.team)
    start, end = period_bounds(period=budget.period, zone=zone, now=now)
    return BudgetStatus(
        budget=budget,
        label=budget_label(budget),
        units=budget.units,
        ledger=ledger_spent(budget=budget, start=start, end=end),
        pending=pending_units(budget=budget),
        period_start=start,
        resets_at=end,
        resets=resets_text(end, zone),
    )


def budget_statuses(*, budgets: list[Budget], now: datetime | None = None) -> list[BudgetStatus]:
    """``budget_status`` of every budget of ``budgets`` (all of one team), in a number of
    queries that does not grow with the budgets: one ledger sum per distinct period, grouped
    by member, and one sum of pending estimates, grouped by creator. The budgets page lists a
    cap per member; a query pair per budget made it slow for a large team."""
    if not budgets:
        return []
    team = budgets[0].team
    zone = team_zone(team)
    pending_by = {
        row["creator_id"]: _q(row["total"])
        for row in Task.objects.unfinished()
        .filter(team_id=team.pk)
        .values("creator_id")
        .annotate(total=Sum("estimated_units"))
    }
    windows: dict[str, tuple[datetime, datetime]] = {}
    ledger_by: dict[str, dict] = {}
    for period in {budget.period for budget in budgets}:
        start, end = period_bounds(period=period, zone=zone, now=now)
        windows[period] = (start, end)
        ledger_by[period] = {
            row["member_id"]: {"units": _q(row["sum_units"]), "money": _q(row["sum_money"])}
            for row in Deduction.objects.filter(
                team_id=team.pk, recorded_at__gte=start, recorded_at__lt=end
            )
            .values("member_id")
            .annotate(**_ledger_sums())
        }
    statuses = []
    for budget in budgets:
        start, end = windows[budget.period]
        key = "money" if budget.measure == BudgetMeasure.MONEY else "units"
        spent = {member: sums[key] for member, sums in ledger_by[budget.period].items()}
        if budget.member_id is None:
            ledger, pending = sum(spent.values(), ZERO), sum(pending_by.values(), ZERO)
        else:
            ledger = spent.get(budget.member_id, ZERO)
            pending = pending_by.get(budget.member_id, ZERO)
        pending = in_measure(pending, budget.measure)
        statuses.append(
            BudgetStatus(
                budget=budget,
                label=budget_label(budget),
                units=budget.units,
                ledger=ledger,
                pending=pending,
                period_start=start,
                resets_at=end,
                resets=resets_text(end, zone),
            )
        )
    return statuses


def team_budgets(*, team) -> list[Budget]:
    """The team's budgets: team-wide first (daily, weekly, monthly), then member caps."""
    order = {BudgetPeriod.DAILY: 0, BudgetPeriod.WEEKLY: 1, BudgetPeriod.MONTHLY: 2}
    budgets = list(Budget.objects.filter(team=team).select_related("team", "member"))
    budgets.sort(
        key=lambda b: (
            b.member_id is not None,
            b.member.get_username() if b.member_id else "",
            order.get(b.period, 9),
        )
    )
    return budgets


def _refusal_sentence(status: BudgetStatus, needed: Decimal) -> str:
    """One budget's part of a refusal: "Team monthly budget: 950 of 1,000 units spent; this
    task needs about 80. Resets …" (units) or "…: $9.90 of $10.00 spent; this task needs
    about $0.70. Resets …" (money)."""
    need = money_text(needed) if status.measure == BudgetMeasure.MONEY else units_text(needed)
    return (
        f"{status.label}: {status.of_text(status.spent)} spent; this task needs about {need}. "
        f"Resets {status.resets}."
    )


def budget_check(*, team, user, units: Decimal, now: datetime | None = None) -> None:
    """Raise ``BudgetExceeded`` if ``units`` (estimated Kling units) more would pass any
    budget of ``team``, or a cap of ``user`` in it, in the current period — naming every
    budget passed, each in its measure (a money budget compares ``units`` ×
    ``KLING_UNIT_PRICE``) with its reset moment.

    Call it inside the ``transaction.atomic()`` block that saves the queued task (with its
    ``estimated_units``): the team's budget rows are locked (``SELECT … FOR UPDATE`` on
    PostgreSQL; SQLite serialises writers), so two submissions at the same moment see each
    other and cannot overshoot together. Message example: "Team monthly budget: 950 of
    1,000 units spent; this task needs about 80. Resets 2026-12-01 00:00
    Europe/Paris. Monthly cap for alice: $9.90 of $10.00 spent; this task needs about
    $0.70. Resets 2026-12-01 00:00 Europe/Paris."
    """
    units = Decimal(units)
    scope = Q(member__isnull=True)
    if user is not None and getattr(user, "pk", None) is not None:
        scope |= Q(member_id=user.pk)
    qs = Budget.objects.filter(team=team).filter(scope)
    if transaction.get_connection().in_atomic_block:
        list(qs.select_for_update().values_list("pk", flat=True))
    budgets = [b for b in team_budgets(team=team) if b.member_id in (None, getattr(user, "pk", -1))]
    exceeded = []
    for status in budget_statuses(budgets=budgets, now=now):
        needed = in_measure(units, status.measure)
        if status.spent + needed > status.units:
            exceeded.append((status, needed))
    if exceeded:
        first, needed = exceeded[0]
        raise BudgetExceeded(
            " ".join(_refusal_sentence(s, n) for s, n in exceeded),
            budget=first.budget,
            spent=first.spent,
            needed=needed,
            resets_at=first.resets_at,
            exceeded=[s for s, _ in exceeded],
        )


# --- alerts and banners ------------------------------------------------------------------


def _team_admin_emails(team) -> list[str]:
    from klingweb.accounts.models import Membership, Role

    emails = (
        Membership.objects.filter(team=team, role__in=[Role.OWNER, Role.ADMIN])
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )
    return sorted(set(emails))


def budget_alerts_record(*, team, now: datetime | None = None) -> list[BudgetAlert]:
    """Record each 80/90/100 % threshold the team's budgets have reached this period, once
    each (``BudgetAlert`` is unique per budget, period start and threshold; a duplicate is
    skipped inside a savepoint). Spending here is the ledger only, in each budget's measure.
    No mail: safe to call inside the transaction that records a charge
    (``tasks_app.services.task_apply_remote`` does, so the banner shows the moment a
    threshold is crossed); ``budget_alerts_mail`` sends the e-mails after commit. Returns
    the alerts created. Queries: one when the team has no budget."""
    budgets = team_budgets(team=team)
    created: list[BudgetAlert] = []
    for status in budget_statuses(budgets=budgets, now=now):
        if status.units <= 0:
            continue
        for threshold in THRESHOLDS:
            if status.ledger * 100 < status.units * threshold:
                break
            try:
                with transaction.atomic():
                    alert = BudgetAlert.objects.create(
                        budget=status.budget,
                        period_start=status.period_start,
                        threshold=threshold,
                        spent=status.ledger,
                    )
            except IntegrityError:
                continue  # already raised this period
            created.append(alert)
    return created


def budget_alerts_mail(*, team, now: datetime | None = None) -> int:
    """E-mail the team's owners and admins about alerts not mailed yet (``emailed_at`` null):
    one mail per budget, naming its highest new threshold. Each budget's alerts are claimed
    first by a conditional update, so two workers never mail the same alert; in the same
    transaction the claimed alerts go to the ``KLINGWEB_BUDGET_ALERT_HOOKS`` (the API's
    ``budget.threshold`` webhooks: one event per threshold). Returns the number of mails
    attempted."""
    pending: dict[int, list[BudgetAlert]] = {}
    for alert in BudgetAlert.objects.filter(budget__team=team, emailed_at__isnull=True):
        pending.setdefault(alert.budget_id, []).append(alert)
    if not pending:
        return 0
    sent = 0
    budgets = [b for b in team_budgets(team=team) if b.pk in pending]
    for status in budget_statuses(budgets=budgets, now=now):
        alerts = pending[status.budget.pk]
        # The claim and the hooks' records (webhook deliveries) commit together: an alert
        # is announced exactly once, by the worker that claimed it.
        with transaction.atomic():
            claimed = BudgetAlert.objects.filter(
                pk__in=[a.pk for a in alerts], emailed_at__isnull=True
            ).update(emailed_at=timezone.now())
            if claimed:
                _run_alert_hooks(team, status, alerts)
        if not claimed:
            continue  # another worker mails them
        _alert_mail(team, status, max(a.threshold for a in alerts))
        sent += 1
    return sent


def _run_alert_hooks(team, status: BudgetStatus, alerts: list[BudgetAlert]) -> None:
    """Call each ``settings.KLINGWEB_BUDGET_ALERT_HOOKS`` entry (dotted path of a function
    taking ``team=``, ``status=`` (``BudgetStatus``) and ``alerts=`` (the newly claimed
    ``BudgetAlert`` rows of that budget, one per threshold)) in a savepoint: e.g. the API's
    ``budget.threshold`` webhook. A hook only records work for its own jobs (it must not
    wait on the network); a failing one is logged and never stops the mail."""
    from django.utils.module_loading import import_string

    for path in getattr(settings, "KLINGWEB_BUDGET_ALERT_HOOKS", ()):
        try:
            with transaction.atomic():
                import_string(path)(team=team, status=status, alerts=alerts)
        except Exception:
            log.exception("team %s: budget alert hook %s failed", team.pk, path)


def budget_alerts_check(*, team_pk: int, now: datetime | None = None) -> list[BudgetAlert]:
    """Record the thresholds reached (``budget_alerts_record``) and mail what was not mailed
    yet (``budget_alerts_mail``), for the team with primary key ``team_pk``. Runs as a job
    right after a task's charge commits, and from the periodic check. Returns the alerts
    created by this call (empty when nothing new)."""
    from klingweb.accounts.models import Team

    team = Team.objects.filter(pk=team_pk).first()
    if team is None:
        return []
    created = budget_alerts_record(team=team, now=now)
    budget_alerts_mail(team=team, now=now)
    return created


def budget_alerts_check_all() -> int:
    """``budget_alerts_check`` for every team that has a budget; returns alerts created."""
    team_pks = Budget.objects.values_list("team_id", flat=True).distinct()
    return sum(len(budget_alerts_check(team_pk=pk)) for pk in team_pks)


def _alert_mail(team, status: BudgetStatus, threshold: int) -> None:
    recipients = _team_admin_emails(team)
    if not recipients:
        return
    # One line whatever the team's name holds (send_mail refuses a header with a line break).
    subject = mail_subject(f"[Klingweb] {team.name}: {status.label} at {threshold} %")
    body = (
        f"{status.label} of team {team.name} has reached {threshold} %: "
        f"{status.of_text(status.ledger)} charged this period.\n"
        f"It resets {status.resets}.\n"
    )
    if threshold >= 100:
        body += "New tasks that would pass the budget are refused until then.\n"
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients)
    except Exception:  # a mail server hiccup must not undo the alert
        log.exception("budget alert mail for team %s failed", team.pk)


@dataclass(frozen=True)
class BudgetBanner:
    """One in-app banner line: ``message`` is ready to show; ``level`` "warning" or "error"."""

    label: str
    threshold: int
    spent: Decimal
    units: Decimal
    resets: str
    level: str
    message: str


def budget_banners(*, team, user=None, now: datetime | None = None) -> list[BudgetBanner]:
    """Banners for ``team`` pages: the highest alert of each budget in its current period
    (team budgets, plus ``user``'s own caps). Empty when no alert was raised this period."""
    budgets = [
        b
        for b in team_budgets(team=team)
        if b.member_id is None or (user is not None and b.member_id == getattr(user, "pk", None))
    ]
    if not budgets:
        return []
    alerts: dict[tuple[int, datetime], int] = {}
    for alert in BudgetAlert.objects.filter(budget__in=budgets):
        key = (alert.budget_id, alert.period_start)
        alerts[key] = max(alerts.get(key, 0), alert.threshold)
    banners = []
    for budget in budgets:
        zone = team_zone(team)
        start, end = period_bounds(period=budget.period, zone=zone, now=now)
        threshold = next((t for (pk, s), t in alerts.items() if pk == budget.pk and s == start), 0)
        if not threshold:
            continue
        status = budget_status(budget=budget, now=now)
        message = (
            f"{status.label}: {threshold} % reached ({status.of_text(status.ledger)}). "
            f"Resets {status.resets}."
        )
        banners.append(
            BudgetBanner(
                label=status.label,
                threshold=threshold,
                spent=status.ledger,
                units=status.units,
                resets=status.resets,
                level="error" if threshold >= 100 else "warning",
                message=message,
            )
        )
    return banners
