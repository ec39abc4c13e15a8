"""The Kling accounts' resource packs, from account costs (KLING_API.md §5.5).

``resource_packs_refresh`` is a periodic job (schedule it as
``tasks_app.resource_packs.resource_packs_refresh``, e.g. every 15 minutes): for every Kling
account with credentials it calls ``GET /account/costs`` and stores the answer as a
``ResourcePackSnapshot``. The vendor allows at most one call a second per account: a call is
claimed first by a snapshot row written under a lock on the account's row, and a claim less
than a second after the previous one is skipped, so several clusters never call twice in
one second. Accounts sharing the same whole credential (kind, base URL, key and secret:
``KlingAccount.credential_hash``) are called once; two accounts sharing an access key but not
the secret are called apart, so a wrong secret never borrows another account's packs.

``resource_packs_latest`` reads, per account, the latest successful snapshot and the latest
failure after it, among the snapshots taken with the account's current credential, for the
company usage page. Remaining quantities lag by up to 12 hours at
the vendor: they inform people and never gate submission.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Case, CharField, F, OuterRef, Subquery, Value, When
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from klingweb.accounts.models import KlingAccount, operator_credentials_set
from klingweb.accounts.services import (
    SecretUnreadable,
    account_credential_hash,
    account_refresh_hash,
    kling_client_for,
)
from klingweb.kling import KlingError, ResourcePack
from tasks_app.models import ResourcePackSnapshot

log = logging.getLogger(__name__)

#: The vendor's limit: at most one account-costs call per second per account.
MIN_INTERVAL = dt.timedelta(seconds=1)
#: The time window asked for (``start_time`` = now − this, ``end_time`` = now).
WINDOW = dt.timedelta(days=365)


@dataclass
class RefreshReport:
    """What one ``resource_packs_refresh`` run did: account primary keys per outcome."""

    fetched: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


def _accounts() -> list[KlingAccount]:
    """Accounts with credentials: the operator default when the environment gives it one,
    and every team account holding a stored credential of its kind. Each comes with its
    current ``credential_hash`` (rows older than the field get it computed and saved; a
    row whose stored key cannot be decrypted keeps ``""`` and fails on its own)."""
    accounts = list(KlingAccount.objects.with_credentials().order_by("pk"))
    for account in accounts:
        if not account.credential_hash:
            try:
                account_refresh_hash(account=account)
            except SecretUnreadable:
                continue
            KlingAccount.objects.filter(pk=account.pk, credential_hash="").update(
                credential_hash=account.credential_hash
            )
    if operator_credentials_set():
        default = KlingAccount.objects.operator_default()
        current = account_credential_hash(default)
        if default.credential_hash != current:
            KlingAccount.objects.filter(pk=default.pk).update(credential_hash=current)
            default.credential_hash = current
        accounts.insert(0, default)
    return accounts


def _credentials_key(account: KlingAccount) -> tuple[str, str]:
    """Accounts with the same key call Kling once: base URL and the whole credential's hash
    (an unreadable or legacy row is keyed by itself)."""
    return (account.base_url, account.credential_hash or f"account-{account.pk}")


def _claim(account: KlingAccount, now: dt.datetime) -> ResourcePackSnapshot | None:
    """Write the snapshot row that claims this call, or None when the account was called
    less than ``MIN_INTERVAL`` ago. The account's row lock serialises claimers (on SQLite the
    write transaction does)."""
    with transaction.atomic():
        KlingAccount.objects.select_for_update().filter(pk=account.pk).first()
        last = (
            ResourcePackSnapshot.objects.filter(account=account)
            .order_by("-requested_at")
            .values_list("requested_at", flat=True)
            .first()
        )
        if last is not None and now - last < MIN_INTERVAL:
            return None
        return ResourcePackSnapshot.objects.create(
            account=account, credential_hash=account.credential_hash, requested_at=now
        )


def _pack_dict(pack: ResourcePack) -> dict[str, Any]:
    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "resource_pack_name": pack.resource_pack_name,
        "resource_pack_id": pack.resource_pack_id,
        "resource_pack_type": pack.resource_pack_type,
        "total_quantity": str(pack.total_quantity),
        "remaining_quantity": str(pack.remaining_quantity),
        "purchase_time": iso(pack.purchase_time),
        "effective_time": iso(pack.effective_time),
        "invalid_time": iso(pack.invalid_time),
        "status": pack.status,
    }


def _error_text(exc: Exception) -> str:
    if isinstance(exc, KlingError):
        parts = [f"{exc.error_class.value}: {exc.message}"]
        if exc.code is not None:
            parts.append(f"code {exc.code}")
        if exc.request_id:
            parts.append(f"request {exc.request_id}")
        return ", ".join(parts)
    return f"{type(exc).__name__}: {exc}"


def resource_packs_refresh(*, now: dt.datetime | None = None) -> RefreshReport:
    """Fetch every credentialled Kling account's resource packs (``account_costs`` over the
    last ``WINDOW``) and store one ``ResourcePackSnapshot`` per account.

    A failed call (``KlingError``, an unreadable stored secret) is stored as a snapshot with
    ``error`` and does not stop the other accounts. Accounts called less than a second ago
    are skipped. Returns a ``RefreshReport``.
    """
    report = RefreshReport()
    groups: dict[tuple[str, str], list[KlingAccount]] = {}
    for account in _accounts():
        groups.setdefault(_credentials_key(account), []).append(account)
    for accounts in groups.values():
        leader = accounts[0]
        started = now or timezone.now()
        claim = _claim(leader, started)
        if claim is None:
            report.skipped.extend(a.pk for a in accounts)
            continue
        packs: list[dict[str, Any]] = []
        error = ""
        try:
            client = kling_client_for(leader)
            packs = [
                _pack_dict(p)
                for p in client.account_costs(start_time=started - WINDOW, end_time=started)
            ]
        except ImproperlyConfigured as exc:
            error = str(exc)
        except (KlingError, SecretUnreadable) as exc:
            error = _error_text(exc)
        except Exception as exc:  # one broken account must not stop the others
            log.exception("account %s: account costs failed", leader.pk)
            error = _error_text(exc)
        received = timezone.now()
        ResourcePackSnapshot.objects.filter(pk=claim.pk).update(
            received_at=received, packs=packs, error=error
        )
        for other in accounts[1:]:
            ResourcePackSnapshot.objects.create(
                account=other,
                credential_hash=other.credential_hash,
                requested_at=started,
                received_at=received,
                packs=packs,
                error=error,
            )
        (report.failed if error else report.fetched).extend(a.pk for a in accounts)
        if error:
            log.warning("account %s: account costs failed: %s", leader.pk, error)
    return report


@dataclass
class Pack:
    """One resource pack as the page shows it. Quantities in Kling units."""

    name: str
    pack_id: str
    pack_type: str
    total: Decimal | None
    remaining: Decimal | None
    purchase_time: dt.datetime | None
    effective_time: dt.datetime | None
    invalid_time: dt.datetime | None
    status: str

    @property
    def percent_left(self) -> Decimal | None:
        """Remaining as a percentage of total (1 place), None when unknown."""
        if not self.total or self.remaining is None:
            return None
        return (self.remaining * 100 / self.total).quantize(Decimal("0.1"))


@dataclass
class AccountPacks:
    """An account's packs from its latest successful snapshot (``as_of``: when it was
    received) and the latest failure after it (``error``/``error_at``), if any."""

    account: KlingAccount
    packs: list[Pack]
    as_of: dt.datetime | None
    error: str = ""
    error_at: dt.datetime | None = None


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


def _when(value: Any) -> dt.datetime | None:
    return parse_datetime(value) if isinstance(value, str) else None


def _pack(data: dict[str, Any]) -> Pack:
    return Pack(
        name=str(data.get("resource_pack_name") or ""),
        pack_id=str(data.get("resource_pack_id") or ""),
        pack_type=str(data.get("resource_pack_type") or ""),
        total=_decimal(data.get("total_quantity")),
        remaining=_decimal(data.get("remaining_quantity")),
        purchase_time=_when(data.get("purchase_time")),
        effective_time=_when(data.get("effective_time")),
        invalid_time=_when(data.get("invalid_time")),
        status=str(data.get("status") or ""),
    )


def resource_packs_latest() -> list[AccountPacks]:
    """Per account that was ever fetched with its current credential: its latest successful
    packs and any newer failure, from snapshots taken with that credential only
    (``credential_hash``), so an account whose key or secret changed, or that never had a
    working one, never shows packs another credential fetched. Three queries whatever the
    history's length; writes nothing."""
    # The operator default's credential is the environment's of this moment (computed
    # here, not read from its row, so a reading page writes nothing).
    default = KlingAccount.objects.filter(is_operator_default=True).first()
    current = account_credential_hash(default) if default is not None else ""
    done = (
        ResourcePackSnapshot.objects.filter(
            account=OuterRef("pk"),
            credential_hash=OuterRef("current_hash"),
            received_at__isnull=False,
        )
        .exclude(credential_hash="")
        .order_by("-requested_at", "-id")
    )
    ok = done.filter(error="")
    accounts = list(
        KlingAccount.objects.annotate(
            current_hash=Case(
                When(is_operator_default=True, then=Value(current)),
                default=F("credential_hash"),
                output_field=CharField(),
            )
        )
        .annotate(
            ok_id=Subquery(ok.values("id")[:1]),
            last_id=Subquery(done.values("id")[:1]),
        )
        .filter(last_id__isnull=False)
        .order_by("-is_operator_default", "name", "pk")
    )
    ids = {a.ok_id for a in accounts} | {a.last_id for a in accounts}
    snapshots = ResourcePackSnapshot.objects.in_bulk([i for i in ids if i is not None])
    out = []
    for account in accounts:
        good = snapshots.get(account.ok_id)
        last = snapshots[account.last_id]
        out.append(
            AccountPacks(
                account=account,
                packs=[_pack(p) for p in good.packs if isinstance(p, dict)] if good else [],
                as_of=good.received_at if good else None,
                error=last.error,
                error_at=last.received_at if last.error else None,
            )
        )
    return out
