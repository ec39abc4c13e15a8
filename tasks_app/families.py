"""The task-family registry: what differs between kinds of task, in one place per family.

A family declares its form, its client family name (the ``family`` argument of
``KlingClient.create_task`` / ``get_task`` / ``list_tasks``), how to turn the form's cleaned
data into stored params and a request body, and how to read its result. The families the
portal offers are listed in ``settings.KLINGWEB_TASK_FAMILIES`` as dotted paths, so
``elements_app`` plugs its family in without ``tasks_app`` importing it.

Adding a family: one ``TaskFamily`` object, a form class and a template, and its dotted path
in the setting.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from klingweb.kling import KlingTask
    from tasks_app.models import Task


class UnknownFamily(KeyError):
    """No registered family has that key."""


def resolve_files(value: Any) -> Any:
    """Return ``value`` with every ``{"$file": name}`` replaced by the file's raw Base64.

    Reads from Django's default storage; no ``data:`` prefix (KLING_API.md §5). Lists and
    dicts are walked recursively. Raises ``FileNotFoundError`` if a stored input is gone.
    """
    if isinstance(value, dict):
        if set(value) == {"$file"}:
            with default_storage.open(value["$file"], "rb") as fh:
                return base64.b64encode(fh.read()).decode("ascii")
        return {key: resolve_files(item) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_files(item) for item in value]
    return value


@dataclass(frozen=True)
class TaskFamily:
    """One kind of task.

    - ``key``: the ``Family`` value stored on ``Task.family``.
    - ``client_family``: the family name the Kling client takes.
    - ``form_class``: dotted path of the form; its ``cleaned_data`` feeds ``build_params``.
    - ``template``: the create page's template.
    - ``build_params(cleaned_data, team) -> dict``: the request body to store, files as
      ``{"$file": name}`` (already saved to storage by the form), without ``callback_url``
      or ``external_task_id`` (added at send time).
    - ``on_succeed(task, remote)``: optional hook run inside ``task_apply_remote``'s
      transaction when a task of this family succeeds (elements materialise here).
    - ``result_kind``: ``"images"``, ``"videos"`` or ``"elements"``.
    """

    key: str
    label: str
    client_family: str
    form_class: str
    template: str
    result_kind: str
    description: str = ""
    build_params: Callable[[dict, Any], dict] | None = None
    on_succeed: Callable[[Task, KlingTask], None] | None = None
    extra: dict = field(default_factory=dict)

    def get_form_class(self) -> type:
        """Import and return the form class."""
        return import_string(self.form_class)

    def request_body(self, task: Task, *, callback_url: str | None) -> dict:
        """The JSON body of the create call for ``task``: stored params with files inlined
        as Base64, plus ``external_task_id`` and ``callback_url`` when given."""
        body = resolve_files(task.params)
        body["external_task_id"] = task.external_task_id
        if callback_url:
            body["callback_url"] = callback_url
        return body


@cache
def registry() -> dict[str, TaskFamily]:
    """All families of ``settings.KLINGWEB_TASK_FAMILIES``, by key, in settings order."""
    families = [import_string(path) for path in settings.KLINGWEB_TASK_FAMILIES]
    return {family.key: family for family in families}


def get_family(key: str) -> TaskFamily:
    """Return the registered family ``key``; raises ``UnknownFamily``."""
    try:
        return registry()[key]
    except KeyError:
        raise UnknownFamily(key) from None


# The built-in families (AVATAR, VIDEO_EXTEND, MULTI_SHOT, TEXT2VIDEO, IMAGE2VIDEO) are
# defined below by the tasks issue, next to their forms in tasks_app/forms.py.
