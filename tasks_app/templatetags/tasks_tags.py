"""Template helpers of the task pages: elapsed time, row thumbnails, units and money."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import template
from django.utils import timezone

from tasks_app.prices import ESTIMATE_FIELDS, estimate_text, money_text, number_text

register = template.Library()


def _duration_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


@register.filter
def elapsed(task: Any) -> str:
    """How long a task has run: since creation until now (in flight) or until it finished."""
    end = task.finished_at if task.finished_at else timezone.now()
    return _duration_text((end - task.created_at).total_seconds())


@register.filter
def units(value: Decimal | None) -> str:
    """Kling credit units for display, the portal's one number format
    (``tasks_app.prices.number_text``): trailing zeros trimmed, thousands grouped
    (``12.5``, ``3``, ``0.3333``, ``1,234.5``), or ``—`` when unknown."""
    return number_text(value)


@register.filter
def money(value: Decimal | None, code: str = "") -> str:
    """Money for display (``tasks_app.prices.money_text``): ``$0.56``, ``12.5 CHF``; ``code``
    the ISO currency (default ``settings.KLING_CURRENCY``); ``—`` when unknown."""
    return money_text(value, code or None)


@register.simple_tag
def estimate_fields() -> str:
    """The fields the create form's estimate sends (``hx-params``), comma-separated."""
    return ",".join(ESTIMATE_FIELDS)


@register.filter
def estimate(value: Decimal | None) -> str:
    """An estimate in units with its money: ``about 4 units ≈ $0.56`` (``""`` for None)."""
    return estimate_text(value)


@register.simple_tag
def task_thumb(task: Any) -> dict | None:
    """The first result of a succeeded task for its list row: ``{"kind", "url"}`` or None.

    A kept copy when there is one, else the vendor URL while the vendor still has it.
    """
    if task.status != "succeed":
        return None
    from tasks_app.media import media_for_display

    for item in media_for_display(task):
        if item.url and not item.is_watermarked:
            return {"kind": item.kind, "url": item.url}
    return None


@register.filter
def input_group(form: Any, name: str) -> dict | None:
    """The file-or-URL input ``name`` of a create form (see ``TaskForm.input_group``)."""
    for spec in getattr(form, "inputs", ()):
        if spec.name == name:
            return form.input_group(spec)
    return None


@register.filter
def elapsed_seconds(task: Any) -> int:
    """Whole seconds a task has run so far (see ``elapsed``): the start of the client-side
    counter of an unfinished task (static/js/tasks.js, ``data-elapsed``)."""
    end = task.finished_at if task.finished_at else timezone.now()
    return max(0, int((end - task.created_at).total_seconds()))


@register.filter
def media_label(item: Any) -> str:
    """A result's name for people, counted from 1 (the vendor's ``index`` counts from 0):
    ``Video 1``, ``Image 2``; an AI multi-shot image's ``url_N`` variant adds ``· view N``
    (``Image 1 · view 3``). ``item``: a ``tasks_app.media.MediaDisplay``."""
    kind = "Video" if item.kind == "video" else "Image"
    text = f"{kind} {int(item.index) + 1}"
    variant = str(item.variant or "")
    if variant.startswith("url_") and variant[4:].isdigit():
        text += f" · view {variant[4:]}"
    return text
