"""Template filters of the usage reports."""

from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def usage_units(value: Decimal | None) -> str:
    """Kling credit units for reading: thousands grouped, no trailing zeros
    (``Decimal("12345.500")`` → ``12,345.5``; ``-1.250`` → ``-1.25``); ``–`` for None.

    A plain format, far cheaper than ``floatformat`` in tables of hundreds of cells."""
    if value is None:
        return "–"
    text = f"{value:,f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text
