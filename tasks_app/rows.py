"""The task lists' rows, computed in Python once per row for ``templates/tasks_app/_row.html``.

A list page shows 25 rows; the row template used to look up some 70 values per row through
the template engine (``task.get_family_display``, filters, two nested includes, a thumbnail
tag), which made up most of a list page's server time. ``task_rows`` computes every value a
row shows here (same helpers, same text), so the row template only prints ``row.<field>``
and has no include.

Used by the list pages and their live request (``tasks_app.live``), the row partial
(``tasks-row``) and the cancel answer from a row. ``TaskRow.code`` is the task's UUID (the
live request matches rows by ``code.hex``).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.urls import reverse
from django.utils import timezone
from django.utils.text import Truncator

from tasks_app.models import Status, Task
from tasks_app.prices import number_text
from tasks_app.templatetags.tasks_tags import elapsed, elapsed_seconds, task_thumb


@dataclass(frozen=True)
class TaskRow:
    """What one row of a task list shows (``templates/tasks_app/_row.html``).

    Text fields are plain text (the template escapes them). ``thumb``: ``{"kind": "image" |
    "video", "url"}`` or None. ``elapsed_seconds``: whole seconds for the client-side counter
    of an unfinished task, None once finished. ``note``: the "waiting: …" / "Kling not
    answering: …" line (``(text, title)``) or None. ``cancel_url``: the cancel form's action
    when the viewer may cancel this (queued) task, else "".
    """

    code: UUID
    status: str
    status_label: str
    is_stale: bool
    is_finished: bool
    elapsed_text: str
    elapsed_seconds: int | None
    detail_url: str
    thumb: dict | None
    family_label: str
    model_line: str
    link_text: str
    summary_line: str
    note: tuple[str, str] | None
    creator_name: str
    units_text: str
    created_iso: str
    created_text: str
    cancel_url: str


def _chars(text: str, length: int) -> str:
    """``text|truncatechars:length`` (``Truncator.chars``), without its per-character loop
    when the text is short and already in NFC form (then it is returned as it is)."""
    if len(text) <= length and unicodedata.is_normalized("NFC", text):
        return text
    return Truncator(text).chars(length)


def _link_text(task: Task) -> str:
    if task.prompt:
        return _chars(task.prompt, 90)
    if task.summary:
        return _chars(task.summary, 90)
    return str(task.code)[:8]


def _note(task: Task) -> tuple[str, str] | None:
    if not task.error_message:
        return None
    short = _chars(task.error_message, 40)
    if task.status == Status.QUEUED:
        return f"waiting: {short}", task.error_message
    if task.is_at_vendor:
        return f"Kling not answering: {short}", task.error_message
    return None


#: ``get_status_display`` / ``get_family_display`` without their per-call choice lookups.
_STATUS_LABELS = {str(k): str(v) for k, v in Task._meta.get_field("status").flatchoices}
_FAMILY_LABELS = {str(k): str(v) for k, v in Task._meta.get_field("family").flatchoices}


def _label(labels: dict[str, str], value: str) -> str:
    """The label of a choice, or the value itself when it has none (as Django does)."""
    return labels.get(value, value)


#: A code no task has: reversed once per page, then replaced by each row's code.
_PLACEHOLDER = UUID(int=0)


class _Urls:
    """The task page and cancel URLs of a team's tasks: two ``reverse`` calls per page, not
    two per row (the code is a UUID path segment, replaced in the reversed text)."""

    def __init__(self, team_code: Any) -> None:
        kwargs = {"team": team_code, "code": _PLACEHOLDER}
        self.detail = reverse("tasks-detail", kwargs=kwargs)
        self.cancel = reverse("tasks-cancel", kwargs=kwargs)

    def of(self, pattern: str, code: UUID) -> str:
        """``pattern`` (one of the reversed URLs) for the task ``code``."""
        return pattern.replace(str(_PLACEHOLDER), str(code))


def task_row(
    task: Task, *, team_code: Any, user: Any, can_write: bool, can_admin: bool, urls=None
) -> TaskRow:
    """The row of ``task`` for a viewer (``user``, with the team role's ``can_write`` and
    ``can_admin``). Needs ``task.creator`` selected and ``task.media`` prefetched (no query);
    ``team_code`` is the team's UUID; ``urls`` the page's ``_Urls`` (made when None)."""
    urls = urls or _Urls(team_code)
    code = task.code
    detail_url = urls.of(urls.detail, code)
    cancel_url = ""
    if (
        task.status == Status.QUEUED
        and can_write
        and (can_admin or task.creator_id == getattr(user, "pk", None))
    ):
        cancel_url = urls.of(urls.cancel, code)
    model_line = ""
    if task.model_name:
        model_line = task.model_name + (f" · {task.mode}" if task.mode else "")
    creator = task.creator
    created = timezone.localtime(task.created_at)
    return TaskRow(
        code=code,
        status=task.status,
        status_label=_label(_STATUS_LABELS, task.status),
        is_stale=task.is_stale,
        is_finished=task.is_finished,
        elapsed_text=elapsed(task),
        elapsed_seconds=None if not task.is_unfinished else elapsed_seconds(task),
        detail_url=detail_url,
        thumb=task_thumb(task),
        family_label=_label(_FAMILY_LABELS, task.family),
        model_line=model_line,
        link_text=_link_text(task),
        summary_line=_chars(task.summary, 80) if task.prompt and task.summary else "",
        note=_note(task),
        creator_name=(creator.get_username() if creator is not None else "") or "—",
        units_text=number_text(task.final_unit_deduction),
        # As ``|date:"c"`` and ``|date:"Y-m-d H:i"`` in the current time zone.
        created_iso=created.isoformat(),
        created_text=created.strftime("%Y-%m-%d %H:%M"),
        cancel_url=cancel_url,
    )


def task_rows(tasks: list[Task], *, access: Any, user: Any) -> list[TaskRow]:
    """``task_row`` for each of ``tasks`` as seen by ``user`` with ``access`` (a
    ``TeamAccess``)."""
    team_code = access.team.code
    can_write, can_admin = access.can_write, access.can_admin
    urls = _Urls(team_code)
    return [
        task_row(
            task,
            team_code=team_code,
            user=user,
            can_write=can_write,
            can_admin=can_admin,
            urls=urls,
        )
        for task in tasks
    ]


class LazyRows:
    """``task_rows(...)`` computed on first use (iteration, ``len``, truth, indexing): the
    list's live request builds no row when nothing on the page changed."""

    def __init__(self, tasks: list[Task], *, access: Any, user: Any) -> None:
        self._args = (tasks, access, user)
        self._rows: list[TaskRow] | None = None

    @property
    def rows(self) -> list[TaskRow]:
        """The rows (computed once)."""
        if self._rows is None:
            tasks, access, user = self._args
            self._rows = task_rows(tasks, access=access, user=user)
        return self._rows

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __bool__(self) -> bool:
        return bool(self._args[0])

    def __getitem__(self, index: int) -> TaskRow:
        return self.rows[index]
