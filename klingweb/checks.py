"""System checks of the project (``manage.py check --deploy``), issue 17.

- ``klingweb.E001`` (deploy): ``EMAIL_BACKEND`` delivers no mail (console, locmem, file,
  dummy). The console backend prints password-reset and invitation links into the log, so
  whoever reads the log can take over any account. Production mode refuses these at start-up
  (``klingweb.settings``); this check also catches a deployment run without that flag.
- ``klingweb.W002`` (deploy): the portal trusts a TLS proxy (``SECURE_PROXY_SSL_HEADER``,
  ``BEHIND_TLS_PROXY=1``) but not its ``X-Forwarded-For`` (``TRUSTED_PROXY_COUNT=0``): every
  client then has the proxy's address, and sign-in lockouts and e-mail rate limits apply to
  all of them at once.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def email_backend_delivers(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """``klingweb.E001`` when ``settings.EMAIL_BACKEND`` is a backend that delivers nothing."""
    backend = settings.EMAIL_BACKEND
    if backend not in settings.NON_DELIVERING_EMAIL_BACKENDS:
        return []
    return [
        Error(
            f"EMAIL_BACKEND is {backend}: e-mails are not delivered, and the console backend "
            "prints password-reset and invitation links into the log.",
            hint="Set EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend and the "
            "EMAIL_* variables (README, Production).",
            id="klingweb.E001",
        )
    ]


@register(Tags.security, deploy=True)
def proxy_client_address(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """``klingweb.W002`` when a TLS proxy is trusted but ``TRUSTED_PROXY_COUNT`` is 0."""
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None) and not settings.TRUSTED_PROXY_COUNT:
        return [
            Warning(
                "BEHIND_TLS_PROXY is on but TRUSTED_PROXY_COUNT is 0: every client has the "
                "proxy's address, so sign-in lockouts and e-mail rate limits hit all clients.",
                hint="Set TRUSTED_PROXY_COUNT to the number of proxies that append to "
                "X-Forwarded-For (1 for one nginx), as README's Production section says.",
                id="klingweb.W002",
            )
        ]
    return []
