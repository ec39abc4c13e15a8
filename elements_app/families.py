"""The ``element`` task family: creating a custom element is a Kling task (§5.4).

Plugged into ``tasks_app``'s registry through ``settings.KLINGWEB_TASK_FAMILIES``;
``tasks_app`` never imports this module by name. ``on_succeed`` materialises the
``Element`` inside ``task_apply_remote``'s transaction.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tasks_app.families import TaskFamily

if TYPE_CHECKING:
    from klingweb.kling import KlingTask
    from tasks_app.models import Task

log = logging.getLogger(__name__)

#: The upload slots of an element's form data and the storage folder (``kind``) of each.
_UPLOAD_KINDS = {"frontal_image": "image", "refer_images": "image", "video": "video"}


def store_element_uploads(data: dict, team: Any) -> list[str]:
    """Save the pending uploads of element form data with ``tasks_app.uploads.upload_save``
    and put ``{"$file": name}`` in their place (``data`` is changed in place).

    ``data``: ``ElementForm.cleaned_data`` (``frontal_image`` and ``video`` an
    ``UploadedFile`` or None, ``refer_images`` a list of them). Values that are already
    ``{"$file": name}`` are left alone. Returns the storage names saved by this call.
    """
    from django.core.files.uploadedfile import UploadedFile

    from tasks_app.uploads import upload_save

    saved: list[str] = []

    def store(value: Any, kind: str) -> Any:
        if isinstance(value, UploadedFile):
            name = upload_save(team=team, file=value, kind=kind)
            saved.append(name)
            return {"$file": name}
        return value

    for key, kind in _UPLOAD_KINDS.items():
        value = data.get(key)
        if isinstance(value, list):
            data[key] = [store(item, kind) for item in value]
        elif value:
            data[key] = store(value, kind)
    return saved


def _ref(value: Any) -> Any:
    """A body value for a stored input: ``{"$file": name}`` (a bare name is wrapped)."""
    return {"$file": value} if isinstance(value, str) else value


def element_build_params(cleaned_data: dict, team: Any) -> dict:
    """The create body of ``POST /v1/general/advanced-custom-elements`` (§5.4) from an
    ``ElementForm``'s ``cleaned_data`` whose uploads were stored (``store_element_uploads``
    or ``ElementForm.store_files``): inputs as ``{"$file": name}``, inlined as Base64 at send
    time. Pending uploads still in ``cleaned_data`` are stored first. Without
    ``callback_url`` / ``external_task_id`` (added when sending).

    Shape: ``{"element_name", "element_description", "reference_type",
    "element_image_list": {"frontal_image": F, "refer_images": [{"image_url": F}, ...]}``
    or ``"element_video_list": {"refer_videos": [{"video_url": F}]}``, optional
    ``"element_voice_id"`` and ``"tag_list": [{"tag_id": "o_101"}, ...]}``.
    """
    data = dict(cleaned_data)
    store_element_uploads(data, team)
    body: dict[str, Any] = {
        "element_name": data["name"],
        "element_description": data["description"],
        "reference_type": data["reference_type"],
    }
    if data["reference_type"] == "image_refer":
        body["element_image_list"] = {
            "frontal_image": _ref(data.get("frontal_image")),
            "refer_images": [
                {"image_url": _ref(image)} for image in data.get("refer_images") or []
            ],
        }
    else:
        body["element_video_list"] = {"refer_videos": [{"video_url": _ref(data.get("video"))}]}
    if data.get("voice_id"):
        body["element_voice_id"] = data["voice_id"]
    if data.get("tags"):
        body["tag_list"] = [{"tag_id": tag} for tag in data["tags"]]
    return body


def element_on_succeed(task: Task, remote: KlingTask) -> None:
    """Hook of ``task_apply_remote`` (same transaction): turn the task's
    ``task_result.elements[0]`` into the team's ``Element`` (see
    ``elements_app.services.element_materialise``)."""
    from django.db import transaction

    from elements_app.services import element_materialise

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
