"""Team budgets: cost estimates, the check before a task is queued, and alerts.

Interface used by the task forms (tasks issue); the background-cluster issue fills in the
bodies.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings


class BudgetExceeded(Exception):
    """A task would pass a budget. ``str(exc)`` names the budget and when it resets."""


def estimate_units(*, family: str, params: dict) -> Decimal:
    """Estimated units of Kling credit for a task of ``family`` with request ``params``,
    from ``settings.TASK_COST_ESTIMATES`` (family × mode; × duration/5 for videos)."""
    table = settings.TASK_COST_ESTIMATES.get(family, {})
    mode = params.get("mode") or "std"
    base = table.get(mode, table.get("*", Decimal("0")))
    duration = Decimal(str(params.get("duration") or "5"))
    return base * (duration / Decimal("5")) * settings.TASK_COST_MULTIPLIER


def budget_check(*, team, user, units: Decimal) -> None:
    """Raise ``BudgetExceeded`` if ``units`` more would pass a budget of ``team`` or of
    ``user`` in it this period."""


def budget_alerts_check(*, team_pk: int) -> None:
    """Record (and e-mail admins about) each 80/90/100 % threshold reached this period."""
