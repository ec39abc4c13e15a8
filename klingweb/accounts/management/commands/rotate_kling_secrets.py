"""``manage.py rotate_kling_secrets``: re-encrypt every stored Kling secret key.

Rotation path (see ``klingweb.accounts.services``): put a new Fernet key first in
``FERNET_KEYS`` (keep the old ones after it), run this command, then remove the old keys.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from klingweb.accounts import services


class Command(BaseCommand):
    """Re-encrypt all ``KlingAccount.secret_key_encrypted`` under the newest Fernet key."""

    help = (
        "Re-encrypt every stored Kling secret key with the newest key of FERNET_KEYS. "
        "Run after putting a new key first; then drop the old key."
    )

    def handle(self, *args, **options) -> None:
        """Rotate; exit non-zero (``CommandError``) when some secret cannot be decrypted."""
        rotated, unreadable = services.secrets_rotate_all()
        self.stdout.write(f"Re-encrypted {rotated} secret key(s) with the newest key.")
        if unreadable:
            for account in unreadable:
                # Name and code only: never the secret or its ciphertext.
                self.stderr.write(
                    f"Cannot decrypt the secret key of {account.name!r} ({account.code}); "
                    "re-enter it on its settings page."
                )
            raise CommandError(
                f"{len(unreadable)} secret key(s) could not be decrypted with FERNET_KEYS."
            )
