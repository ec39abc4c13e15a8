"""The Kling API bearer token: an HS256 JWT, cached and re-signed before it expires.

KLING_API.md §1: header ``{"alg": "HS256", "typ": "JWT"}``, signed with the account's
secret key; claims ``iss`` = access key, ``exp`` = now + 1800 s, ``nbf`` = now − 5 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import jwt

TOKEN_TTL_SECONDS = 1800
TOKEN_REFRESH_MARGIN_SECONDS = 300
TOKEN_NBF_SKEW_SECONDS = 5


def token_sign(
    *,
    access_key: str,
    secret_key: str,
    now: float,
    ttl: int = TOKEN_TTL_SECONDS,
    nbf_skew: int = TOKEN_NBF_SKEW_SECONDS,
) -> str:
    """Return a freshly signed Kling JWT (a compact JWS string).

    ``now``: Unix time in seconds; claims ``iss`` = ``access_key``, ``exp`` = now + ``ttl``
    (1800 s), ``nbf`` = now − ``nbf_skew`` (5 s), whole seconds. HS256 with ``secret_key``.
    KLING_API.md §1.
    """
    issued = int(now)
    payload = {"iss": access_key, "exp": issued + ttl, "nbf": issued - nbf_skew}
    return jwt.encode(payload, secret_key, algorithm="HS256", headers={"typ": "JWT"})


class TokenSigner:
    """Hands out one cached Kling JWT per access key, re-signed ``refresh_margin`` early.

    ``token()`` returns the cached token while it has more than ``refresh_margin`` (300 s)
    of its ``ttl`` (1800 s) left, and signs a new one otherwise; ``token(force=True)`` always
    signs a new one (the client does this after a 1004 "token expired" / 1003 "not yet
    valid" answer). Safe to share between threads: one lock guards the cache.

    Claims are stamped from ``clock`` (wall clock, Unix seconds). How long the cached token
    stays in use is measured on ``monotonic`` (``time.monotonic``) so that a wall-clock jump
    cannot stretch a token's life on our side; if the wall clock was wrong when a token was
    signed, the vendor answers 1003/1004 and the client re-signs once.
    """

    def __init__(
        self,
        *,
        access_key: str,
        secret_key: str,
        ttl: int = TOKEN_TTL_SECONDS,
        refresh_margin: int = TOKEN_REFRESH_MARGIN_SECONDS,
        nbf_skew: int = TOKEN_NBF_SKEW_SECONDS,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not access_key or not secret_key:
            raise ValueError("A Kling access key and secret key are both required.")
        self.access_key = access_key
        self._secret_key = secret_key
        self.ttl = ttl
        self.refresh_margin = refresh_margin
        self.nbf_skew = nbf_skew
        self.clock = clock
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._token: str | None = None
        self._use_until = 0.0  # time.monotonic() deadline

    def token(self, *, force: bool = False) -> str:
        """Return a valid bearer token (the JWT without the ``Bearer`` prefix)."""
        with self._lock:
            if force or self._token is None or self.monotonic() >= self._use_until:
                self._token = token_sign(
                    access_key=self.access_key,
                    secret_key=self._secret_key,
                    now=self.clock(),
                    ttl=self.ttl,
                    nbf_skew=self.nbf_skew,
                )
                self._use_until = self.monotonic() + max(0, self.ttl - self.refresh_margin)
            return self._token

    def __repr__(self) -> str:
        return f"TokenSigner(access_key={self.access_key!r})"
