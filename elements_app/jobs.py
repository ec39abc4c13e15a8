"""Background jobs of elements_app (django-q2). Thin: they call a service.

Periodic schedule (created by the lead's ``setup_schedules`` command)::

    Schedule.objects.update_or_create(
        name="elements: sync presets",
        defaults={"func": "elements_app.jobs.sync_presets",
                  "schedule_type": Schedule.MINUTES, "minutes": 360, "repeats": -1},
    )
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def sync_presets() -> str:
    """Refresh the cached vendor presets (``elements_app.services.presets_sync_any``).

    Returns a one-line summary (kept in the cluster's result log). Raises
    ``klingweb.kling.KlingError`` when every configured account failed, so the failure shows
    in the cluster's failed-task list.
    """
    from elements_app.services import presets_sync_any

    report = presets_sync_any()
    if report is None:
        log.info("presets sync skipped: no Kling account configured")
        return "skipped: no Kling account configured"
    return (
        f"presets: {report.created} new, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.removed} removed"
    )
