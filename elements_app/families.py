"""The ``element`` task family: creating a custom element is a Kling task (§5.4).

Plugged into ``tasks_app``'s registry through ``settings.KLINGWEB_TASK_FAMILIES``;
``tasks_app`` never imports this module by name. Storing uploads and building the create
body are ``elements_app.services``' (one place); this module only points the registry at
them. ``on_succeed`` materialises the ``Element`` inside ``task_apply_remote``'s transaction.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.db import transaction

from elements_app.services import element_materialise, element_params_build, element_uploads_store
from tasks_app.families import TaskFamily

if TYPE_CHECKING:
    from klingweb.kling import KlingTask
    from tasks_app.models import Task

log = logging.getLogger(__name__)


def element_build_params(cleaned_data: dict, team: Any) -> dict:
    """``TaskFamily.build_params`` of the family: the §5.4 create body of an
    ``ElementForm``'s ``cleaned_data`` (``element_params_build``), its pending uploads stored
    first, once (``element_uploads_store``; already stored ones are left alone).
    ``cleaned_data`` itself is not changed."""
    data = dict(cleaned_data)
    element_uploads_store(data=data, team=team)
    return element_params_build(data=data)


def element_on_succeed(task: Task, remote: KlingTask) -> None:
    """Hook of ``task_apply_remote`` (same transaction): turn the task's
    ``task_result.elements[0]`` into the team's ``Element`` (see
    ``elements_app.services.element_materialise``)."""
    # A savepoint: whatever goes wrong here is logged and must not undo the task's status
    # and ledger row (the element can be imported later from the custom list).
    try:
        with transaction.atomic():
            element_materialise(task=task, remote=remote)
    except Exception:
        log.exception("task %s: could not materialise its element", task.pk)


ELEMENT = TaskFamily(
    key="element",
    label="Custom element",
    client_family="element",
    form_class="elements_app.forms.ElementForm",
    template="elements_app/element_form.html",
    result_kind="elements",
    description="A reusable subject (character, item, scene) for later generations.",
    build_params=element_build_params,
    on_succeed=element_on_succeed,
    # The element pages own creation (they also make the Element row); a generic
    # "new task" menu should link here instead of its own form.
    extra={"create_url_name": "elements-create"},
)
