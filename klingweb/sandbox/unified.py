"""Parameters of the unified task queries ``GET /tasks`` and ``POST /tasks``
(KLING_API_2026.md §3; the 3.0 Turbo page's "Query Task (By task ID)" / "(By Cursor)").

Decisions where the docs are silent:

- **Batch size of ``GET /tasks``**: not documented. The sandbox takes at most
  ``SandboxConfig.tasks_batch_max`` ids (default 100, the default page size of
  ``POST /tasks``); more is a 1201 naming the parameter, so a client that sends bigger
  batches finds out here rather than against the vendor.
- Empty entries (``a,,b``) are ignored; an id asked twice is answered once; ids the
  account does not have (and legacy tasks) are left out of ``data`` rather than refused.
- ``POST /tasks``: ``count`` is the number of items in this page; items are newest first;
  ``next_cursor`` is ``""`` when ``has_more`` is false. A cursor carries the time window
  (times in the body are then ignored, as documented); filters come from each request.
- ``start_time``/``end_time`` may be JSON integers or strings of digits (``long`` on the
  Turbo pages, ``string`` elsewhere).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from typing import Any

from .errors import invalid

LIMIT_DEFAULT = 100
LIMIT_MAX = 500
WINDOW_MS = 30 * 24 * 3600 * 1000  # default start_time = end_time - 30 days
STATUSES = ("submitted", "processing", "succeeded", "failed")
PRODUCT_TYPES = ("video", "image", "try_on")

Json = dict[str, Any]


def parse_ids(query: dict[str, list[str]], batch_max: int) -> tuple[list[str], bool]:
    """``GET /tasks`` query string (``parse_qs`` shape) → ``(ids, external)``. Exactly one
    of ``task_ids`` / ``external_task_ids`` (comma-separated) must be given, holding 1 to
    ``batch_max`` ids. Raises ``ApiError`` 1201 naming the parameter."""
    has_ids = bool(query.get("task_ids"))
    has_external = bool(query.get("external_task_ids"))
    if has_ids and has_external:
        raise invalid("task_ids/external_task_ids", "give task_ids or external_task_ids, not both")
    if not has_ids and not has_external:
        raise invalid("task_ids/external_task_ids", "one of them is required")
    name = "task_ids" if has_ids else "external_task_ids"
    ids = [part.strip() for value in query[name] for part in value.split(",") if part.strip()]
    if not ids:
        raise invalid(name, "holds no id")
    if len(ids) > batch_max:
        raise invalid(name, f"at most {batch_max} ids per request (got {len(ids)})")
    return ids, not has_ids


@dataclass(frozen=True)
class PageQuery:
    """A checked ``POST /tasks`` body: the window (Unix ms), the cursor position
    (``before_seq``), ``limit`` and the filters (``None`` = no filter on that key)."""

    start_ms: int
    end_ms: int
    before_seq: int | None
    limit: int
    statuses: set[str] | None
    product_types: set[str] | None


def _time(body: Json, name: str) -> int | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise invalid(name, "must be a Unix time in ms")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise invalid(name, f"must be a Unix time in ms (got {value!r})")
    return value


def encode_cursor(start_ms: int, end_ms: int, before_seq: int) -> str:
    """An opaque ``next_cursor`` for the rest of a window."""
    raw = json.dumps({"s": start_ms, "e": end_ms, "b": before_seq}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(value: Any) -> tuple[int, int, int]:
    if not isinstance(value, str):
        raise invalid("cursor", "must be a string (the previous next_cursor)")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        data = json.loads(raw)
        return int(data["s"]), int(data["e"]), int(data["b"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise invalid("cursor", "is not a next_cursor this account was given")


def parse_page(body: Json, *, now_ms: int | None = None) -> PageQuery:
    """Check a ``POST /tasks`` body: ``start_time``/``end_time`` (ms; defaults now − 30 days
    and now; start before end), ``cursor`` (overrides the times), ``limit`` 1–500 (default
    100), ``filters[]{key: status|product_type, values[]}``. Raises ``ApiError`` 1201
    naming the field."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    limit = body.get("limit")
    if limit is None:
        limit = LIMIT_DEFAULT
    elif isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIMIT_MAX:
        raise invalid("limit", f"must be an integer 1–{LIMIT_MAX} (got {limit!r})")
    statuses: set[str] | None = None
    products: set[str] | None = None
    filters = body.get("filters")
    if filters not in (None, []):
        if not isinstance(filters, list):
            raise invalid("filters", "must be a list of {key, values}")
        for i, item in enumerate(filters):
            key = item.get("key") if isinstance(item, dict) else None
            values = item.get("values") if isinstance(item, dict) else None
            allowed = {"status": STATUSES, "product_type": PRODUCT_TYPES}.get(key)
            if allowed is None:
                raise invalid(f"filters[{i}].key", f"must be status or product_type (got {key!r})")
            if not isinstance(values, list) or not values:
                raise invalid(f"filters[{i}].values", "must be a non-empty list")
            for value in values:
                if value not in allowed:
                    raise invalid(
                        f"filters[{i}].values",
                        f"{key} values are {', '.join(allowed)} (got {value!r})",
                    )
            if key == "status":
                statuses = (statuses or set()) | set(values)
            else:
                products = (products or set()) | set(values)
    cursor = body.get("cursor")
    if cursor not in (None, ""):
        start, end, before = _decode_cursor(cursor)
        return PageQuery(start, end, before, limit, statuses, products)
    end = _time(body, "end_time")
    end = now_ms if end is None else end
    start = _time(body, "start_time")
    start = end - WINDOW_MS if start is None else start
    if start >= end:
        raise invalid("start_time", "must be earlier than end_time")
    return PageQuery(start, end, None, limit, statuses, products)
