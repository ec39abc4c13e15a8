"""Background jobs of elements_app (django-q2). Thin: they take primary keys and call a
service.

Periodic schedule (created by the lead's ``setup_schedules`` command)::

    Schedule.objects.update_or_create(
        name="elements: sync presets",
        defaults={"func": "elements_app.jobs.sync_presets",
                  "schedule_type": Schedule.MINUTES, "minutes": 360, "repeats": -1},
    )
"""

from __future__ import annotations

import logging

from elements_app.services import (
    element_delete_for_call,
    elements_import_for_call,
    presets_sync_any,
    presets_sync_for_call,
)
from klingweb.accounts.services import vendor_call_run

log = logging.getLogger(__name__)


def sync_presets() -> str:
    """Refresh the cached vendor presets (``elements_app.services.presets_sync_any``).

    Returns a one-line summary (kept in the cluster's result log). Raises
    ``klingweb.kling.KlingError`` when every configured account failed, so the failure shows
    in the cluster's failed-task list.
    """
    report = presets_sync_any()
    if report is None:
        log.info("presets sync skipped: no Kling account configured")
        return "skipped: no Kling account configured"
    return (
        f"presets: {report.created} new, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.removed} removed"
    )


# Jobs of the admin actions that need Kling's answer (``klingweb.accounts.models.VendorCall``,
# started by the views through ``elements_app.services.*_start`` on transaction commit).


def delete_element(call_pk: int) -> str:
    """Run the "Element delete" call ``call_pk`` (``POST /v1/general/delete-elements``,
    KLING_API.md §5.4) through ``vendor_call_run``; returns the call's status."""
    call = vendor_call_run(call_pk=call_pk, work=lambda call: element_delete_for_call(call=call))
    return call.status if call is not None else "skipped"


def sync_presets_now(call_pk: int) -> str:
    """Run the "Sync now" call ``call_pk`` (all pages of the vendor's presets list) through
    ``vendor_call_run``; returns the call's status."""
    call = vendor_call_run(call_pk=call_pk, work=lambda call: presets_sync_for_call(call=call))
    return call.status if call is not None else "skipped"


def import_elements(call_pk: int) -> str:
    """Run the "Elements import" call ``call_pk`` (all pages of the account's custom
    elements list, up to 1,000 pages of 500) through ``vendor_call_run``; returns the call's
    status."""
    call = vendor_call_run(call_pk=call_pk, work=lambda call: elements_import_for_call(call=call))
    return call.status if call is not None else "skipped"
