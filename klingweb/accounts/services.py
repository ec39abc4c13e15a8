"""Services over Kling accounts: secret-key encryption and building API clients.

Secret keys are encrypted with Fernet (``cryptography``) under ``settings.FERNET_KEYS``, a
comma-separated list, newest first, read through ``MultiFernet``: encryption uses the first
key, decryption tries each. Rotation: put a new key first, run
``python manage.py rotate_kling_secrets`` (re-encrypts every stored secret with the new key),
then drop the old key. Without ``FERNET_KEYS`` (development) a key is derived from
``SECRET_KEY``.
"""

from __future__ import annotations

import base64
import hashlib
import threading

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from klingweb.accounts.models import KlingAccount, Team
from klingweb.kling import KlingClient


class SecretUnreadable(Exception):
    """A stored secret key cannot be decrypted with any configured Fernet key."""


def _fernet() -> MultiFernet:
    keys = list(settings.FERNET_KEYS)
    if not keys:
        digest = hashlib.sha256(("klingweb-fernet:" + settings.SECRET_KEY).encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(f"FERNET_KEYS holds an invalid Fernet key: {exc}") from None


def secret_encrypt(plain: str) -> str:
    """Return the Fernet token (ASCII text) for ``plain`` under the newest key."""
    return _fernet().encrypt(plain.encode()).decode()


def secret_decrypt(token: str) -> str:
    """Return the plain text of a Fernet ``token``; raises ``SecretUnreadable``."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("The stored secret key cannot be decrypted; re-enter it.") from None


def secret_rotate(token: str) -> str:
    """Return ``token`` re-encrypted under the newest key (MultiFernet.rotate)."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("The stored secret key cannot be decrypted; re-enter it.") from None


def account_set_secret(*, account: KlingAccount, secret_key: str) -> None:
    """Store ``secret_key`` on ``account`` encrypted, keeping its last 4 characters to show.

    Does not save; the caller saves the account.
    """
    account.secret_key_encrypted = secret_encrypt(secret_key)
    account.secret_key_last4 = secret_key[-4:]


def account_for_team(*, team: Team) -> KlingAccount:
    """The Kling account a team's new tasks go to: its own, else the operator default."""
    if team.kling_account_id is not None:
        return team.kling_account
    return KlingAccount.objects.operator_default()


_clients: dict[tuple[str, str, str], KlingClient] = {}
_clients_lock = threading.Lock()


def kling_client_for(account: KlingAccount) -> KlingClient:
    """Return a ``KlingClient`` for ``account``, shared per (base URL, keys) in this process.

    Sharing keeps one cached JWT and one connection pool per account. The operator default
    account reads ``KLING_ACCESS_KEY``/``KLING_SECRET_KEY``/``KLING_API_BASE_URL``.
    Raises ``SecretUnreadable`` when a stored secret cannot be decrypted, and
    ``ImproperlyConfigured`` when the operator default has no credentials.
    """
    if account.is_operator_default:
        access_key, secret_key = settings.KLING_ACCESS_KEY, settings.KLING_SECRET_KEY
        if not access_key:
            raise ImproperlyConfigured(
                "No Kling credentials: set KLING_ACCESS_KEY and KLING_SECRET_KEY, "
                "or add credentials to the team."
            )
    else:
        access_key = account.access_key
        secret_key = secret_decrypt(account.secret_key_encrypted)
    base_url = account.base_url
    key = (base_url, access_key, hashlib.sha256(secret_key.encode()).hexdigest())
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = KlingClient(
                access_key=access_key,
                secret_key=secret_key,
                base_url=base_url,
                connect_timeout=settings.KLING_CONNECT_TIMEOUT,
                read_timeout=settings.KLING_READ_TIMEOUT,
            )
            _clients[key] = client
        return client
