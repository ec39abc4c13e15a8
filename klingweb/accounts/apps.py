"""App config for accounts."""

from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Teams, memberships, invitations and Kling accounts (label ``accounts``)."""

    name = "klingweb.accounts"
    label = "accounts"
    verbose_name = "Teams and accounts"
