"""Sign-in throttling (django-axes, issues 9 and 17): the backend, the handler, the client IP.

Its own module because ``klingweb.security`` is imported while logging is configured (the
error reporter), before the apps (and axes) are loaded.

- ``client_ip``: ``settings.AXES_CLIENT_IP_CALLABLE``. django-ipware reads the client's
  address with axes' ``AXES_IPWARE_*`` settings: ``REMOTE_ADDR`` alone by default; with
  ``TRUSTED_PROXY_COUNT=N`` the N-th ``X-Forwarded-For`` entry from the right (the one the
  proxy next to the portal appended; entries a client sends itself are further left).
- ``PortalAxesHandler``: ``settings.AXES_HANDLER``. Locks a (username, IP) pair after
  ``AXES_FAILURE_LIMIT`` failures, never a username alone, so nobody can lock a person out by
  name from elsewhere; and, per IP, cools off an address with ``AXES_IP_FAILURE_LIMIT``
  failures over any usernames (password spraying). Both for ``AXES_COOLOFF_TIME``.
- ``RequestAxesBackend``: the lockout check in ``AUTHENTICATION_BACKENDS``.
"""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.conf import settings  # Django's settings, with axes' defaults filled in
from axes.handlers.database import AxesDatabaseHandler
from django.db.models import Sum
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """The client's IP address (text) as django-ipware finds it with the ``AXES_IPWARE_*``
    settings; ``REMOTE_ADDR`` when the configured header is missing or unusable (a request
    that did not come through the proxy). None only without any address."""
    from ipware import get_client_ip

    address, _routable = get_client_ip(
        request,
        proxy_order=settings.AXES_IPWARE_PROXY_ORDER,
        proxy_count=settings.AXES_IPWARE_PROXY_COUNT,
        proxy_trusted_ips=settings.AXES_IPWARE_PROXY_TRUSTED_IPS,
        request_header_order=settings.AXES_IPWARE_META_PRECEDENCE_ORDER,
        strict=False,
    )
    return address or request.META.get("REMOTE_ADDR") or None


class PortalAxesHandler(AxesDatabaseHandler):
    """django-axes' database handler plus a per-IP cool-off.

    A request is locked when its (username, IP) pair has ``AXES_FAILURE_LIMIT`` failures
    (axes' own rule, ``AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]``) or when its
    IP has ``AXES_IP_FAILURE_LIMIT`` failures summed over every username, both within
    ``AXES_COOLOFF_TIME``. The answer is the same lockout page (HTTP 429).
    """

    def ip_failures(self, request: HttpRequest) -> int:
        """Failed sign-ins from the request's IP within the cool-off, over all usernames."""
        from axes.attempts import get_cool_off_threshold
        from axes.models import AccessAttempt

        ip = getattr(request, "axes_ip_address", None)
        if not ip:
            return 0
        total = AccessAttempt.objects.filter(
            ip_address=ip, attempt_time__gte=get_cool_off_threshold(request)
        ).aggregate(n=Sum("failures_since_start"))["n"]
        return total or 0

    def ip_cooling_off(self, request: HttpRequest) -> bool:
        """True when the request's IP has reached ``AXES_IP_FAILURE_LIMIT`` failures."""
        return self.ip_failures(request) >= settings.AXES_IP_FAILURE_LIMIT

    def is_locked(self, request, credentials: dict | None = None) -> bool:
        """The pair's lock (axes) or the IP's cool-off."""
        return super().is_locked(request, credentials) or self.ip_cooling_off(request)

    def user_login_failed(self, sender, credentials: dict, request=None, **kwargs: Any):
        """Record the failure (axes); lock the request out when its IP reached the limit."""
        super().user_login_failed(sender, credentials, request=request, **kwargs)
        if request is None or getattr(request, "axes_locked_out", False):
            return
        if self.ip_cooling_off(request):
            request.axes_locked_out = True
            request.axes_credentials = credentials


class RequestAxesBackend(AxesStandaloneBackend):
    """django-axes' lockout check for every sign-in that comes with a request.

    ``authenticate()`` without a request (``Client.login`` in tests, shell scripts) is not
    a sign-in from the web, so it is not throttled, instead of failing with
    ``AxesBackendRequestParameterRequired``. Put it first in ``AUTHENTICATION_BACKENDS``.
    """

    def authenticate(self, request, username=None, password=None, **kwargs: Any):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
