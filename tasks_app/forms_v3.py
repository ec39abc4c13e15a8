"""Create forms of the Kling 3.0 family on the 2026 API design (KLING_API_2026.md §4).

Same protocol as ``tasks_app.forms`` (see its module docstring). Every rule the vendor
documents for these endpoints is checked here, before anything is queued, with the error on
the field it concerns:

- prompts: ≤ 3072 characters (3.0 text-to-video, 3.0 Turbo text-to-video, Omni), ≤ 2500
  (3.0 Turbo image-to-video, motion control);
- storyboard prompts ``shot n, m, words; …`` (§4 "Multi-shot prompt"): 1–6 shots, each
  ``m`` ≥ 1 s, the ``m`` summing to the video's duration, each ``words`` ≤ 512 characters
  (``check_storyboard``);
- settings: ``duration`` 3–15 s, ``resolution`` per endpoint (4K only on 3.0 and Omni),
  ``aspect_ratio`` 16:9 | 9:16 | 1:1, ``audio`` per endpoint;
- motion control (§4.6): one image, one reference video by URL (``.mp4``/``.mov``), the
  required ``character_orientation``.

Images are checked by ``tasks_app.validators.check_image_file`` (the portal's image rule:
JPG/PNG, ≤ 10 MB, sides ≥ 300 px, aspect 1:2.5–2.5:1), stricter in size than the 2026
design's 50 MB. Reference videos are taken by URL only (the vendor fetches them; its length,
size and pixel limits are checked by the vendor, and a refusal is shown on the task page).

The Omni form lives in ``elements_app.omni`` (it offers the team's elements).
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.module_loading import import_string

from tasks_app.forms import ASPECT_RATIOS, IMAGE_HELP, InputSpec, PromptField, TaskForm
from tasks_app.models import Family
from tasks_app.validators import check_media_url

#: Prompt limits of the 3.0 family (KLING_API_2026.md §4.1–§4.6), in characters.
PROMPT_MAX_3072 = 3072
PROMPT_MAX_2500 = 2500
#: Storyboard limits (§4 "Multi-shot prompt").
SHOTS_MAX = 6
SHOT_WORDS_MAX = 512
#: ``settings.duration``: integer seconds 3–15 on the 3.0 family.
DURATIONS_3_15 = [(str(s), f"{s} s") for s in range(3, 16)]
RESOLUTIONS_1080 = [("720p", "720p"), ("1080p", "1080p")]
RESOLUTIONS_4K = [("720p", "720p"), ("1080p", "1080p"), ("4k", "4K")]
AUDIO_3_0 = [("off", "Off (silent)"), ("native", "Native audio (generated with the video)")]
VIDEO_URL_HELP = (
    "An http(s) URL of an .mp4 or .mov file Kling can fetch (reference videos are taken by "
    "URL only)."
)


def team_element_choices(team: Any) -> list[tuple[str, str, str]]:
    """``(element_id, label, reference_type)`` of the elements ``team`` may generate with,
    from the hook ``settings.KLINGWEB_ELEMENT_CHOICES`` (a dotted path; ``elements_app``
    plugs in its library there, so ``tasks_app`` never imports it). ``[]`` without a hook."""
    path = getattr(settings, "KLINGWEB_ELEMENT_CHOICES", "")
    return list(import_string(path)(team)) if path else []


_LOOKS_LIKE_SHOTS = re.compile(r"^\s*shot\s+\d+\s*,", re.IGNORECASE)
_SHOT = re.compile(r"^\s*shot\s+(\d+)\s*,\s*(\d+)\s*,(.*)$", re.IGNORECASE | re.DOTALL)


def is_storyboard(prompt: str) -> bool:
    """True when ``prompt`` is written as a storyboard (starts with ``shot <n>,``)."""
    return bool(_LOOKS_LIKE_SHOTS.match(prompt or ""))


def check_storyboard(prompt: str, *, duration: int) -> int:
    """Check a storyboard prompt ``shot n, m, words; shot n, m, words; …`` against a video of
    ``duration`` seconds (KLING_API_2026.md §4 "Multi-shot prompt").

    Rules: 1 to 6 shots, separated by ``;``; each reads ``shot <n>, <seconds>, <words>``
    with shots numbered 1, 2, … in order (the vendor pages number them so; the sandbox
    refuses any other order); each shot lasts at least 1 s; the seconds add up to
    ``duration``; each shot's words are at most 512 characters. A prompt that does not
    start with ``shot <n>,`` is an ordinary prompt: returns 0. Returns the number of shots.
    Raises ``ValidationError`` saying which shot breaks which rule.
    """
    if not is_storyboard(prompt):
        return 0
    parts = [part for part in prompt.split(";") if part.strip()]
    if len(parts) > SHOTS_MAX:
        raise ValidationError(
            f"A storyboard has at most {SHOTS_MAX} shots; this one has {len(parts)}.",
            code="shots_too_many",
        )
    total = 0
    for index, part in enumerate(parts, start=1):
        match = _SHOT.match(part)
        if match is None:
            raise ValidationError(
                f"Shot {index} must read “shot {index}, <seconds>, <what happens>”.",
                code="shot_syntax",
            )
        number, seconds, words = int(match[1]), int(match[2]), match[3].strip()
        if number != index:
            raise ValidationError(
                f"Number the shots 1, 2, … in order: shot {index} is numbered {number}.",
                code="shot_order",
            )
        if seconds < 1:
            raise ValidationError(f"Shot {index} must last at least 1 s.", code="shot_short")
        if len(words) > SHOT_WORDS_MAX:
            raise ValidationError(
                f"Shot {index} is {len(words)} characters long; a shot's words are limited "
                f"to {SHOT_WORDS_MAX}.",
                code="shot_long",
            )
        total += seconds
    if total != duration:
        raise ValidationError(
            f"The shots last {total} s in all but the video is {duration} s; make the "
            "shot durations add up to the duration.",
            code="shots_total",
        )
    return len(parts)


def duration_field() -> forms.ChoiceField:
    """``settings.duration``: 3–15 s (sent as an integer)."""
    return forms.ChoiceField(choices=DURATIONS_3_15, initial="5", label="Duration")


def watermark_field() -> forms.BooleanField:
    """``options.watermark_info.enabled``."""
    return forms.BooleanField(
        required=False, label="Also make a watermarked copy (watermark_info.enabled)"
    )


def options_of(data: dict) -> dict:
    """``options{}`` of a 2026-design body from a form's ``cleaned_data``: the watermark
    switch (``external_task_id`` and ``callback_url`` are added at send time)."""
    return {"watermark_info": {"enabled": bool(data.get("watermark"))}}


def image_item(kind: str, value: Any, **extra: Any) -> dict:
    """A ``contents[]`` image item ``{type, url}``: ``value`` is a URL or ``{"$file":
    name}`` (inlined as raw Base64 at send time)."""
    return {"type": kind, "url": value, **extra}


class NewDesignForm(TaskForm):
    """Base of the 2026-design forms: the storyboard check of ``prompt`` against
    ``duration`` (when both are fields), and "run again" from a stored body
    (``prompt``/``contents``/``settings``/``options``)."""

    storyboard_prompt: bool = True

    def clean(self) -> dict:
        """Check a storyboard prompt against the chosen duration."""
        cleaned = super().clean()
        prompt = cleaned.get("prompt") or ""
        if self.storyboard_prompt and "prompt" not in self.errors and is_storyboard(prompt):
            try:
                duration = int(cleaned.get("duration") or 5)
            except (TypeError, ValueError):
                return cleaned
            try:
                count = check_storyboard(prompt, duration=duration)
            except ValidationError as exc:
                self.add_error("prompt", exc)
            else:
                self._notes["shots"] = f"{count} shot{'s' if count != 1 else ''}"
        return cleaned

    def describe(self) -> tuple[str, str]:
        """The prompt; inputs, shots and settings in words."""
        prompt, summary = super().describe()
        data = self.cleaned_data
        bits = [summary] if summary else []
        if self._notes.get("shots"):
            bits.append(self._notes["shots"])
        for key in ("resolution", "audio"):
            if data.get(key):
                bits.append(f"{key} {data[key]}")
        if data.get("duration"):
            bits.append(f"{data['duration']} s")
        return prompt, " · ".join(bits)[:200]

    @classmethod
    def initial_from_params(cls, params: dict) -> dict:
        """Initial data from a stored 2026 body: prompt (top level or the ``prompt`` item
        of ``contents``), image items back into their inputs, ``settings`` and the
        watermark switch."""
        initial: dict[str, Any] = {}
        params = params or {}
        if isinstance(params.get("prompt"), str):
            initial["prompt"] = params["prompt"]
        by_type = {spec.param: spec for spec in cls.inputs}
        for item in params.get("contents") or []:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "prompt":
                initial["prompt"] = item.get("text") or ""
            spec = by_type.get(str(item.get("type")))
            value = item.get("url")
            if spec is not None and f"{spec.name}_url" not in initial:
                if isinstance(value, dict) and "$file" in value:
                    initial[f"{spec.name}_stored"] = value["$file"]
                elif isinstance(value, str):
                    initial[f"{spec.name}_url"] = value
        for key, value in (params.get("settings") or {}).items():
            if isinstance(value, bool | str):
                initial[key] = value
            elif isinstance(value, int):
                initial[key] = str(value)
        watermark = (params.get("options") or {}).get("watermark_info") or {}
        initial["watermark"] = bool(watermark.get("enabled"))
        return initial


# -- Kling 3.0 Turbo (§4.1, §4.2) ---------------------------------------------------------


class Turbo30Text2VideoForm(NewDesignForm):
    """Kling 3.0 Turbo text-to-video (§4.1): prompt (required, ≤ 3072, storyboard allowed),
    resolution 720p|1080p, aspect ratio, duration 3–15 s, watermark. Native audio is part of
    the model (its control is undocumented: no field)."""

    family_key = Family.T2V_3_0_TURBO

    prompt = PromptField(
        label="Prompt",
        required=True,
        max_chars=PROMPT_MAX_3072,
        help_text=(
            "Up to 3072 characters. A storyboard reads “shot 1, 2, a door opens; shot 2, 3, "
            "…” — at most 6 shots whose seconds add up to the duration."
        ),
    )
    resolution = forms.ChoiceField(choices=RESOLUTIONS_1080, initial="720p", label="Resolution")
    aspect_ratio = forms.ChoiceField(choices=ASPECT_RATIOS, initial="16:9", label="Aspect ratio")
    duration = duration_field()
    watermark = watermark_field()


class Turbo30Image2VideoForm(NewDesignForm):
    """Kling 3.0 Turbo image-to-video (§4.2): first frame (required; no last frame), prompt
    ≤ 2500, resolution 720p|1080p, duration 3–15 s, watermark."""

    family_key = Family.I2V_3_0_TURBO
    inputs = (InputSpec("first_frame", "first_frame", "image", "First frame", help=IMAGE_HELP),)

    prompt = PromptField(label="Prompt", max_chars=PROMPT_MAX_2500)
    resolution = forms.ChoiceField(choices=RESOLUTIONS_1080, initial="720p", label="Resolution")
    duration = duration_field()
    watermark = watermark_field()


# -- Kling 3.0 text-to-video (§4.3) -------------------------------------------------------


class V30Text2VideoForm(NewDesignForm):
    """Kling 3.0 text-to-video (§4.3): prompt (required, ≤ 3072, storyboard allowed),
    multi-shot switch, audio native|off, resolution 720p|1080p|4K, aspect ratio, duration
    3–15 s, watermark."""

    family_key = Family.T2V_3_0

    prompt = PromptField(
        label="Prompt",
        required=True,
        max_chars=PROMPT_MAX_3072,
        help_text=(
            "Up to 3072 characters. A storyboard reads “shot 1, 2, …; shot 2, 3, …” — at most "
            "6 shots, each up to 512 characters, whose seconds add up to the duration."
        ),
    )
    multi_shot = forms.BooleanField(
        required=False, initial=True, label="Multi-shot (let Kling cut between shots)"
    )
    audio = forms.ChoiceField(
        choices=AUDIO_3_0, initial="off", widget=forms.RadioSelect, label="Sound"
    )
    resolution = forms.ChoiceField(choices=RESOLUTIONS_4K, initial="720p", label="Resolution")
    aspect_ratio = forms.ChoiceField(choices=ASPECT_RATIOS, initial="16:9", label="Aspect ratio")
    duration = duration_field()
    watermark = watermark_field()


class V30Image2VideoForm(NewDesignForm):
    """Kling 3.0 image-to-video (§4.4): first frame (required), last frame, up to 3 elements
    of the team or presets (cited in the prompt as ``@Name``; no name inside another),
    prompt ≤ 3072 (storyboard allowed), multi-shot, audio native|off, resolution
    720p|1080p|4K, duration 3–15 s, watermark."""

    family_key = Family.I2V_3_0
    inputs = (
        InputSpec("first_frame", "first_frame", "image", "First frame", help=IMAGE_HELP),
        InputSpec(
            "last_frame",
            "last_frame",
            "image",
            "Last frame",
            required=False,
            help="Optional. " + IMAGE_HELP,
        ),
    )
    layout = (
        "first_frame",
        "last_frame",
        "prompt",
        "elements",
        "multi_shot",
        "audio",
        "resolution",
        "duration",
        "watermark",
    )

    prompt = PromptField(
        label="Prompt",
        max_chars=PROMPT_MAX_3072,
        help_text="Up to 3072 characters; cite elements as @Name. Storyboards allowed.",
    )
    elements = forms.MultipleChoiceField(
        required=False,
        label="Elements (at most 3)",
        widget=forms.CheckboxSelectMultiple,
    )
    multi_shot = forms.BooleanField(
        required=False, initial=True, label="Multi-shot (let Kling cut between shots)"
    )
    audio = forms.ChoiceField(
        choices=AUDIO_3_0, initial="off", widget=forms.RadioSelect, label="Sound"
    )
    resolution = forms.ChoiceField(choices=RESOLUTIONS_4K, initial="720p", label="Resolution")
    duration = duration_field()
    watermark = watermark_field()

    def __init__(self, *args: Any, team: Any, user: Any = None, **kwargs: Any):
        super().__init__(*args, team=team, user=user, **kwargs)
        self._labels = {e: label for e, label, _ in team_element_choices(team)}
        if not self._labels:
            del self.fields["elements"]
            self.layout = tuple(name for name in self.layout if name != "elements")
            return
        self.fields["elements"].choices = list(self._labels.items())

    def clean(self) -> dict:
        """At most 3 elements, none named inside another."""
        cleaned = super().clean()
        chosen = list(cleaned.get("elements") or [])
        if len(chosen) > 3:
            self.add_error("elements", f"At most 3 elements (chosen {len(chosen)}).")
        names = [self._labels.get(e, e).rsplit(" (", 1)[0] for e in chosen]
        for a in names:
            for b in names:
                if a != b and a.lower() in b.lower():
                    self.add_error(
                        "elements",
                        f"Element names must not contain one another (“{a}” is in “{b}”); "
                        "the prompt could not tell them apart.",
                    )
        return cleaned

    @classmethod
    def initial_from_params(cls, params: dict) -> dict:
        """As the base, plus the elements."""
        initial = super().initial_from_params(params)
        chosen = [
            str(item.get("element_id"))
            for item in (params or {}).get("contents") or []
            if isinstance(item, dict) and item.get("type") == "element"
        ]
        if chosen:
            initial["elements"] = chosen
        return initial

    @classmethod
    def initial_from_query(cls, query: Any) -> dict:
        """``?element=<element_id>`` (repeatable) preselects elements."""
        wanted = [e.strip()[:100] for e in query.getlist("element") if e.strip()]
        return {"elements": wanted} if wanted else {}


# -- motion control (§4.6) ----------------------------------------------------------------


class MotionControlForm(NewDesignForm):
    """Motion control (§4.6), Kling 3.0 or 2.6: the character image (required), the motion
    reference video by URL (required; ``.mp4``/``.mov``, ≤ 100 MB, sides 340–3850 px,
    3–30 s with orientation ``video`` or 3–10 s with ``image``, checked by the vendor on
    fetch), ``character_orientation`` image|video (required), one element (3.0 only; the
    team's ready elements and presets through ``team_element_choices``), prompt ≤ 2500,
    audio original|off, resolution 720p|1080p, watermark. No duration: billed on output
    seconds."""

    family_key = Family.MOTION_3_0
    storyboard_prompt = False
    inputs = (
        InputSpec(
            "image", "image", "image", "Character image", help="Whose body moves. " + IMAGE_HELP
        ),
    )
    layout = (
        "image",
        "video_url",
        "character_orientation",
        "element",
        "prompt",
        "audio",
        "resolution",
        "watermark",
    )
    #: Kling 3.0 motion control takes one element (§4.6); 2.6 none.
    takes_element: bool = True

    video_url = forms.CharField(
        max_length=2000,
        label="Motion reference video URL",
        help_text=VIDEO_URL_HELP
        + " Up to 100 MB, 3–30 s (orientation “video”) or 3–10 s (“image”).",
        widget=forms.URLInput(attrs={"placeholder": "https://…/dance.mp4"}),
    )
    character_orientation = forms.ChoiceField(
        choices=[
            ("image", "As in the image (video up to 10 s)"),
            ("video", "As in the video (video up to 30 s)"),
        ],
        widget=forms.RadioSelect,
        label="Character orientation",
    )
    element = forms.ChoiceField(
        required=False,
        label="Element (optional)",
        help_text="One of your team's ready elements or a Kling preset (at most 1).",
    )
    prompt = PromptField(label="Prompt", max_chars=PROMPT_MAX_2500)
    audio = forms.ChoiceField(
        choices=[("original", "Keep the reference video's sound"), ("off", "Off")],
        initial="original",
        widget=forms.RadioSelect,
        label="Sound",
    )
    resolution = forms.ChoiceField(choices=RESOLUTIONS_1080, initial="720p", label="Resolution")
    watermark = watermark_field()

    def __init__(self, *args: Any, team: Any, user: Any = None, **kwargs: Any):
        super().__init__(*args, team=team, user=user, **kwargs)
        if not self.takes_element:
            del self.fields["element"]
            return
        choices = [(element_id, label) for element_id, label, _ in team_element_choices(team)]
        if not choices:
            del self.fields["element"]
            return
        self.fields["element"].choices = [("", "None"), *choices]

    def clean_video_url(self) -> str:
        """An http(s) URL; a known extension must be .mp4 or .mov."""
        url = check_media_url(self.cleaned_data.get("video_url") or "", "video")
        self._notes["video"] = url.rsplit("/", 1)[-1][:60]
        return url

    @classmethod
    def initial_from_params(cls, params: dict) -> dict:
        """As the base, plus the ``video`` item's URL."""
        initial = super().initial_from_params(params)
        for item in (params or {}).get("contents") or []:
            if isinstance(item, dict) and item.get("type") == "video":
                initial["video_url"] = item.get("url") or ""
            if isinstance(item, dict) and item.get("type") == "element":
                initial["element"] = str(item.get("element_id") or "")
        return initial

    @classmethod
    def initial_from_query(cls, query: Any) -> dict:
        """``?element=<element_id>`` preselects the element (3.0 only)."""
        wanted = (query.get("element") or "").strip()[:100]
        return {"element": wanted} if wanted and cls.takes_element else {}


class MotionControl26Form(MotionControlForm):
    """Motion control on Kling 2.6 (§4.6): as 3.0 without an element."""

    family_key = Family.MOTION_2_6
    takes_element = False


# -- request bodies (TaskFamily.build_params) ---------------------------------------------


def t2v_3_0_turbo_params(data: dict, team: Any) -> dict:
    """§4.1 body: ``prompt``, ``settings{resolution, aspect_ratio, duration}``, ``options``."""
    return {
        "prompt": data["prompt"],
        "settings": {
            "resolution": data.get("resolution") or "720p",
            "aspect_ratio": data.get("aspect_ratio") or "16:9",
            "duration": int(data.get("duration") or 5),
        },
        "options": options_of(data),
    }


def i2v_3_0_turbo_params(data: dict, team: Any) -> dict:
    """§4.2 body: ``contents[prompt?, first_frame]``, ``settings{resolution, duration}``,
    ``options``."""
    contents: list[dict] = []
    if data.get("prompt"):
        contents.append({"type": "prompt", "text": data["prompt"]})
    contents.append(image_item("first_frame", data["first_frame"]))
    return {
        "contents": contents,
        "settings": {
            "resolution": data.get("resolution") or "720p",
            "duration": int(data.get("duration") or 5),
        },
        "options": options_of(data),
    }


def t2v_3_0_params(data: dict, team: Any) -> dict:
    """§4.3 body: ``prompt``, ``settings{multi_shot, audio, resolution, aspect_ratio,
    duration}``, ``options``."""
    return {
        "prompt": data["prompt"],
        "settings": {
            "multi_shot": bool(data.get("multi_shot")),
            "audio": data.get("audio") or "off",
            "resolution": data.get("resolution") or "720p",
            "aspect_ratio": data.get("aspect_ratio") or "16:9",
            "duration": int(data.get("duration") or 5),
        },
        "options": options_of(data),
    }


def i2v_3_0_params(data: dict, team: Any) -> dict:
    """§4.4 body: ``contents[prompt?, first_frame, last_frame?, element…]`` (elements as
    ``{type: element, element_id, id: element_<n>}``), ``settings{multi_shot, audio,
    resolution, duration}``, ``options``."""
    contents: list[dict] = []
    if data.get("prompt"):
        contents.append({"type": "prompt", "text": data["prompt"]})
    contents.append(image_item("first_frame", data["first_frame"]))
    if data.get("last_frame"):
        contents.append(image_item("last_frame", data["last_frame"]))
    for n, element_id in enumerate(data.get("elements") or [], start=1):
        contents.append({"type": "element", "element_id": element_id, "id": f"element_{n}"})
    return {
        "contents": contents,
        "settings": {
            "multi_shot": bool(data.get("multi_shot")),
            "audio": data.get("audio") or "off",
            "resolution": data.get("resolution") or "720p",
            "duration": int(data.get("duration") or 5),
        },
        "options": options_of(data),
    }


def motion_control_params(data: dict, team: Any) -> dict:
    """§4.6 body: ``contents[prompt?, image, video, element?]`` (the element as
    ``{type: element, element_id, id: element_1}``, 3.0 only), ``settings{
    character_orientation, audio, resolution}``, ``options``."""
    contents: list[dict] = []
    if data.get("prompt"):
        contents.append({"type": "prompt", "text": data["prompt"]})
    contents.append(image_item("image", data["image"]))
    contents.append({"type": "video", "url": data["video_url"]})
    if data.get("element"):
        contents.append({"type": "element", "element_id": data["element"], "id": "element_1"})
    return {
        "contents": contents,
        "settings": {
            "character_orientation": data["character_orientation"],
            "audio": data.get("audio") or "original",
            "resolution": data.get("resolution") or "720p",
        },
        "options": options_of(data),
    }
