"""Background jobs of accounts (django-q2). Thin: take primary keys, call a service.

Enqueued by ``klingweb.accounts.services.vendor_call_start`` on transaction commit.
"""

from __future__ import annotations

from klingweb.accounts.services import account_test_for_call, vendor_call_run


def connection_test(call_pk: int) -> str:
    """Run the "Test connection" call ``call_pk`` (account costs of the last 30 days,
    KLING_API.md §5.5) and record the resource packs or the vendor's error on the
    ``VendorCall``. Returns the call's status, or ``"skipped"`` when the call was not
    pending (run already, or given up) — kept in the cluster's result log."""
    call = vendor_call_run(call_pk=call_pk, work=lambda call: account_test_for_call(call=call))
    return call.status if call is not None else "skipped"
