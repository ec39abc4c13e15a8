"""Finding tasks at Kling: the one place that walks the vendor's task lists or asks for tasks
by id. Used by polling, nightly reconciliation, ``kling_sync`` and the element import.

- ``tasks_find``: given tasks of one (Kling account, family), by ``task_id`` or
  ``external_task_id``. Families of the 2026 design (``NEW_DESIGN_PATHS``) are asked by id with
  the unified ``GET /tasks?task_ids=…`` in batches of ``client.tasks_batch_size`` (100):
  ⌈n / 100⌉ requests whatever else lives in the account (KLING_API_2026.md §3).
  Legacy families: whether ``GET /tasks`` serves legacy ``/v1`` tasks is silent in the
  vendor's pages (the digest's §3; the pages say only "the API currently supports querying
  async tasks only"), so it is learnt per Kling account (``KlingAccount.
  unified_serves_legacy``): an API-key account not known to say "no" is asked by id first
  (the probe, same batches). None of the probed tasks answered → "no" is recorded for
  ``UNIFIED_NO_FOR`` (a day; then asked again) and the list pages are read for all, in the
  same call; some answered → "yes", and the pages are read only for the ones missing (new
  or lost: absence from ``/tasks`` alone never makes a legacy task ``unknown``). The list
  pages (``KlingClient.iter_tasks``, 500 a page, newest first) are read until every task
  still wanted is found or a page reaches back past the oldest one, and ``get_task`` asks
  one by one only for what the pages missed (1203 → ``unknown``, the lost rule's input).
- ``tasks_pages``: every list page of a family, newest first, stopping at the first page
  wholly older than a given time (an import of tasks made elsewhere).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.utils import timezone

from klingweb.kling import NEW_DESIGN_PATHS, ErrorClass, KlingError

if TYPE_CHECKING:
    from klingweb.accounts.models import KlingAccount
    from klingweb.kling import KlingClient, KlingTask

PAGE_SIZE = 500  # the vendor's largest pageSize (KLING_API.md §4)
MAX_PAGES = 1000  # the vendor's largest pageNum: the safety stop of every walk
CREATED_SKEW = timedelta(minutes=2)  # our clock vs the vendor's, when comparing created_at
#: How long a Kling account's "GET /tasks does not serve legacy tasks" stands before the
#: unified query is probed again (the vendor may start serving them; the docs are silent).
UNIFIED_NO_FOR = timedelta(days=1)
#: Probe failures that say "not for these tasks" (recorded as "no"); any other failure (5xx,
#: 1302, network) records nothing and the pages answer for that cycle.
_REFUSALS = (ErrorClass.NOT_FOUND, ErrorClass.INVALID_REQUEST, ErrorClass.PERMISSION)


@dataclass(frozen=True)
class Wanted:
    """A task to find. ``key``: the caller's handle (a ``Task`` pk), returned with the answer;
    ``task_id``: the vendor's id ("" when not known yet); ``external_task_id``: ours;
    ``created_at``: aware datetime no later than the vendor's creation of it (the row's
    ``vendor_created_at`` or ``created_at``)."""

    key: int
    task_id: str
    external_task_id: str
    created_at: datetime


@dataclass
class FindReport:
    """What ``tasks_find`` learned and what it cost.

    ``found``: vendor task by key. ``unknown``: key → the NOT_FOUND ``KlingError`` for tasks the
    vendor says it does not have. ``left``: keys not looked up because the vendor failed
    (``error`` says how: 5xx, 1302, network, credentials); the caller retries them later.
    ``listing_ok``: the bulk step (list pages or id batches) answered without an error;
    ``found_in_listing``: tasks that step found. ``list_pages`` / ``id_queries`` /
    ``single_queries``: requests of each kind (a legacy family's probe of ``GET /tasks``
    counts in ``id_queries``). ``unified_legacy``: for a legacy family, what this call
    learnt about ``GET /tasks`` serving the account's legacy tasks (``True``/``False``), or
    ``None`` when it did not ask.
    """

    found: dict[int, KlingTask] = field(default_factory=dict)
    unknown: dict[int, KlingError] = field(default_factory=dict)
    left: list[int] = field(default_factory=list)
    error: KlingError | None = None
    listing_ok: bool = True
    found_in_listing: int = 0
    list_pages: int = 0
    id_queries: int = 0
    single_queries: int = 0
    unified_legacy: bool | None = None

    @property
    def requests(self) -> int:
        """Kling calls made (the client's own transparent retries not counted)."""
        return self.list_pages + self.id_queries + self.single_queries


def client_family(family: str) -> str:
    """The client's family name of a ``Task.family`` value (the family registry's
    ``client_family``; the word itself for a family the registry does not know)."""
    from tasks_app.families import UnknownFamily, get_family

    try:
        return get_family(family).client_family
    except UnknownFamily:
        return family


def is_new_design(family: str) -> bool:
    """True when ``family`` (a ``Task.family`` value) is served by a 2026-design endpoint
    (KLING_API_2026.md §4), whose tasks the unified ``GET /tasks`` answers by id."""
    return client_family(family) in NEW_DESIGN_PATHS


def tasks_find(
    client: KlingClient,
    family: str,
    wanted: list[Wanted],
    *,
    max_pages: int = MAX_PAGES,
    singles: bool = True,
    account: KlingAccount | None = None,
    now: datetime | None = None,
) -> FindReport:
    """Find ``wanted`` tasks of one ``family`` (a ``Task.family`` value) with ``client`` (one
    Kling account); returns a ``FindReport``. Never raises ``KlingError``: a failure stops
    the search and is reported (``error``, ``left``).

    2026 design: id batches of ``GET /tasks`` (by ``task_id``; by ``external_task_id`` for
    tasks without one); a task absent from the answer is ``unknown``; an access-key client
    gets a PERMISSION ``error`` and sends nothing (the design takes API keys only).

    Legacy: with ``account`` (the ``KlingAccount`` behind ``client``; ``now``, an aware
    datetime, defaults to the current time), an API-key ``client`` and no "no" on the account
    younger than ``UNIFIED_NO_FOR``, first the probe: the tasks with a ``task_id`` asked by id
    on ``GET /tasks`` (KLING_API_2026.md §3; its answers are the same ``KlingTask`` as any
    other). The first batch answering none of its tasks records "no" on the account
    (``unified_serves_legacy=False``, ``unified_checked_at=now``) and stops the probe; one
    answering some records "yes". A probe failure falls back to the pages and records
    nothing, except a refusal (NOT_FOUND, INVALID_REQUEST, PERMISSION), which records "no". Then list pages (``iter_tasks``,
    ``PAGE_SIZE`` a page) for the tasks still missing, until each is found, the list ends,
    a page's oldest item is older than the oldest of them (less ``CREATED_SKEW``), or
    ``max_pages`` pages; then, with ``singles``, ``get_task`` for each one still missing
    (1203 → ``unknown``; any other error stops the search). A legacy task is never
    ``unknown`` for being absent from ``GET /tasks``.
    """
    report = FindReport()
    if not wanted:
        return report
    name = client_family(family)
    if name in NEW_DESIGN_PATHS:
        _find_by_id(client, wanted, report)
        report.found_in_listing = len(report.found)
    else:
        missing = wanted
        if account is not None and unified_probe_due(client, account, now=now):
            _probe_unified(client, account, wanted, report, now=now)
            missing = [item for item in wanted if item.key not in report.found]
        if missing:
            _find_in_pages(client, name, missing, report, max_pages=max_pages)
        report.found_in_listing = len(report.found)
        if singles and report.listing_ok:
            _find_singly(client, name, missing, report)
    done = report.found.keys() | report.unknown.keys()
    report.left = [item.key for item in wanted if item.key not in done]
    return report


def unified_probe_due(
    client: KlingClient, account: KlingAccount, *, now: datetime | None = None
) -> bool:
    """True when ``account``'s legacy tasks should be asked for on ``GET /tasks`` first:
    ``client`` has an API key (the 2026 design takes no other, KLING_API_2026.md §2) and the
    account is not known, since less than ``UNIFIED_NO_FOR`` before ``now`` (aware datetime;
    default the current time), to be answered none of them."""
    if client.credential_kind != "api_key":
        return False
    if account.unified_serves_legacy is not False or account.unified_checked_at is None:
        return True
    return (now or timezone.now()) - account.unified_checked_at >= UNIFIED_NO_FOR


def _record_unified(account: KlingAccount, serves: bool, now: datetime | None) -> None:
    """Store what the probe learnt on the account row (one UPDATE, no read-modify-write:
    pollers on other machines may record at the same time; the last one stands) and on the
    in-memory ``account`` the caller holds. A "yes" already recorded is not written again."""
    from klingweb.accounts.models import KlingAccount

    if serves and account.unified_serves_legacy is True:
        return
    at = now or timezone.now()
    KlingAccount.objects.filter(pk=account.pk).update(
        unified_serves_legacy=serves, unified_checked_at=at
    )
    account.unified_serves_legacy = serves
    account.unified_checked_at = at


def _probe_unified(
    client: KlingClient,
    account: KlingAccount,
    wanted: list[Wanted],
    report: FindReport,
    *,
    now: datetime | None,
) -> None:
    """Ask ``GET /tasks?task_ids=`` for the legacy ``wanted`` tasks that have a ``task_id``
    (batches of ``client.tasks_batch_size``); put what it answers in ``report.found`` and
    record the verdict (see ``tasks_find``). Adds nothing to ``unknown``."""
    items = [item for item in wanted if item.task_id]
    size = client.tasks_batch_size
    for start in range(0, len(items), size):
        batch = items[start : start + size]
        report.id_queries += 1
        try:
            answers = client.get_tasks([item.task_id for item in batch])
        except KlingError as exc:
            if exc.error_class in _REFUSALS:
                report.unified_legacy = False  # the vendor refuses legacy ids there
                _record_unified(account, False, now)
            return  # any other failure: the pages decide this cycle, nothing learnt
        by_id = {task.task_id: task for task in answers}
        hits = [item for item in batch if item.task_id in by_id]
        for item in hits:
            report.found[item.key] = by_id[item.task_id]
        if report.unified_legacy is None:
            report.unified_legacy = bool(hits)
            _record_unified(account, bool(hits), now)
            if not hits:
                return  # "no": the pages find them all, starting this very call


def _find_by_id(client: KlingClient, wanted: list[Wanted], report: FindReport) -> None:
    if client.credential_kind != "api_key":
        # Nothing is sent: the 2026 design accepts API keys only (KLING_API_2026.md §2).
        report.error = KlingError(
            "GET /tasks of the 2026 design takes an API key; this account has an access key.",
            error_class=ErrorClass.PERMISSION,
        )
        report.listing_ok = False
        return
    size = client.tasks_batch_size
    for kind in ("task_id", "external_task_id"):
        if kind == "task_id":
            items = [item for item in wanted if item.task_id]
        else:
            items = [item for item in wanted if not item.task_id]
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            idents = [getattr(item, kind) for item in batch]
            report.id_queries += 1
            try:
                if kind == "task_id":
                    answers = client.get_tasks(idents)
                else:
                    answers = client.get_tasks(external_task_ids=idents)
            except KlingError as exc:
                report.error = exc
                report.listing_ok = False
                return
            by_ident = {getattr(task, kind): task for task in answers}
            for item in batch:
                remote = by_ident.get(getattr(item, kind))
                if remote is not None:
                    report.found[item.key] = remote
                else:
                    report.unknown[item.key] = KlingError(
                        f"Task {getattr(item, kind)} not found by GET /tasks ({kind}).",
                        http_status=200,
                        error_class=ErrorClass.NOT_FOUND,
                    )


def _find_in_pages(
    client: KlingClient,
    name: str,
    wanted: list[Wanted],
    report: FindReport,
    *,
    max_pages: int,
) -> None:
    by_task_id = {item.task_id: item for item in wanted if item.task_id}
    by_external = {item.external_task_id: item for item in wanted if item.external_task_id}
    keys = {item.key for item in wanted}
    oldest = min(item.created_at for item in wanted) - CREATED_SKEW
    pages = client.iter_tasks(name, page_size=PAGE_SIZE, max_pages=max_pages)
    while True:
        report.list_pages += 1
        try:
            items = next(pages)
        except StopIteration:
            report.list_pages -= 1  # the list had ended: no request was made
            return
        except KlingError as exc:
            report.error = exc
            report.listing_ok = False
            return
        for remote in items:
            item = by_task_id.get(remote.task_id)
            if item is None and remote.external_task_id:
                item = by_external.get(remote.external_task_id)
            if item is not None:
                report.found.setdefault(item.key, remote)
        if keys <= report.found.keys():
            return
        created = [remote.created_at for remote in items if remote.created_at is not None]
        if created and min(created) < oldest:
            return


def _find_singly(client: KlingClient, name: str, wanted: list[Wanted], report: FindReport) -> None:
    for item in wanted:
        if item.key in report.found:
            continue
        report.single_queries += 1
        try:
            if item.task_id:
                remote = client.get_task(name, task_id=item.task_id)
            else:
                remote = client.get_task(name, external_task_id=item.external_task_id)
        except KlingError as exc:
            if exc.error_class == ErrorClass.NOT_FOUND:
                report.unknown[item.key] = exc
                continue
            report.error = exc  # the vendor is unhappy: leave the rest for later
            return
        report.found[item.key] = remote


def tasks_pages(
    client: KlingClient,
    family: str,
    *,
    since: datetime | None = None,
    max_pages: int = MAX_PAGES,
) -> Iterator[list[KlingTask]]:
    """Yield the list pages of ``family`` (a ``Task.family`` value, or ``"preset_elements"``),
    newest first, ``PAGE_SIZE`` a page, through ``KlingClient.iter_tasks``; stops after the
    list's end, ``max_pages`` pages, or (with ``since``, an aware datetime) the first page
    whose items were all created before ``since``. Items older than ``since`` on the pages
    yielded are the caller's to skip. Raises ``KlingError`` from the page that failed (pages
    already yielded stay valid). Vendor doc: "Query Task (List)" (KLING_API.md §4).
    """
    name = family if family == "preset_elements" else client_family(family)
    for items in client.iter_tasks(name, page_size=PAGE_SIZE, max_pages=max_pages):
        yield items
        if since is not None and all(
            remote.created_at is not None and remote.created_at < since for remote in items
        ):
            return
