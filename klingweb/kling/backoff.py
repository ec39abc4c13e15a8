"""One backoff formula for every delay the portal computes before trying again.

Used by the client's query retries, the submission retries of queued tasks, the poller's
error backoff and the kept-media sweep, so "how long do we wait after a failure?" has one
answer: exponential growth from ``base`` seconds, capped at ``cap`` seconds, multiplied by a
random factor drawn from ``jitter`` (so many clients that failed together do not retry
together). Plain Python: no Django import (the client package's rule).
"""

from __future__ import annotations

import random

__all__ = ["backoff_delay"]


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: tuple[float, float] = (1.0, 1.0),
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before try number ``attempt`` (1-based: the first retry is 1).

    ``min(cap, base * 2 ** (attempt - 1)) * uniform(*jitter)``; ``attempt`` below 1 counts as
    1 and the exponent stops growing at 30. ``base`` and ``cap`` are seconds (floats, ≥ 0);
    ``jitter`` is the (low, high) range of the random factor: ``(0, 1)`` is "full jitter",
    ``(1, 1)`` none. ``rng`` defaults to the module's shared generator. Raises
    ``ValueError`` for a negative ``base``/``cap`` or a jitter range with low > high or < 0.
    """
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be ≥ 0 seconds.")
    low, high = jitter
    if low < 0 or low > high:
        raise ValueError("jitter must be a (low, high) range with 0 ≤ low ≤ high.")
    exponent = min(max(int(attempt), 1) - 1, 30)
    ceiling = min(float(cap), float(base) * (2**exponent))
    factor = low if low == high else (rng or random).uniform(low, high)
    return ceiling * factor
