"""Background jobs of the API app (django-q2): thin, they call ``klingweb.api.webhooks``."""

from __future__ import annotations

from klingweb.api.webhooks import webhooks_retry_due


def webhooks_retry() -> None:
    """Every minute (``KLINGWEB_PLUGIN_SCHEDULES``): deliver webhook retries that are due."""
    webhooks_retry_due()
