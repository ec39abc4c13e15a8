"""One live request per page: the task lists ask one URL per interval for the whole page.

The list page (``tasks-list``, ``tasks-mine``) carries one hidden poller element
(``templates/tasks_app/_live.html``). Every ``LIVE_INTERVAL_SECONDS`` it GETs
``tasks-live`` / ``tasks-mine-live`` with the page's filters, its page number and ``seen``:
the rows the page shows and the state it shows them in, as ``<code hex><state>`` items
joined by ``.`` (``live_token``; ``state`` is 8 hex digits of a digest of what a row
displays: status, stale flag, waiting message, units, kept results, ``updated_at``).

The answer is computed from the database in a number of queries that does not depend on the
number of rows (access, members of the filter form, count, one page of rows, their media):

- rows whose state differs from ``seen``: swapped out of band (``hx-swap-oob="true"``);
- rows now on the page that the page lacks (a teammate's new task, a task that moved into
  the filter): inserted out of band at their place (before the next row the page has, or at
  the end of the table body); rows the page shows that left it are deleted out of band;
- the pagination line, out of band, when the number of matching tasks changed;
- the poller itself (the main swap) with the new ``seen``. It keeps its ``hx-trigger`` while
  a row of the page is unfinished or a new task can still appear on this page
  (``tasks_can_grow``); otherwise it comes back without a trigger, with HTTP 286, and the
  page stops asking.

A poll that finds the page up to date (the usual answer) is checked from the rows' state
columns only (``STATE_FIELDS``: one ``values_list`` of the page, one of its media's three
state columns, the same capped count) and answers the poller alone, without a ``Task``
object or a row; anything changed falls back to the full answer below (up to three more queries).

When the page cannot be patched row by row (no ``seen`` or a malformed one, the page was
empty or becomes empty, the rows it keeps changed order), the whole ``#table`` partial is
sent instead (``HX-Retarget: #task-table``), which carries a fresh poller.

``tasks_app.views`` builds the list pages with ``task_table_context`` so the page and the
live answer can never disagree about filters and paging. ``elements_app`` uses the token
helpers for the element library (``elements-live``).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.core.paginator import Page
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django_htmx.http import reswap, retarget

from klingweb.accounts.access import READ, TeamAccess, team_and_memberships_for_user
from tasks_app.families import registry
from tasks_app.forms import TaskFilterForm
from tasks_app.models import UNFINISHED, Status, Task, TaskMedia
from tasks_app.paging import list_paginator
from tasks_app.rows import LazyRows

#: Seconds between two live requests of an open page.
LIVE_INTERVAL_SECONDS = 3

#: Rows of a task list page.
PAGE_SIZE = 25

#: HTTP status that tells htmx to stop polling (htmx 2: "286 stops polling").
STOP_POLLING = 286

#: Query keys of the live machinery itself (never filters).
_LIVE_KEYS = ("page", "seen", "n")

_ITEM = re.compile(r"^([0-9a-f]{32})([0-9a-f]{8})$")

#: Statuses a just-created task has, and the status filters that let it in.
_NEW_TASK_FILTERS = {"", Status.QUEUED.value, "unfinished"}


# -- the token ----------------------------------------------------------------------------


def state_digest(*parts: Any) -> str:
    """Eight hex digits summarising ``parts`` (their ``repr``): a row's displayed state."""
    return hashlib.blake2s(repr(parts).encode(), digest_size=4).hexdigest()


def live_token(rows: list[tuple[str, str]]) -> str:
    """``seen`` for ``rows``: ``[(code hex (32), state (8 hex)), ...]`` → ``"<code><state>.…"``."""
    return ".".join(code + state for code, state in rows)


def parse_live_token(text: str | None) -> list[tuple[str, str]] | None:
    """The rows of a ``seen`` token, or None when it is missing or malformed (the caller
    then re-renders the whole region). An empty token is ``[]`` only when ``text == "-"``
    (a page that showed no row)."""
    if text is None:
        return None
    text = text.strip()
    if text == "-":
        return []
    if not text or len(text) > 60 * 41:
        return None
    rows = []
    for item in text.split("."):
        match = _ITEM.match(item)
        if match is None:
            return None
        rows.append((match.group(1), match.group(2)))
    if len({code for code, _ in rows}) != len(rows):
        return None
    return rows


@dataclass
class LiveDiff:
    """How the rows the page shows (``seen``) differ from the rows it should show.

    ``changed``: codes (hex) shown in an old state. ``added``: ``(code, anchor)`` pairs: the
    row to insert and the code of the row (already on the page) it goes before, or None for
    "at the end". ``removed``: codes to delete. ``rebuild``: True when patching row by row
    is not possible (no usable ``seen``, empty ↔ non-empty, kept rows out of order).
    """

    changed: list[str] = field(default_factory=list)
    added: list[tuple[str, str | None]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rebuild: bool = False

    @property
    def empty(self) -> bool:
        """True when the page is up to date."""
        return not (self.changed or self.added or self.removed or self.rebuild)


def live_diff(seen: list[tuple[str, str]] | None, current: list[tuple[str, str]]) -> LiveDiff:
    """Compare the page's ``seen`` rows with the ``current`` rows (both in display order)."""
    if seen is None or (not seen) != (not current):
        return LiveDiff(rebuild=True)
    old = dict(seen)
    new = dict(current)
    kept_old = [code for code, _ in seen if code in new]
    kept_new = [code for code, _ in current if code in old]
    if kept_old != kept_new:
        return LiveDiff(rebuild=True)
    diff = LiveDiff(removed=[code for code, _ in seen if code not in new])
    for index, (code, state) in enumerate(current):
        if code in old:
            if old[code] != state:
                diff.changed.append(code)
            continue
        anchor = next((c for c, _ in current[index + 1 :] if c in old), None)
        diff.added.append((code, anchor))
    return diff


def live_query(request: HttpRequest, *, page: int, seen: str, count: int) -> str:
    """The query string of the next live request: the page's filters (``request.GET`` minus
    ``page``, ``seen``, ``n``), ``page``, ``seen`` and ``n`` (the number of matching rows
    the page shows in its pagination line)."""
    query: QueryDict = request.GET.copy()
    for key in _LIVE_KEYS:
        query.pop(key, None)
    query["page"] = str(page)
    query["seen"] = seen or "-"
    query["n"] = str(count)
    return query.urlencode()


def code_from_hex(code: str) -> str:
    """The dashed UUID text of a 32-hex ``code`` (as templates print a ``code``)."""
    return str(uuid.UUID(hex=code))


# -- the task lists -----------------------------------------------------------------------


#: Task columns a list row's displayed state depends on (``row_state``), after ``id`` and
#: ``code``: what the live request reads when it only checks whether the page changed.
STATE_FIELDS = (
    "id",
    "code",
    "updated_at",
    "status",
    "is_stale",
    "error_code",
    "error_message",
    "final_unit_deduction",
    "finished_at",
)


def row_state(values: tuple, media: list[tuple]) -> str:
    """The displayed state of a list row (``templates/tasks_app/_row.html``) as 8 hex digits.

    ``values``: the row's ``STATE_FIELDS`` after ``id`` and ``code`` (a tuple, in that
    order); ``media``: its media as ``(pk, has a file (bool), kept_at)`` tuples, any order.
    ``task_row_state`` and the live request's check (``_live_unchanged``) both come here, so
    a page and its live answer cannot disagree about a row's state."""
    return state_digest(*values, sorted(media))


def task_row_state(task: Task) -> str:
    """``row_state`` of a ``Task``. Needs ``task.media`` prefetched (no query per row)."""
    media = [(m.pk, bool(m.file), m.kept_at) for m in task.media.all()]
    return row_state(tuple(getattr(task, name) for name in STATE_FIELDS[2:]), media)


def tasks_can_grow(*, team: Any, filters: TaskFilterForm, page: Page) -> bool:
    """Whether a task that is not on ``page`` now may appear on it without a reload.

    New tasks are the newest: they land on page 1 when sorted newest first, on the last page
    when sorted oldest first. A date range that ended before today (team time zone) admits
    none. A status filter that a new (queued) task does not match admits tasks only by
    moving into it, which needs an unfinished task in the team (one ``exists`` query).
    """
    data = filters.cleaned_data if filters.is_valid() else {}
    oldest_first = data.get("sort") == "created"
    if oldest_first:
        if page.number != page.paginator.num_pages:
            return False
    elif page.number != 1:
        return False
    date_to = data.get("date_to")
    if date_to is not None:
        try:
            tz = ZoneInfo(team.time_zone)
        except Exception:
            tz = ZoneInfo("UTC")
        end = datetime.combine(date_to, time.min).replace(tzinfo=tz) + timedelta(days=1)
        if end <= timezone.now():
            return False
    if (data.get("status") or "") in _NEW_TASK_FILTERS:
        return True
    return Task.objects.filter(team=team).unfinished().exists()


def _list_queryset(request: HttpRequest, access: TeamAccess, *, mine: bool) -> tuple:
    """``(filters, queryset)`` of a list request: the bound ``TaskFilterForm`` and the team's
    tasks (the caller's when ``mine``) narrowed and sorted by it (no query yet)."""
    queryset = Task.objects.filter(team=access.team)
    if mine:
        queryset = queryset.filter(creator=request.user)
    labels = [(family.key, family.label) for family in registry().values()]
    filters = TaskFilterForm(request.GET or None, team=access.team, families=labels, mine=mine)
    return filters, filters.filter(queryset)


def task_table_context(request: HttpRequest, access: TeamAccess, *, mine: bool) -> dict:
    """Context of the ``#table`` partial of a task list (and of its live poller).

    ``request.GET``: the list's filters (``TaskFilterForm``) and ``page``. Loads one page of
    tasks with their creators and media (a constant number of queries).
    """
    filters, queryset = _list_queryset(request, access, mine=mine)
    queryset = queryset.select_related("creator").prefetch_related("media")
    # Counts at most 10,000 rows ("10,000+"; 50 for a search, in the list's order): same
    # cost at 1M tasks.
    page = list_paginator(queryset, PAGE_SIZE, request.GET).get_page(request.GET.get("page"))
    tasks = list(page.object_list)
    for task in tasks:
        # The team the access check read (no join, no Team object per row); kept results'
        # URLs name it.
        Task.team.field.set_cached_value(task, access.team)
    query = request.GET.copy()
    for key in _LIVE_KEYS:
        query.pop(key, None)
    rows = [(task.code.hex, task_row_state(task)) for task in tasks]
    active = any(task.is_unfinished for task in tasks) or tasks_can_grow(
        team=access.team, filters=filters, page=page
    )
    list_name = "tasks-mine" if mine else "tasks-list"
    live_name = "tasks-mine-live" if mine else "tasks-live"
    live_url = reverse(live_name, kwargs={"team": access.team.code})
    live_qs = live_query(
        request, page=page.number, seen=live_token(rows), count=page.paginator.count
    )
    return {
        "access": access,
        "team": access.team,
        "mine": mine,
        "filters": filters,
        "page": page,
        "tasks": tasks,
        # Built when the template (or a live patch) uses them: a live request that finds
        # nothing changed builds none.
        "rows": LazyRows(tasks, access=access, user=request.user),
        "querystring": query.urlencode(),
        "filtered": any(v for k, v in request.GET.items() if k not in ("sort", *_LIVE_KEYS)),
        "list_url": reverse(list_name, kwargs={"team": access.team.code}),
        "live": {
            "id": "task-live",
            "url": f"{live_url}?{live_qs}",
            "active": active,
            "interval": LIVE_INTERVAL_SECONDS,
        },
        "live_rows": rows,
    }


def live_response(
    request: HttpRequest,
    context: dict,
    *,
    items: list,
    page_template: str,
    target: str,
    patch_template: str,
) -> HttpResponse:
    """The answer of a list's one live request, shared by the task lists and the elements
    library. ``context``: the list's context (``live_rows``, ``live``, ``page``); ``items``:
    the objects of the page (each with a ``code`` UUID; a list or a lazy sequence such as
    ``tasks_app.rows.LazyRows``, read only when a row is sent). Compares the ``seen`` query
    parameter with ``context["live_rows"]`` (``live_diff``): when it cannot be patched, the
    whole region ``page_template`` (a ``template#partial``) retargeted to ``target``
    (``HX-Retarget``, outerHTML); else ``patch_template`` rendered with ``changed`` (items),
    ``added`` ([(item, anchor code or None)]), ``removed`` (codes) and ``pages_changed``
    (the count differs from the ``n`` query parameter). HTTP 286 (htmx: stop polling) once
    ``context["live"]["active"]`` is False, else 200."""
    diff = live_diff(parse_live_token(request.GET.get("seen")), context["live_rows"])
    status = 200 if context["live"]["active"] else STOP_POLLING
    if diff.rebuild:
        response = render(request, page_template, context, status=status)
        return reswap(retarget(response, target), "outerHTML")
    # Items are looked up only for rows to send (a lazy sequence stays unbuilt otherwise).
    by_code = {item.code.hex: item for item in items} if diff.changed or diff.added else {}
    html = render_to_string(
        patch_template,
        {
            **context,
            "changed": [by_code[code] for code in diff.changed],
            "added": [
                (by_code[code], code_from_hex(anchor) if anchor else None)
                for code, anchor in diff.added
            ],
            "removed": [code_from_hex(code) for code in diff.removed],
            "pages_changed": bool(context["live_rows"])
            and request.GET.get("n") != str(context["page"].paginator.count),
        },
        request=request,
    )
    return HttpResponse(html, status=status)


def _live_unchanged(request: HttpRequest, access: TeamAccess, *, mine: bool) -> HttpResponse | None:
    """The live answer when the page is up to date, else None (the caller then builds the
    full answer with ``task_table_context`` and ``live_response``).

    Up to date: ``seen`` names the page's rows in their current states (``row_state``) and
    ``n`` is the current count. Checked from the state columns only (``STATE_FIELDS``, one
    ``values_list`` query of the page, the same capped count as the page) and the media's
    three state columns (one query, none for an empty page): no ``Task`` or ``TaskMedia``
    object, no row, no template but the poller. The answer is then what ``live_response``
    sends for an empty diff: the poller alone, with the same ``seen`` and ``n``, HTTP 200 or
    286 (``STOP_POLLING``)."""
    seen = parse_live_token(request.GET.get("seen"))
    if seen is None:
        return None
    filters, queryset = _list_queryset(request, access, mine=mine)
    # Counted as the page counts (the same statement); only the page's rows are read as values.
    paginator = list_paginator(queryset, PAGE_SIZE, request.GET)
    page = paginator.get_page(request.GET.get("page"))
    values = list(page.object_list.values_list(*STATE_FIELDS))
    if seen and request.GET.get("n") != str(paginator.count):
        return None  # the pagination line changes: the full answer sends it
    media: dict[int, list[tuple]] = {}
    if values:
        found = TaskMedia.objects.filter(task_id__in=[v[0] for v in values]).order_by()
        for task_id, pk, name, kept_at in found.values_list("task_id", "pk", "file", "kept_at"):
            media.setdefault(task_id, []).append((pk, bool(name), kept_at))
    rows = [(v[1].hex, row_state(v[2:], media.get(v[0], []))) for v in values]
    if not live_diff(seen, rows).empty:
        return None
    active = any(v[3] in UNFINISHED for v in values) or tasks_can_grow(
        team=access.team, filters=filters, page=page
    )
    live_name = "tasks-mine-live" if mine else "tasks-live"
    live_url = reverse(live_name, kwargs={"team": access.team.code})
    live_qs = live_query(request, page=page.number, seen=live_token(rows), count=paginator.count)
    live = {"id": "task-live", "url": f"{live_url}?{live_qs}", "active": active}
    live["interval"] = LIVE_INTERVAL_SECONDS
    # The patch template with nothing to patch (no request: it prints only the poller).
    empty = {"changed": [], "added": [], "removed": [], "pages_changed": False, "live": live}
    html = render_to_string("tasks_app/_live_rows.html", empty)
    return HttpResponse(html, status=200 if active else STOP_POLLING)


def _task_live(request: HttpRequest, team: Any, *, mine: bool) -> HttpResponse:
    # The checks of ``team_for_user`` without its join of the team's Kling account: neither
    # the answer nor the ``#table`` partial shows it (no banner, no switcher here).
    access, _ = team_and_memberships_for_user(request, team, methods=READ)
    unchanged = _live_unchanged(request, access, mine=mine)
    if unchanged is not None:
        return unchanged
    return live_full_answer(request, access, mine=mine)


def live_full_answer(request: HttpRequest, access: TeamAccess, *, mine: bool) -> HttpResponse:
    """The live request's answer built from the whole list context (``task_table_context``:
    the page's ``Task`` rows with creators and media), whatever changed: the rows' patch,
    or the whole ``#table`` partial when it cannot be patched (``live_response``). Used when
    ``_live_unchanged`` finds a difference; for an unchanged page its answer is the same
    byte for byte (``tests/test_live.py``)."""
    context = task_table_context(request, access, mine=mine)
    return live_response(
        request,
        context,
        items=context["rows"],
        page_template="tasks_app/task_list.html#table",
        target="#task-table",
        patch_template="tasks_app/_live_rows.html",
    )


def task_list_live(request: HttpRequest, team: Any) -> HttpResponse:
    """GET /t/<team>/tasks/live/ (``tasks-live``): the one live request of the task list.

    Query: the list's filters and ``page`` (as ``task_list``), ``seen`` (the rows the page
    shows: ``live_token``; ``-`` for none) and ``n`` (the count the page shows). Answer
    (HTML for htmx 2): changed and new rows as out-of-band swaps, rows that left the page as
    out-of-band deletes, the pagination line when the count changed, and the next poller;
    HTTP 286 and a poller without trigger once nothing on the page can change. A ``seen``
    that cannot be patched gets the whole ``#table`` partial (``HX-Retarget``). Any member
    (viewers included); outsiders 404; anonymous → login; GET/HEAD only (405).
    """
    return _task_live(request, team, mine=False)


def task_mine_live(request: HttpRequest, team: Any) -> HttpResponse:
    """GET /t/<team>/tasks/mine/live/ (``tasks-mine-live``): as ``task_list_live`` for the
    caller's own tasks ("My tasks")."""
    return _task_live(request, team, mine=True)
