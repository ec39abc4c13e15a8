"""The Kling 3.0 Omni video family: generation with the team's elements (KLING_API_2026.md
§4.5, ``POST /omni-video/kling-3.0-omni``).

It lives in ``elements_app`` because it offers the team's custom elements and the vendor's
presets (``element_list``); ``tasks_app`` must not import this app, and reaches it only
through ``settings.KLINGWEB_TASK_FAMILIES``. The form follows ``tasks_app.forms``' protocol.

Rules checked before anything is queued (§4.5, §4 "Common rules"):

- ``prompt`` ≤ 3072 characters; a storyboard ``shot n, m, words; …`` has ≤ 6 shots of
  ≥ 1 s summing to the duration, ≤ 512 characters each;
- something to generate from: a prompt, an image or a reference video;
- a last frame needs a first frame;
- a reference video (URL only, ``.mp4``/``.mov``): ``feature_video`` (reference) needs
  multi-shot on and audio off; ``base_video`` (edit) allows no first/last frame, no
  multi-shot and no native audio; ``audio=original`` needs a reference video;
- ``aspect_ratio`` is required without a first frame or a reference video;
- element limits: with a first frame ≤ 3 elements; without a reference video, images +
  multi-image elements ≤ 7, video-character elements ≤ 3, and ≤ 4 images + multi-image
  elements when both kinds are used; with a reference video, images + multi-image elements
  ≤ 4, ≤ 1 video-character element, the two kinds not mixed and no video-character element
  together with images;
- element names are not substrings of each other (prompts cite them as ``@Name``).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from elements_app.models import Element, ElementStatus, PresetElement, ReferenceType
from tasks_app.families import DESIGN_2026, TaskFamily
from tasks_app.forms import ASPECT_RATIOS, IMAGE_HELP, InputSpec, PromptField
from tasks_app.forms_v3 import (
    PROMPT_MAX_3072,
    RESOLUTIONS_4K,
    VIDEO_URL_HELP,
    NewDesignForm,
    duration_field,
    image_item,
    options_of,
    watermark_field,
)
from tasks_app.models import Family
from tasks_app.validators import check_media_url

#: How many ``refer_image`` inputs (``image_list``) the form offers.
REFER_IMAGES = 3
VIDEO_KINDS = [
    ("feature_video", "Reference (feature_video): follow its camera and motion"),
    ("base_video", "Edit (base_video): change this video"),
]
AUDIO_OMNI = [
    ("off", "Off (silent)"),
    ("native", "Native audio (generated with the video)"),
    ("original", "Keep the reference video's sound"),
]


def element_choices(team: Any) -> list[tuple[str, str, str]]:
    """``(element_id, label, reference_type)`` of what ``team`` may generate with: its
    usable custom elements (status succeed, on Kling), then the vendor's presets still
    listed. Custom elements first, each group by name."""
    out: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    customs = (
        Element.objects.filter(team=team, status=ElementStatus.SUCCEED)
        .exclude(element_id="")
        .order_by("name")
    )
    for element in customs:
        if element.element_id not in seen:
            seen.add(element.element_id)
            out.append((element.element_id, f"{element.name} (your team)", element.reference_type))
    presets = PresetElement.objects.filter(removed_at__isnull=True).exclude(element_id="")
    for preset in presets.order_by("name"):
        if preset.element_id not in seen:
            seen.add(preset.element_id)
            out.append((preset.element_id, f"{preset.name} (preset)", preset.reference_type))
    return out


def element_names(element_ids: list[str], team: Any) -> dict[str, str]:
    """``element_id`` → name for the ids (team's custom elements first, then presets)."""
    names: dict[str, str] = {}
    for element_id, name in PresetElement.objects.filter(element_id__in=element_ids).values_list(
        "element_id", "name"
    ):
        names[element_id] = name
    for element_id, name in Element.objects.filter(
        team=team, element_id__in=element_ids
    ).values_list("element_id", "name"):
        names[element_id] = name
    return names


class OmniVideoForm(NewDesignForm):
    """Kling 3.0 Omni video (§4.5): prompt, first/last frame, up to three reference images
    (``image_list``), elements of the team and presets (``element_list``), a reference
    video by URL as ``feature_video`` or ``base_video``, multi-shot, audio
    native|original|off, resolution 720p|1080p|4K, aspect ratio, duration 3–15 s,
    watermark. The rules are in the module docstring."""

    family_key = Family.OMNI_VIDEO_3_0
    inputs = (
        InputSpec(
            "first_frame",
            "first_frame",
            "image",
            "First frame",
            required=False,
            help="Optional. " + IMAGE_HELP,
        ),
        InputSpec(
            "last_frame",
            "last_frame",
            "image",
            "Last frame",
            required=False,
            help="Optional; needs a first frame.",
        ),
        *(
            InputSpec(
                f"refer_image_{n}",
                "refer_image",
                "image",
                f"Reference image {n}",
                required=False,
                help=f"Optional; cite it in the prompt as @image_{n}.",
            )
            for n in range(1, REFER_IMAGES + 1)
        ),
    )
    layout = (
        "prompt",
        "elements",
        "first_frame",
        "last_frame",
        *(f"refer_image_{n}" for n in range(1, REFER_IMAGES + 1)),
        "video_url",
        "video_kind",
        "multi_shot",
        "audio",
        "resolution",
        "aspect_ratio",
        "duration",
        "watermark",
    )

    prompt = PromptField(
        label="Prompt",
        max_chars=PROMPT_MAX_3072,
        help_text=(
            "Up to 3072 characters. Cite elements as @Name, reference images as @image_1 and "
            "the reference video as @video_1. A storyboard reads “shot 1, 2, …; shot 2, 3, …” "
            "(at most 6 shots whose seconds add up to the duration)."
        ),
    )
    elements = forms.MultipleChoiceField(
        required=False,
        label="Elements",
        widget=forms.CheckboxSelectMultiple,
        help_text="Your team's ready elements and Kling's presets (element_list).",
    )
    video_url = forms.CharField(
        required=False,
        max_length=2000,
        label="Reference video URL",
        help_text=VIDEO_URL_HELP + " 3–15 s, up to 200 MB, sides 700–4553 px, 24–60 fps.",
        widget=forms.URLInput(attrs={"placeholder": "https://…/clip.mp4"}),
    )
    video_kind = forms.ChoiceField(
        choices=VIDEO_KINDS,
        initial="feature_video",
        widget=forms.RadioSelect,
        label="Use the reference video as",
    )
    multi_shot = forms.BooleanField(
        required=False, initial=True, label="Multi-shot (let Kling cut between shots)"
    )
    audio = forms.ChoiceField(
        choices=AUDIO_OMNI, initial="off", widget=forms.RadioSelect, label="Sound"
    )
    resolution = forms.ChoiceField(choices=RESOLUTIONS_4K, initial="720p", label="Resolution")
    aspect_ratio = forms.ChoiceField(
        required=False,
        choices=[("", "From the first frame or the video"), *ASPECT_RATIOS],
        initial="16:9",
        label="Aspect ratio",
        help_text="Required without a first frame or a reference video.",
    )
    duration = duration_field()
    watermark = watermark_field()

    def __init__(self, *args: Any, team: Any, user: Any = None, **kwargs: Any):
        super().__init__(*args, team=team, user=user, **kwargs)
        self._element_kinds: dict[str, str] = {}
        self._element_labels: dict[str, str] = {}
        choices = []
        for element_id, label, kind in element_choices(team):
            self._element_kinds[element_id] = kind
            self._element_labels[element_id] = label
            choices.append((element_id, label))
        self.fields["elements"].choices = choices
        if not choices:
            self.fields[
                "elements"
            ].help_text = "Your team has no ready elements yet (create one under Elements)."

    def clean_video_url(self) -> str:
        """Empty, or an http(s) URL whose known extension is .mp4 or .mov."""
        url = (self.cleaned_data.get("video_url") or "").strip()
        if not url:
            return ""
        return check_media_url(url, "video")

    def clean(self) -> dict:
        """The cross-field rules of §4.5 (module docstring)."""
        cleaned = super().clean()
        has_first = bool(cleaned.get("first_frame")) or "first_frame_file" in self.errors
        has_last = bool(cleaned.get("last_frame"))
        refer = [cleaned.get(f"refer_image_{n}") for n in range(1, REFER_IMAGES + 1)]
        images = sum(
            1 for value in (*refer, cleaned.get("first_frame"), cleaned.get("last_frame")) if value
        )
        video = cleaned.get("video_url") or ""
        kind = cleaned.get("video_kind") or "feature_video"
        multi_shot = bool(cleaned.get("multi_shot"))
        audio = cleaned.get("audio") or "off"
        chosen = list(cleaned.get("elements") or [])
        if has_last and not cleaned.get("first_frame"):
            self.add_error("last_frame_file", "A last frame needs a first frame.")
        if not (cleaned.get("prompt") or images or video or "prompt" in self.errors):
            self.add_error("prompt", "Write a prompt, or give an image or a reference video.")
        if not cleaned.get("aspect_ratio") and not has_first and not video:
            self.add_error(
                "aspect_ratio",
                "Choose an aspect ratio: without a first frame or a reference video Kling "
                "needs one.",
            )
        if video and kind == "feature_video":
            if not multi_shot:
                self.add_error(
                    "multi_shot", "A reference video (feature_video) needs multi-shot on."
                )
            if audio != "off":
                self.add_error("audio", "A reference video (feature_video) needs the sound off.")
        if video and kind == "base_video":
            if has_first or has_last:
                self.add_error(
                    "video_kind",
                    "Editing a video (base_video) allows no first or last frame; remove them "
                    "or use the video as a reference.",
                )
            if multi_shot:
                self.add_error("multi_shot", "Editing a video (base_video) needs multi-shot off.")
            if audio == "native":
                self.add_error("audio", "Editing a video (base_video) cannot make native audio.")
        if audio == "original" and not video:
            self.add_error("audio", "“Keep the reference video's sound” needs a reference video.")
        self._check_elements(chosen, images=images, has_first=has_first, video=bool(video))
        if chosen:
            self._notes["elements"] = ", ".join(
                self._element_labels.get(e, e).rsplit(" (", 1)[0] for e in chosen
            )
        if video:
            self._notes["video"] = f"{kind} {video.rsplit('/', 1)[-1][:40]}"
        return cleaned

    def _check_elements(self, chosen: list[str], *, images: int, has_first: bool, video: bool):
        """Element limits and names (§4.5, §4.4); errors on ``elements``."""
        if not chosen:
            return
        character = sum(
            1 for e in chosen if self._element_kinds.get(e) == ReferenceType.VIDEO_REFER
        )
        multi = len(chosen) - character
        problems: list[str] = []
        if has_first and len(chosen) > 3:
            problems.append(f"With a first frame at most 3 elements (chosen {len(chosen)}).")
        if not video:
            if character > 3:
                problems.append(f"At most 3 video-character elements (chosen {character}).")
            limit = 4 if character and multi else 7
            if images + multi > limit:
                problems.append(
                    f"Images plus multi-image elements may be at most {limit}"
                    f"{' when video-character elements are used too' if limit == 4 else ''} "
                    f"(here {images} + {multi})."
                )
        else:
            if character and multi:
                problems.append(
                    "With a reference video, video-character and multi-image elements cannot "
                    "be mixed."
                )
            if character > 1:
                problems.append("With a reference video at most 1 video-character element.")
            if character and images:
                problems.append(
                    "With a reference video, video-character elements cannot be used with images."
                )
            if images + multi > 4:
                problems.append(
                    "With a reference video, images plus multi-image elements may be at most 4 "
                    f"(here {images} + {multi})."
                )
        names = [self._element_labels.get(e, e).rsplit(" (", 1)[0] for e in chosen]
        for a in names:
            for b in names:
                if a != b and a.lower() in b.lower():
                    problems.append(
                        f"Element names must not contain one another (“{a}” is in “{b}”); "
                        "the prompt could not tell them apart."
                    )
        for problem in dict.fromkeys(problems):
            self.add_error("elements", ValidationError(problem, code="element_limits"))

    @classmethod
    def initial_from_params(cls, params: dict) -> dict:
        """As the base, plus elements, reference images in order, and the video."""
        initial = super().initial_from_params(params)
        for n in range(1, REFER_IMAGES + 1):  # placed again below, in order
            initial.pop(f"refer_image_{n}_url", None)
            initial.pop(f"refer_image_{n}_stored", None)
        refer = 0
        chosen = []
        for item in (params or {}).get("contents") or []:
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            if kind == "element" and item.get("element_id"):
                chosen.append(str(item["element_id"]))
            elif kind == "refer_image" and refer < REFER_IMAGES:
                refer += 1
                value = item.get("url")
                if isinstance(value, dict) and "$file" in value:
                    initial[f"refer_image_{refer}_stored"] = value["$file"]
                elif isinstance(value, str):
                    initial[f"refer_image_{refer}_url"] = value
            elif kind in ("feature_video", "base_video"):
                initial["video_url"] = item.get("url") or ""
                initial["video_kind"] = kind
        if chosen:
            initial["elements"] = chosen
        return initial

    @classmethod
    def initial_from_query(cls, query: Any) -> dict:
        """``?element=<element_id>`` (repeatable): the element page's "Generate with this
        element" link preselects it."""
        wanted = [e.strip()[:100] for e in query.getlist("element") if e.strip()]
        return {"elements": wanted} if wanted else {}


def omni_video_params(data: dict, team: Any) -> dict:
    """§4.5 body: ``contents[]`` — the prompt, ``first_frame``/``last_frame``, each
    ``refer_image``, the reference video (``feature_video`` or ``base_video``, ``id``
    ``video_1``), each element ``{type: element, element_id, id: element_<n>}`` — plus
    ``settings{multi_shot, audio, resolution, aspect_ratio?, duration}`` and ``options``."""
    contents: list[dict] = []
    if data.get("prompt"):
        contents.append({"type": "prompt", "text": data["prompt"]})
    if data.get("first_frame"):
        contents.append(image_item("first_frame", data["first_frame"]))
    if data.get("last_frame"):
        contents.append(image_item("last_frame", data["last_frame"]))
    number = 0
    for n in range(1, REFER_IMAGES + 1):
        value = data.get(f"refer_image_{n}")
        if value:
            number += 1
            contents.append(image_item("refer_image", value, id=f"image_{number}"))
    if data.get("video_url"):
        kind = data.get("video_kind") or "feature_video"
        contents.append({"type": kind, "url": data["video_url"], "id": "video_1"})
    for n, element_id in enumerate(data.get("elements") or [], start=1):
        contents.append({"type": "element", "element_id": element_id, "id": f"element_{n}"})
    settings: dict[str, Any] = {
        "multi_shot": bool(data.get("multi_shot")),
        "audio": data.get("audio") or "off",
        "resolution": data.get("resolution") or "720p",
        "duration": int(data.get("duration") or 5),
    }
    if data.get("aspect_ratio"):
        settings["aspect_ratio"] = data["aspect_ratio"]
    return {"contents": contents, "settings": settings, "options": options_of(data)}


OMNI_VIDEO_3_0 = TaskFamily(
    key="omni_video_3_0",
    label="Kling 3.0 Omni video",
    client_family="omni_video_3_0",
    form_class="elements_app.omni.OmniVideoForm",
    template="tasks_app/create_v3.html",
    result_kind="videos",
    description=(
        "Videos with your elements, reference images and a reference video; native audio, "
        "storyboards, up to 4K."
    ),
    build_params=omni_video_params,
    design=DESIGN_2026,
    extra={"model_name": "kling-3.0-omni"},
)
