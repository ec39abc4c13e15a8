"""Importing tasks made on a team's Kling account by other tools (``kling_sync``).

Every family's list endpoint is read 500 tasks a page, newest first
(``tasks_app.finder.tasks_pages``; KLING_API.md §4). A
vendor task the portal already knows — by ``task_id``, or by ``external_task_id`` equal to a
task's ``code`` — is skipped; any other becomes a ``Task`` of the team with
``imported=True`` and is then applied through ``task_apply_remote(source="sync")``, so a
finished one gets exactly one ledger row and one in flight is polled from then on.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from tasks_app.families import DESIGN_LEGACY, registry
from tasks_app.finder import MAX_PAGES, tasks_pages
from tasks_app.models import Task
from tasks_app.rollups import tasks_touch
from tasks_app.services import task_apply_remote

if TYPE_CHECKING:
    from klingweb.accounts.models import KlingAccount, Team
    from klingweb.kling import KlingTask

log = logging.getLogger(__name__)


@dataclass
class SyncReport:
    """What ``tasks_sync`` did: vendor tasks ``seen``, ``imported``, ``known`` (skipped),
    ``older`` (before ``since``, skipped), Kling ``requests``, ``errors`` (messages)."""

    seen: int = 0
    imported: int = 0
    known: int = 0
    older: int = 0
    requests: int = 0
    errors: list[str] = field(default_factory=list)


def _as_uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def _known(remote: KlingTask) -> bool:
    query = Q(task_id=remote.task_id)
    code = _as_uuid(remote.external_task_id)
    if code is not None:
        query |= Q(code=code)
    return Task.objects.filter(query).exists()


def _import(team: Team, account: KlingAccount, family: str, remote: KlingTask) -> bool:
    """Create and apply one task; False when a concurrent run imported it first."""
    from klingweb.accounts.models import KlingAccount

    with transaction.atomic():
        # Serialises imports per account (PostgreSQL row lock; SQLite writers are serial).
        KlingAccount.objects.select_for_update().filter(pk=account.pk).first()
        if _known(remote):
            return False
        now = timezone.now()
        task = Task.objects.create(
            team=team,
            family=family,
            kling_account=account,
            task_id=remote.task_id,
            imported=True,
            summary="Imported from Kling",
            params={"external_task_id": remote.external_task_id} if remote.external_task_id else {},
            created_at=remote.created_at or now,
            vendor_created_at=remote.created_at,
            next_poll_at=now,
        )
        tasks_touch(team.pk)  # a cached usage page counts the imported task at once
        task_apply_remote(task_pk=task.pk, remote=remote, source="sync")
    return True


def tasks_sync(
    *,
    team: Team,
    since: datetime | None = None,
    families: list[str] | None = None,
    max_pages: int = MAX_PAGES,
) -> SyncReport:
    """Import the tasks of ``team``'s Kling account that the portal does not know.

    ``since``: aware datetime; vendor tasks created earlier are skipped and paging stops at
    the first page older than it. ``families``: ``Family`` values (default: every family of
    the legacy design, whose list endpoints this reads). Never
    double-counts: known tasks are skipped, and each import is applied through
    ``task_apply_remote`` (one ledger row per finished task). Vendor errors end that
    family's paging and are listed in ``SyncReport.errors``.
    """
    from klingweb.accounts.services import account_for_team, kling_client_for
    from klingweb.kling import KlingError

    account = account_for_team(team=team)
    client = kling_client_for(account)
    report = SyncReport()
    # The list endpoints are the legacy design's; 2026-design tasks are listed by the
    # unified query and are not imported here.
    legacy = [key for key, fam in registry().items() if fam.design == DESIGN_LEGACY]
    for family in families or legacy:
        pages = tasks_pages(client, family, since=since, max_pages=max_pages)
        while True:
            report.requests += 1
            try:
                items = next(pages)
            except StopIteration:
                report.requests -= 1  # the list had ended: no request was made
                break
            except KlingError as exc:
                report.errors.append(f"{family}: {exc}")
                break
            for remote in items:
                report.seen += 1
                if since is not None and remote.created_at and remote.created_at < since:
                    report.older += 1
                elif _known(remote) or not _import(team, account, family, remote):
                    report.known += 1
                else:
                    report.imported += 1
    log.info("kling_sync team %s: %s", team.pk, report)
    return report
