"""Daily usage rollups and ledger versions (issue 15 item 3, "reports faster than the floor").

``UsageRollup`` rows sum the deduction ledger (``Deduction``) per team × local day (the
team's zone, ``tasks_app.budgets.team_zone``) × member × family × model × mode × task status
× currency. They are written in the SAME transaction as the ledger row they count
(``rollup_add``, called by ``tasks_app.ledger``), and each such transaction bumps the team's
``LedgerState.version``, which keys the cached report pages: a new charge is on the page the
moment it commits.

- Exactly once: ``rollup_add`` is only called for a ledger row that was actually inserted
  (``deduction_record`` refuses a duplicate primary row before it gets here), inside the
  savepoint of the insert, so a rolled-back insert takes its rollup with it.
- Batches (``tasks_app.services.ApplyBatch``: one transaction charging several teams):
  inside ``rollups_deferred()`` the inserted rows are only noted; at the end of the block the
  rows that still exist are read back in one query, summed per key, and written in a fixed
  order (team id, then key), version first — so two chunks that charge the same teams lock
  the same rows in the same order (no deadlock on PostgreSQL).
- Lock order: a team's ``LedgerState`` row is locked after the rows that reference the
  team were inserted (a ledger INSERT key-share locks the team's row), never before. The
  form's transaction locks the team's row (``tasks_app.submission.task_queue``, the budget
  check); a transaction holding ``LedgerState`` that then inserted a ledger row waited
  behind it while it waited for ``LedgerState``: deadlocks in the topology soak at 500
  tasks (2026-11-29). So ``task_apply_remote`` defers its move's ``tasks_touch`` and its
  charge's rollups to the end of its transaction (``rollups_deferred``), a poll chunk bumps
  versions at its end, and creating a task (queued: in no figure) bumps nothing.
- Upsert per key: an ``UPDATE … SET units = units + %s`` (``F()`` increments), else an
  ``INSERT`` in a savepoint, retried as the update when a concurrent transaction inserted the
  key first (unique constraint ``usage_rollup_key``).
- ``rollups_rebuild`` rebuilds a team's rows from its ledger; ``rollups_check`` compares
  them and returns the differences (``manage.py rollups_rebuild`` / ``rollups_check`` and
  the nightly ``tasks_app.reconcile`` report them; nothing here fixes a difference silently).

Units are units of Kling credit (KLING_API.md §4 ``final_unit_deduction``), ``Decimal`` with
the ledger's places; money: the cash ``amount`` of rows charged in cash (KLING_API_2026.md
§7) plus ``priced_units`` × ``settings.KLING_UNIT_PRICE`` when read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDate

from tasks_app.models import (
    UNITS_PLACES,
    Deduction,
    LedgerState,
    Status,
    UsageDay,
    UsageRollup,
)

ZERO = Decimal("0")
PLACES = Decimal(1).scaleb(-UNITS_PLACES)
#: The columns of a rollup's key besides ``team`` and ``day``.
KEY_FIELDS = ("member_id", "family", "model_name", "mode", "task_status", "currency")
#: The summed columns of a rollup.
SUM_FIELDS = ("units", "amount", "priced_units", "charged", "rows")
#: Key columns (besides ``team`` and ``day``) and summed columns of the coarse ``UsageDay``.
DAY_KEY_FIELDS = ("family",)
DAY_SUM_FIELDS = ("units", "failed_units", "amount", "priced_units", "charged", "rows")

#: Key: (team_id, day, member_id, family, model_name, mode, task_status, currency).
Key = tuple


@dataclass
class Sums:
    """The summed columns of one rollup key (units and money as Decimal, counts as int)."""

    units: Decimal = ZERO
    amount: Decimal = ZERO
    priced_units: Decimal = ZERO
    charged: int = 0
    rows: int = 0
    failed_units: Decimal = ZERO

    def add_row(self, row: Deduction) -> None:
        """Count one ledger row."""
        self.units += row.units
        if row.task_status == Status.FAILED:
            self.failed_units += row.units
        if row.amount is not None:
            self.amount += row.amount
        else:
            self.priced_units += row.units
        self.charged += 1 if row.corrects_id is None else 0
        self.rows += 1

    def values(self, fields: tuple[str, ...] = ()) -> tuple:
        """The sums ``fields`` (default ``SUM_FIELDS``), decimals quantised to the ledger's
        places (for comparing)."""
        return tuple(
            int(v) if isinstance(v, int) else _q(v)
            for v in (getattr(self, f) for f in fields or SUM_FIELDS)
        )


def _q(value) -> Decimal:
    """``value`` (Decimal, float from SQLite, or None) as Decimal with the ledger's places."""
    return Decimal(str(value if value is not None else 0)).quantize(PLACES)


def team_zone_of(name: str) -> dt.tzinfo:
    """The zone named ``name`` (a team's ``time_zone``), UTC when unknown — the same rule as
    ``tasks_app.budgets.team_zone`` (not imported: budgets import the ledger, which imports
    this module)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _key(row: Deduction, zones: dict[int, dt.tzinfo], fields: tuple[str, ...]) -> Key:
    day = row.recorded_at.astimezone(zones[row.team_id]).date()
    return (row.team_id, day, *(getattr(row, f) for f in fields))


#: The rollup tables: (name, model, key columns besides team and day, summed columns).
GRAINS = (
    ("rollup", UsageRollup, KEY_FIELDS, SUM_FIELDS),
    ("day", UsageDay, DAY_KEY_FIELDS, DAY_SUM_FIELDS),
)


def _zones(team_ids: Iterable[int]) -> dict[int, dt.tzinfo]:
    from klingweb.accounts.models import Team

    return {
        pk: team_zone_of(name)
        for pk, name in Team.objects.filter(pk__in=set(team_ids)).values_list("pk", "time_zone")
    }


def _version_bump(team_id: int, *fields: str) -> None:
    """Add 1 to each of the team's ``LedgerState.<field>`` (``version``, ``tasks_version``;
    default ``version``) in one UPDATE, creating the row when it is missing (both versions
    then start at the clock)."""
    increments = {field: F(field) + 1 for field in fields or ("version",)}
    if LedgerState.objects.filter(team_id=team_id).update(**increments):
        return
    try:
        with transaction.atomic():
            # The first version is the clock (µs): versions of a recreated database never
            # repeat those of a cache that outlived it.
            first = int(time.time() * 1_000_000)
            LedgerState.objects.create(team_id=team_id, version=first, tasks_version=first)
    except IntegrityError:
        LedgerState.objects.filter(team_id=team_id).update(**increments)


def _upsert(model, key_fields: tuple, sum_fields: tuple, key: Key, sums: Sums) -> None:
    team_id, day, *rest = key
    where = {"team_id": team_id, "day": day, **dict(zip(key_fields, rest, strict=True))}
    increments = {name: F(name) + getattr(sums, name) for name in sum_fields}
    if model.objects.filter(**where).update(**increments):
        return
    try:
        with transaction.atomic():
            model.objects.create(**where, **{n: getattr(sums, n) for n in sum_fields})
    except IntegrityError:  # a concurrent transaction inserted the key first
        model.objects.filter(**where).update(**increments)


def _apply(rows: Iterable[Deduction], touched: Iterable[int] = ()) -> None:
    """Add ``rows`` (saved ledger rows) to the rollups and bump their teams' versions, and
    bump the tasks versions of the teams ``touched``, in team id then key order (every row
    lock taken in one order). Must run in the transaction that inserted the rows."""
    rows = list(rows)
    touched = set(touched)
    if not rows and not touched:
        return
    zones = _zones(r.team_id for r in rows) if rows else {}
    grains = []
    for _, model, key_fields, sum_fields in GRAINS:
        by_key: dict[Key, Sums] = {}
        for row in rows:
            by_key.setdefault(_key(row, zones, key_fields), Sums()).add_row(row)
        ordered = sorted(by_key, key=lambda k: tuple("" if v is None else str(v) for v in k[1:]))
        grains.append((model, key_fields, sum_fields, by_key, ordered))
    charged = {r.team_id for r in rows}
    for team_id in sorted(charged | touched):
        bumps = {"version": team_id in charged, "tasks_version": team_id in touched}
        _version_bump(team_id, *(name for name, due in bumps.items() if due))
        if team_id not in charged:
            continue
        for model, key_fields, sum_fields, by_key, ordered in grains:
            for key in ordered:
                if key[0] == team_id:
                    _upsert(model, key_fields, sum_fields, key, by_key[key])


_pending: ContextVar[set[int] | None] = ContextVar("tasks_app_rollups_pending", default=None)
_touched: ContextVar[set[int] | None] = ContextVar("tasks_app_tasks_touched", default=None)


def tasks_touch(team_id: int) -> None:
    """Bump the team's ``LedgerState.tasks_version`` in the current transaction: call it
    where a task of the team moves to another status (``tasks_app.services``), as the
    transaction's last write to rows of the team (module docstring, "lock order"),
    so a cached usage page (its counts of tasks run, succeeded, failed, lost, running) is
    recomputed on the next load. Inside ``rollups_deferred`` the team is only noted and
    bumped when the block ends, in team id order with the ledger versions (no deadlock
    between two chunks moving tasks of the same teams)."""
    touched = _touched.get()
    if touched is not None:
        touched.add(team_id)
        return
    _version_bump(team_id, "tasks_version")


def rollup_add(row: Deduction) -> None:
    """Count the ledger row ``row`` (just inserted, in the current transaction) in its
    team's rollup and bump the team's ``LedgerState.version``. Inside ``rollups_deferred``
    the row is only noted, and counted when the block ends. Call it in the savepoint that
    inserted the row, and only when it was inserted (exactly once per row)."""
    rollups_add([row])


def rollups_add(rows: list[Deduction]) -> None:
    """``rollup_add`` for many rows inserted together (one bulk INSERT): counted at once,
    one version bump per team."""
    pending = _pending.get()
    if pending is not None:
        pending.update(row.pk for row in rows)
        return
    _apply(rows)


@contextlib.contextmanager
def rollups_deferred() -> Iterator[None]:
    """A block (inside one transaction) whose ledger rows are counted together when it ends
    without an error: the noted rows that still exist (a rolled-back savepoint drops its
    row) are read back in one query and applied in team id then key order (``_apply``). A
    nested block joins the outer one. On an error nothing is counted (the caller's
    transaction rolls back with its ledger rows)."""
    if _pending.get() is not None:
        yield
        return
    pending: set[int] = set()
    touched: set[int] = set()
    token = _pending.set(pending)
    touched_token = _touched.set(touched)
    try:
        yield
    finally:
        _pending.reset(token)
        _touched.reset(touched_token)
    rows = Deduction.objects.filter(pk__in=sorted(pending)).order_by() if pending else []
    _apply(rows, touched=touched)


def ledger_version(team_id: int) -> int:
    """The team's ledger version (0 before its first ledger row): a cache key part."""
    state = LedgerState.objects.filter(team_id=team_id).values_list("version", flat=True).first()
    return state or 0


def ledger_versions() -> dict[int, int]:
    """Every team's ledger version (teams without a ledger row are absent), in one query: the
    key part of the cached company report."""
    return dict(LedgerState.objects.values_list("team_id", "version"))


# --- rebuild and check --------------------------------------------------------------------


def _date(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def ledger_sums(
    team_id: int, zone: dt.tzinfo, key_fields: tuple[str, ...] = KEY_FIELDS
) -> dict[Key, Sums]:
    """What the rollups of ``team_id`` must hold per (day, ``key_fields``), computed from its
    ledger by one grouped query (days in ``zone``)."""
    rows = (
        Deduction.objects.filter(team_id=team_id)
        .annotate(day=TruncDate("recorded_at", tzinfo=zone))
        .values("day", *key_fields)
        .annotate(
            s_units=Sum("units"),
            s_failed=Sum("units", filter=Q(task_status=Status.FAILED)),
            s_amount=Sum("amount"),
            s_priced=Sum("units", filter=Q(amount__isnull=True)),
            s_charged=Count("id", filter=Q(corrects__isnull=True)),
            s_rows=Count("id"),
        )
        .order_by()
    )
    return {
        (team_id, _date(r["day"]), *(r[f] for f in key_fields)): Sums(
            units=_q(r["s_units"]),
            failed_units=_q(r["s_failed"]),
            amount=_q(r["s_amount"]),
            priced_units=_q(r["s_priced"]),
            charged=r["s_charged"],
            rows=r["s_rows"],
        )
        for r in rows
    }


def rollup_sums(
    team_id: int, model=UsageRollup, key_fields: tuple[str, ...] = KEY_FIELDS
) -> dict[Key, Sums]:
    """The rollups (``model``) of ``team_id`` summed per key (rows sharing a key — a deleted
    member's — merged)."""
    sums = {f"s_{name}": Sum(name) for name in ("units", "amount", "priced_units")}
    if model is UsageDay:
        sums["s_failed_units"] = Sum("failed_units")
    rows = (
        model.objects.filter(team_id=team_id)
        .values("day", *key_fields)
        .annotate(**sums, s_charged=Sum("charged"), s_rows=Sum("rows"))
        .order_by()
    )
    return {
        (team_id, _date(r["day"]), *(r[f] for f in key_fields)): Sums(
            units=_q(r["s_units"]),
            failed_units=_q(r.get("s_failed_units")),
            amount=_q(r["s_amount"]),
            priced_units=_q(r["s_priced_units"]),
            charged=r["s_charged"] or 0,
            rows=r["s_rows"] or 0,
        )
        for r in rows
    }


@dataclass(frozen=True)
class RollupDifference:
    """One key whose rollup differs from the ledger: ``grain`` is ``"rollup"``
    (``UsageRollup``) or ``"day"`` (``UsageDay``); ``key`` (team_id, day, then the grain's
    key columns); ``ledger`` and ``rollup`` are ``Sums.values`` of the grain's columns, or
    None when absent."""

    grain: str
    key: Key
    fields: tuple[str, ...]
    ledger: tuple | None
    rollup: tuple | None

    def __str__(self) -> str:
        team_id, day, *rest = self.key
        keys = " ".join(f"{f}={v!r}" for f, v in zip(self.fields, rest, strict=True))
        return (
            f"{self.grain}: team {team_id} {day} {keys}: ledger {self.ledger}, rollup {self.rollup}"
        )


def _team_zones(team_ids: Iterable[int] | None) -> dict[int, dt.tzinfo]:
    from klingweb.accounts.models import Team

    qs = Team.objects.order_by("pk")
    if team_ids is not None:
        qs = qs.filter(pk__in=list(team_ids))
    return {pk: team_zone_of(tz) for pk, tz in qs.values_list("pk", "time_zone")}


def rollups_check(team_ids: Iterable[int] | None = None) -> list[RollupDifference]:
    """Compare both rollup tables of ``team_ids`` (every team when None) with their ledger;
    returns the differing keys (empty when they agree). Reports only: fixes nothing."""
    differences = []
    for team_id, zone in _team_zones(team_ids).items():
        for grain, model, key_fields, sum_fields in GRAINS:
            expected = ledger_sums(team_id, zone, key_fields)
            actual = rollup_sums(team_id, model, key_fields)
            for key in sorted(set(expected) | set(actual), key=lambda k: tuple(map(str, k))):
                e = expected[key].values(sum_fields) if key in expected else None
                a = actual[key].values(sum_fields) if key in actual else None
                if a is not None and e is None and not any(a):
                    continue  # an all-zero row (rows moved away by a member's deletion)
                if e != a:
                    differences.append(
                        RollupDifference(
                            grain=grain, key=key, fields=key_fields, ledger=e, rollup=a
                        )
                    )
    return differences


def rollups_rebuild(team_ids: Iterable[int] | None = None, *, progress=None) -> int:
    """Rebuild both rollup tables of ``team_ids`` (every team when None) from the ledger, one
    team per transaction (its ``LedgerState`` row locked first, as writers do, so a
    concurrent charge is counted once; its version is bumped). Idempotent.
    ``progress(team_id, n)`` is called after each team. Returns the number of rows written."""
    written = 0
    for team_id, zone in _team_zones(team_ids).items():
        count = 0
        with transaction.atomic():
            _version_bump(team_id)
            LedgerState.objects.select_for_update().get(team_id=team_id)
            for _, model, key_fields, sum_fields in GRAINS:
                model.objects.filter(team_id=team_id).delete()
                sums = ledger_sums(team_id, zone, key_fields)
                model.objects.bulk_create(
                    [
                        model(
                            team_id=team_id,
                            day=key[1],
                            **dict(zip(key_fields, key[2:], strict=True)),
                            **{f: getattr(s, f) for f in sum_fields},
                        )
                        for key, s in sums.items()
                    ],
                    batch_size=1000,
                )
                count += len(sums)
        written += count
        if progress is not None:
            progress(team_id, count)
    return written
