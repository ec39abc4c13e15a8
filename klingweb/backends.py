"""Authentication backends: django-axes' lockout check (sign-in throttling, issue 9).

Its own module because ``klingweb.security`` is imported while logging is configured (the
error reporter), before the apps (and axes) are loaded.
"""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend


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
