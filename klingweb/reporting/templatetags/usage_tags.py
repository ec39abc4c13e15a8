"""Template filters of the usage reports.

Plain formats rather than ``floatformat``/``intcomma``/``date``: a report's tables have
hundreds of cells, and these run in a few microseconds each, against tens for the localising
filters. The portal is in English (``LANGUAGE_CODE``, no locale middleware): units and counts
group thousands with a comma, days read "Wed 1 Oct"."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal

from django import template
from django.utils.safestring import SafeString, mark_safe

from tasks_app.prices import money_text, number_text

register = template.Library()


@register.filter
def usage_units(value: Decimal | None) -> str:
    """Kling credit units for reading, the portal's one number format
    (``tasks_app.prices.number_text``): thousands grouped, no trailing zeros
    (``Decimal("12345.500")`` → ``12,345.5``; ``-1.250`` → ``-1.25``); ``–`` for None."""
    if value is None:
        return "–"
    return number_text(value)


@register.filter
def usage_money(value: Decimal | None) -> str:
    """Money in ``settings.KLING_CURRENCY`` (``tasks_app.prices.money_text``: ``$1,234.56``);
    ``–`` for None."""
    if value is None:
        return "–"
    return money_text(value)


@register.filter
def usage_count(value: int | None) -> str:
    """A count with thousands grouped (``4032`` → ``4,032``); ``–`` for None."""
    if value is None:
        return "–"
    return f"{value:,}"


@register.filter
def usage_cells(values: Iterable[Decimal | None]) -> SafeString:
    """A run of ``<td class="num">`` cells, one per value, formatted with ``usage_units``:
    one template node for a table row of numbers (the per-day table has days × families).
    Safe without escaping: ``usage_units`` writes only digits, ``,``, ``.``, ``-`` and ``–``."""
    return mark_safe("".join(f'<td class="num">{usage_units(v)}</td>' for v in values))  # noqa: S308


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@register.filter
def usage_day(day: dt.date) -> str:
    """A day of a report, short: ``Wed 1 Oct`` (as ``date:"D j M"`` in English)."""
    return f"{_WEEKDAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]}"
