"""What a sandbox task costs, in Kling credit units (KLING_API.md §4 ``final_unit_deduction``).

``COST_TABLE[family][mode][duration]`` is the unit count as a decimal string; ``"*"`` stands for
"any" (families without a mode, or without a duration choice). Families are the client's
family keys (``multi_shot``, ``avatar``, ``video_extend``, ``text2video``, ``image2video``,
``element``). The numbers are the sandbox's own, shaped like the vendor's price list (pro
costs more than std, 10 s twice 5 s); they are not the vendor's prices.
"""

from __future__ import annotations

from decimal import Decimal

COST_TABLE: dict[str, dict[str, dict[str, str]]] = {
    "text2video": {"std": {"5": "1", "10": "2"}, "pro": {"5": "3.5", "10": "7"}},
    "image2video": {"std": {"5": "1", "10": "2"}, "pro": {"5": "3.5", "10": "7"}},
    "avatar": {"std": {"*": "4"}, "pro": {"*": "8"}},
    "video_extend": {"std": {"*": "1"}, "pro": {"*": "3.5"}},
    "multi_shot": {"*": {"*": "0.5"}},
    "element": {"*": {"*": "0.2"}},
}


def cost_for(family: str, mode: str | None = None, duration: str | None = None) -> Decimal:
    """Units a finished task of ``family`` costs with ``mode`` (std|pro) and ``duration``
    ("5"|"10" for text2video/image2video). Unknown combinations fall back to ``"*"``
    entries, then to the family's first entry; raises ``KeyError`` for an unknown family."""
    by_mode = COST_TABLE[family]
    by_duration = by_mode.get(mode or "*") or by_mode.get("*") or next(iter(by_mode.values()))
    value = by_duration.get(duration or "*") or by_duration.get("*")
    if value is None:
        value = next(iter(by_duration.values()))
    return Decimal(value)
