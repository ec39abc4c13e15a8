"""Creating, checking and revoking team API keys.

Key format: ``kw_<prefix>_<secret>`` — ``prefix`` 8 random hex characters (unique, looked
up by index), ``secret`` 43 URL-safe characters from ``secrets.token_urlsafe(32)`` (256
bits). Only the SHA-256 of the whole key is stored and compared with
``hmac.compare_digest`` (constant time). Why SHA-256 and not a password hasher (PBKDF2,
Argon2): those slow hashers exist to make guessing a *low-entropy* password expensive; a
256-bit random secret cannot be guessed, so the slow hash would only add ~0.3 s to every API
request without adding safety (the same reasoning GitHub and Stripe tokens follow).

A key acts for its creator: each request re-reads the creator's membership of the key's
team, so a member who leaves stops every key they made (401), and one demoted to viewer
keeps only reading (403 on writes).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from klingweb.accounts.models import Membership, Team
from klingweb.api.models import ApiKey, ApiKeyScope

KEY_PREFIX = "kw_"
#: ``last_used_at`` is written at most this often per key (no write on every request).
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyInvalid(Exception):
    """The bearer is no key, an unknown key, a revoked key, or its creator has left the
    team: HTTP 401. ``str(exc)`` says which, without revealing another team's data."""


@dataclass(frozen=True)
class ApiCaller:
    """Who an API request acts as: the key, its team and its creator's membership.

    ``can_write``: the key's scope is ``write`` and the creator is a member, admin or owner.
    """

    api_key: ApiKey
    team: Team
    membership: Membership

    @property
    def user(self) -> Any:
        """The member the key acts for (tasks are attributed to them)."""
        return self.membership.user

    @property
    def can_write(self) -> bool:
        """True when the key may create tasks (see the class docstring)."""
        return self.api_key.scope == ApiKeyScope.WRITE and self.membership.can_write


def key_hash(raw: str) -> str:
    """SHA-256 hex digest of the whole key text."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def api_key_create(*, team: Team, user: Any, name: str, scope: str) -> tuple[ApiKey, str]:
    """Create a key of ``team`` acting for ``user`` (who must be a member); return the row
    and the key text — the only time the text exists. ``scope``: an ``ApiKeyScope`` value.

    Raises ``ValueError`` when ``user`` is not a member of ``team``, or ``scope``/``name``
    is invalid. The caller decides who may create keys (team admins; operators).
    """
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValueError("Give the key a name of 1 to 100 characters.")
    if scope not in ApiKeyScope.values:
        raise ValueError(f"Scope must be one of {', '.join(ApiKeyScope.values)}.")
    if not Membership.objects.filter(team=team, user=user).exists():
        raise ValueError(f"{user} is not a member of {team}.")
    with transaction.atomic():
        while True:
            prefix = secrets.token_hex(4)
            if not ApiKey.objects.filter(prefix=prefix).exists():
                break
        raw = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        key = ApiKey.objects.create(
            team=team,
            created_by=user,
            name=name,
            scope=scope,
            prefix=prefix,
            last4=raw[-4:],
            secret_hash=key_hash(raw),
        )
    return key, raw


def api_key_revoke(*, api_key: ApiKey) -> bool:
    """Revoke ``api_key`` now; False if it was already revoked (nothing changes)."""
    now = timezone.now()
    changed = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
    if changed:
        api_key.revoked_at = now
    return bool(changed)


def api_key_authenticate(raw: str) -> ApiCaller:
    """The caller of a request bearing key ``raw``; raises ``ApiKeyInvalid`` (401).

    Checks: the format, a key with that prefix, the hash (constant time), not revoked, the
    creator still a member of the key's team. Refreshes ``last_used_at`` (at most once a
    minute, by a conditional update).
    """
    raw = (raw or "").strip()
    parts = raw[len(KEY_PREFIX) :].split("_", 1) if raw.startswith(KEY_PREFIX) else []
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ApiKeyInvalid("The API key is missing or malformed (Authorization: Bearer kw_…).")
    key = ApiKey.objects.select_related("team").filter(prefix=parts[0][:16]).first()
    if key is None or not hmac.compare_digest(key.secret_hash, key_hash(raw)):
        raise ApiKeyInvalid("The API key is not valid.")
    if key.revoked_at is not None:
        raise ApiKeyInvalid("The API key has been revoked.")
    membership = (
        Membership.objects.select_related("user", "team")
        .filter(team_id=key.team_id, user_id=key.created_by_id, user__is_active=True)
        .first()
    )
    if membership is None:
        raise ApiKeyInvalid("The API key's creator is no longer a member of its team.")
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return ApiCaller(api_key=key, team=membership.team, membership=membership)
