"""Redaction of secrets in log lines (and error reports, through ``klingweb.security``).

``redact(text)`` replaces callback tokens (``/kling/callback/<token>/``), the tokens of
password-reset and invitation links (``/accounts/password/reset/<uidb64>/<token>/``,
``/accounts/invitations/<token>/``: whoever reads them takes over the account or the
invitation), JWTs, ``Bearer`` credentials and the values of the secret settings
(``SECRET_SETTINGS``) by ``[redacted]``.
``RedactingFilter`` applies it to log records; ``settings.LOGGING`` attaches it to the console
handler and to ``django.request``/``django.server``, and ``klingweb.wsgi`` to gunicorn's
access log (request paths of callbacks carry their token).

Imports nothing but ``django.conf.settings``: logging is configured before the apps load.
"""

from __future__ import annotations

import logging
import re

from django.conf import settings

#: A JSON Web Token (header and payload are Base64url JSON objects, so both start "eyJ").
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
#: The token of a callback URL (``/kling/callback/<token>/``, ``tasks_app.callbacks``).
CALLBACK_PATH_RE = re.compile(r"(/kling/callback/)[^/\s?#\"'<>]+")
#: The token of a password-reset link (``/accounts/password/reset/<uidb64>/<token>/``).
RESET_PATH_RE = re.compile(r"(/accounts/password/reset/[^/\s?#\"'<>]+/)[^/\s?#\"'<>]+")
#: The token of an invitation link (``/accounts/invitations/<token>/``).
INVITATION_PATH_RE = re.compile(r"(/accounts/invitations/)[^/\s?#\"'<>]+")
#: An ``Authorization: Bearer <credential>`` value.
BEARER_RE = re.compile(r"(Bearer\s+)[^\s\"',;<>]+", re.IGNORECASE)
REDACTED = "[redacted]"

#: Settings whose values are secrets: never printed, whatever their form.
SECRET_SETTINGS = (
    "SECRET_KEY",
    "KLING_SECRET_KEY",
    "KLING_API_KEY",
    "KLING_WEBHOOK_SECRET",
    "FERNET_KEYS",
)
_MIN_SECRET_LENGTH = 8  # shorter values would redact ordinary words

log = logging.getLogger(__name__)


def _configured_secrets() -> list[str]:
    found: list[str] = []
    if not settings.configured:
        return found
    for name in SECRET_SETTINGS:
        value = getattr(settings, name, None)
        values = value if isinstance(value, list | tuple) else [value]
        found += [v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET_LENGTH]
    return sorted(found, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with callback, password-reset and invitation tokens, JWTs, Bearer
    credentials and configured secrets (``SECRET_SETTINGS``) replaced by ``[redacted]``."""
    if not text:
        return text
    for secret in _configured_secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = JWT_RE.sub(REDACTED, text)
    text = BEARER_RE.sub(rf"\g<1>{REDACTED}", text)
    text = RESET_PATH_RE.sub(rf"\g<1>{REDACTED}", text)
    text = INVITATION_PATH_RE.sub(rf"\g<1>{REDACTED}", text)
    return CALLBACK_PATH_RE.sub(rf"\g<1>{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and traceback text) through ``redact``; never drops."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_redaction(*names: str) -> None:
    """Attach ``RedactingFilter`` to the loggers ``names`` (for loggers configured outside
    Django's ``LOGGING``, e.g. gunicorn's ``gunicorn.access``)."""
    for name in names:
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in target.filters):
            target.addFilter(RedactingFilter())
