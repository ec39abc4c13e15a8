"""Rate limits for actions that send e-mail: password resets and invitations (issue 17).

``rate_exceeded(scope, key)`` counts one event of ``scope`` for ``key`` (an e-mail address,
a client IP) in a fixed window and says whether the limit is passed. Limits are
``settings.THROTTLE_RATES[scope] = (events, seconds)``. Counters live in the cache alias
``settings.THROTTLE_CACHE`` (Redis with ``REDIS_URL``, else a database table), shared by every
web process and machine; keys are SHA-256 digests, so no address is stored in clear.

The client's IP is ``client_ip(request)`` — the address django-axes uses for sign-in
lockouts (``klingweb.backends.client_ip``: ``REMOTE_ADDR``, or the trusted proxy's
``X-Forwarded-For`` entry when ``TRUSTED_PROXY_COUNT`` is set).
"""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest

#: Scopes of ``settings.THROTTLE_RATES``.
PASSWORD_RESET_ADDRESS = "password-reset-address"
PASSWORD_RESET_CLIENT = "password-reset-client"
INVITATION_ADDRESS = "invitation-address"
INVITATION_CLIENT = "invitation-client"


def client_ip(request: HttpRequest) -> str:
    """The client's IP address as the sign-in throttle sees it (``""`` if unknown)."""
    from klingweb.backends import client_ip as axes_client_ip

    return axes_client_ip(request) or ""


def rate_exceeded(scope: str, key: str) -> bool:
    """Count one event of ``scope`` for ``key`` (case-insensitive); True when this event is
    beyond ``settings.THROTTLE_RATES[scope]`` = ``(events, seconds)`` in the current window.

    Raises ``KeyError`` for an unknown scope.
    """
    limit, seconds = settings.THROTTLE_RATES[scope]
    window = int(time.time() // seconds)
    digest = hashlib.sha256(key.strip().lower().encode()).hexdigest()
    name = f"throttle:{scope}:{digest}:{window}"
    cache = caches[settings.THROTTLE_CACHE]
    cache.add(name, 0, timeout=seconds + 60)
    try:
        count = cache.incr(name)
    except ValueError:  # expired between add and incr
        cache.set(name, 1, timeout=seconds + 60)
        count = 1
    return count > limit


def rates_exceeded(*events: tuple[str, str]) -> bool:
    """Count every ``(scope, key)`` event (all of them, even after one is over its limit);
    True when any is over its limit."""
    return any([rate_exceeded(scope, key) for scope, key in events])


def retry_minutes(*scopes: str) -> int:
    """Whole minutes of the longest window among ``scopes`` (for "try again in N minutes")."""
    return max(-(-settings.THROTTLE_RATES[s][1] // 60) for s in scopes)
