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

from tasks_app.inputs import inputs_resolve

if TYPE_CHECKING:
    from klingweb.kling import KlingTask
    from tasks_app.models import Task


#: ``TaskFamily.design`` values (KLING_API_2026.md §1).
DESIGN_LEGACY = "legacy"
DESIGN_2026 = "2026"


class UnknownFamily(KeyError):
    """No registered family has that key."""


def resolve_files(value: Any) -> Any:
    """Return ``value`` with every ``{"$file": name}`` replaced by the file's raw Base64.

    Reads from Django's default storage; no ``data:`` prefix (KLING_API.md §5). Lists and
    dicts are walked recursively. Raises ``FileNotFoundError`` if a stored input is gone.
    The create call uses ``tasks_app.inputs.inputs_resolve`` (URLs when the portal has a
    public address, this Base64 only for images and sound when it has none).
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
    - ``design``: the vendor API design the family is sent on (KLING_API_2026.md §1):
      ``"legacy"`` (``/v1`` paths, ``model_name`` and flat bodies; ``client_family`` is a
      ``FAMILY_PATHS`` key) or ``"2026"`` (``/{capability}/{model}`` paths, bodies of
      ``prompt``/``contents[]``, ``settings{}``, ``options{}``; ``client_family`` is a
      ``NEW_DESIGN_PATHS`` key of the client, queried with ``GET /tasks``). A task's design
      is its family's: ``Task.family`` records it.
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
    design: str = DESIGN_LEGACY

    def get_form_class(self) -> type:
        """Import and return the form class."""
        return import_string(self.form_class)

    def request_body(self, task: Task, *, callback_url: str | None) -> dict:
        """The JSON body of the create call for ``task``: stored params with each upload
        given as a signed, expiring URL when the portal has a public address, else as raw
        Base64 (``tasks_app.inputs.inputs_resolve``), plus ``external_task_id`` and
        ``callback_url`` when given — at the top level on the legacy design, inside
        ``options{}`` on the 2026 design (§4). Raises ``FileNotFoundError`` (an upload is
        gone) and ``tasks_app.inputs.InputNeedsPublicAddress`` (a video, no public address)."""
        body = inputs_resolve(task.params)
        if self.design == DESIGN_2026:
            # KLING_API_2026.md §4 "Common rules": both ids live in options{}.
            options = dict(body.get("options") or {})
            options["external_task_id"] = task.external_task_id
            if callback_url:
                options["callback_url"] = callback_url
            body["options"] = options
            return body
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


# The built-in families (AVATAR, VIDEO_EXTEND, MULTI_SHOT, TEXT2VIDEO, IMAGE2VIDEO). Their
# forms (tasks_app/forms.py) check the vendor rules and store uploads; the builders below turn
# ``cleaned_data`` (files already ``{"$file": name}``, URLs as strings) into the request body
# of KLING_API.md §5. The generic create view (tasks_app.views.task_create) serves any family
# whose ``extra`` has no ``create_url_name``; see tasks_app/forms.py for the form protocol.


def _put(body: dict, key: str, value: Any) -> None:
    """Set ``body[key]`` unless ``value`` is empty (None or "")."""
    if value is not None and value != "":
        body[key] = value


def _avatar_params(data: dict, team: Any) -> dict:
    """§5.2: image, exactly one of sound_file / audio_id, prompt, mode, watermark_info."""
    body: dict = {"image": data["image"]}
    if data.get("audio_id"):
        body["audio_id"] = data["audio_id"].strip()
    else:
        body["sound_file"] = data["sound"]
    _put(body, "prompt", data.get("prompt"))
    body["mode"] = data.get("mode") or "std"
    body["watermark_info"] = {"enabled": bool(data.get("watermark"))}
    return body


def _video_extend_params(data: dict, team: Any) -> dict:
    """§5.3: video_id, prompt, negative_prompt, cfg_scale, watermark_info."""
    body: dict = {"video_id": data["video_id"]}
    _put(body, "prompt", data.get("prompt"))
    _put(body, "negative_prompt", data.get("negative_prompt"))
    _put(body, "cfg_scale", data.get("cfg_scale"))
    body["watermark_info"] = {"enabled": bool(data.get("watermark"))}
    return body


def _multi_shot_params(data: dict, team: Any) -> dict:
    """§5.1: element_frontal_image."""
    return {"element_frontal_image": data["frontal_image"]}


def _legacy_video_options(body: dict, data: dict) -> None:
    """KLING_API_2026.md §5 on the legacy video bodies: ``sound`` (when chosen),
    ``camera_control`` (``{type}`` or ``{type: simple, config: {axis: amount}}``) and
    ``watermark_info``."""
    _put(body, "sound", data.get("sound"))
    kind = data.get("camera_type") or ""
    if kind == "simple":
        body["camera_control"] = {
            "type": "simple",
            "config": {data["camera_axis"]: data["camera_amount"]},
        }
    elif kind:
        body["camera_control"] = {"type": kind}
    if data.get("watermark"):  # the vendor default is off: sent only when asked for
        body["watermark_info"] = {"enabled": True}


def _text2video_params(data: dict, team: Any) -> dict:
    """§5.6: model_name, prompt, negative_prompt, cfg_scale, mode, aspect_ratio, duration,
    and sound, camera_control, watermark_info (KLING_API_2026.md §5)."""
    body: dict = {"model_name": data["model_name"], "prompt": data["prompt"]}
    _put(body, "negative_prompt", data.get("negative_prompt"))
    _put(body, "cfg_scale", data.get("cfg_scale"))
    body["mode"] = data.get("mode") or "std"
    body["aspect_ratio"] = data.get("aspect_ratio") or "16:9"
    body["duration"] = data.get("duration") or "5"
    _legacy_video_options(body, data)
    return body


def _image2video_params(data: dict, team: Any) -> dict:
    """§5.6: model_name, image, image_tail, prompt, negative_prompt, cfg_scale, mode,
    duration, and sound, camera_control, watermark_info (KLING_API_2026.md §5)."""
    body: dict = {"model_name": data["model_name"], "image": data["image"]}
    _put(body, "image_tail", data.get("image_tail"))
    _put(body, "prompt", data.get("prompt"))
    _put(body, "negative_prompt", data.get("negative_prompt"))
    _put(body, "cfg_scale", data.get("cfg_scale"))
    body["mode"] = data.get("mode") or "std"
    body["duration"] = data.get("duration") or "5"
    _legacy_video_options(body, data)
    return body


AVATAR = TaskFamily(
    key="avatar",
    label="Avatar",
    client_family="avatar",
    form_class="tasks_app.forms.AvatarForm",
    template="tasks_app/create_avatar.html",
    result_kind="videos",
    description="A talking video from a portrait and a voice.",
    build_params=_avatar_params,
)
VIDEO_EXTEND = TaskFamily(
    key="video_extend",
    label="Video extension",
    client_family="video_extend",
    form_class="tasks_app.forms.VideoExtendForm",
    template="tasks_app/create_video_extend.html",
    result_kind="videos",
    description="Add 4–5 seconds to a video made by text- or image-to-video.",
    build_params=_video_extend_params,
)
MULTI_SHOT = TaskFamily(
    key="multi_shot",
    label="AI multi-shot",
    client_family="multi_shot",
    form_class="tasks_app.forms.MultiShotForm",
    template="tasks_app/create_multi_shot.html",
    result_kind="images",
    description="Three sets of shots of a subject from its frontal image.",
    build_params=_multi_shot_params,
)
TEXT2VIDEO = TaskFamily(
    key="text2video",
    label="Text to video",
    client_family="text2video",
    form_class="tasks_app.forms.Text2VideoForm",
    template="tasks_app/create_text2video.html",
    result_kind="videos",
    description="A video from a written prompt.",
    build_params=_text2video_params,
)
IMAGE2VIDEO = TaskFamily(
    key="image2video",
    label="Image to video",
    client_family="image2video",
    form_class="tasks_app.forms.Image2VideoForm",
    template="tasks_app/create_image2video.html",
    result_kind="videos",
    description="A video that starts from an image (and optionally ends on another).",
    build_params=_image2video_params,
)
