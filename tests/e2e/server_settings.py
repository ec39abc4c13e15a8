"""Settings of the portal processes the browser tests start (gunicorn, qcluster, kling_poll).

The project's settings, plus two switches. ``KLINGWEB_E2E_STATIC_ROOT`` collects static
files into the run's temporary folder, so concurrent test runs never rewrite the files
another run's server is serving. With ``KLINGWEB_E2E_NOMIGRATIONS=1`` (set by
``tests/e2e/conftest.py`` when pytest runs with ``--nomigrations``, as pyproject configures)
the database is created from the models directly, as pytest-django does for the rest of the
suite. Without it the servers apply the real migrations, like ``make run``.
"""

from __future__ import annotations

import os

from klingweb.settings import *  # noqa: F403


class _DisableMigrations(dict):
    """Every app "has no migrations": ``migrate --run-syncdb`` creates tables from models."""

    def __contains__(self, item: object) -> bool:
        return True

    def __getitem__(self, item: str) -> None:
        return None


STATIC_ROOT = os.environ.get("KLINGWEB_E2E_STATIC_ROOT") or STATIC_ROOT  # noqa: F405

if os.environ.get("KLINGWEB_E2E_NOMIGRATIONS") == "1":
    MIGRATION_MODULES = _DisableMigrations()

# The demo users sign in many times per run; a fast hasher keeps that from dominating. The
# database is a throwaway file, never a real one.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# A task the sandbox forgets (``SandboxServer.forget``) ends "Lost at vendor" after two
# "not found" answers over eight seconds, not three over ten minutes: the rule (consecutive
# checks spread over a span) is the same, and the second check comes after the poller's
# 10 s back-off, so the scenario takes ~15 s instead of ~35 s (tests/e2e/test_lost_task.py).
POLL_LOST_AFTER_CHECKS = 2
POLL_LOST_AFTER_SECONDS = 8
