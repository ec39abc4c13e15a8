"""What a sandbox task costs: units from the published price table, and money for cash
accounts (KLING_API_2026.md §7, §8; the table and its gaps are in ``prices``).

A legacy task is priced from its validated request facts (``info``: ``model_name``,
``mode``, ``duration``, ``sound``, the avatar's output length); a new-design task from its
``info["price"]`` = ``(model row, variant, resolution)`` and its output seconds.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .prices import (
    LEGACY_MODEL_ROWS,
    MODE_RESOLUTIONS,
    decimal_text,
    per_call,
    usd,
    video_rate,
)

#: Seconds a video extension is billed for (see ``prices``).
EXTEND_BILLED_SECONDS = Decimal(5)
#: Seconds an avatar video lasts (and is billed for) when its audio length is unknown
#: (``audio_id`` or an audio URL, which the sandbox does not fetch).
AVATAR_DEFAULT_SECONDS = Decimal("5.0")


def legacy_units(family: str, info: dict[str, Any], output_seconds: Decimal | None) -> Decimal:
    """Units a finished legacy task of ``family`` costs.

    - ``text2video``/``image2video``: the model row's rate for ``mode`` (std → 720p,
      pro → 1080p, 4k) and ``sound`` (``on`` → native audio) × the requested ``duration``;
    - ``avatar``: 0.4 / 0.8 per s (std / pro) × ``output_seconds``;
    - ``video_extend``: the old-model row × 5 s;
    - ``multi_shot``, ``element``: per call.
    Raises ``KeyError`` for a family or combination without a price.
    """
    if family in ("multi_shot", "element"):
        return per_call(family)
    resolution = MODE_RESOLUTIONS[info.get("mode") or "std"]
    if family == "avatar":
        return video_rate("avatar", "off", resolution) * (output_seconds or AVATAR_DEFAULT_SECONDS)
    row = LEGACY_MODEL_ROWS[info.get("model_name") or "kling-v1"]
    if family == "video_extend":
        return video_rate(row, "off", resolution) * EXTEND_BILLED_SECONDS
    variant = "native" if info.get("sound") == "on" else "off"
    return video_rate(row, variant, resolution) * Decimal(info.get("duration") or "5")


def new_design_units(info: dict[str, Any], output_seconds: Decimal) -> Decimal:
    """Units a finished new-design task costs: ``info["price"]`` = ``(model row, variant,
    resolution)`` → units per s × ``output_seconds`` (motion control is billed on output
    seconds too). Raises ``KeyError`` where the table has no figure."""
    model, variant, resolution = info["price"]
    return video_rate(model, variant, resolution) * output_seconds


def cash_figures(units: Decimal, discount: float) -> tuple[str, str]:
    """``(charged, list_price)`` in USD as decimal strings for ``units`` video units on a
    cash account: list price = units × 0.14, charged = list price × ``discount``."""
    list_price = usd(units)
    charged = list_price * Decimal(str(discount))
    return decimal_text(charged), decimal_text(list_price)
