"""Create forms, one per task family, and the task list's filter form.

Every vendor rule of KLING_API.md §5 is checked here, before anything is queued: images and
sound by content (``tasks_app.validators``), prompt lengths, enumerations, ranges, and the
"exactly one of" rules. Errors are attached to the field they concern and name the limit.

The protocol the generic create view relies on (``tasks_app.views.task_create``), which a
plugged-in family's form (e.g. ``elements_app``) follows too:

- ``Form(data=None, files=None, *, team, user, initial=None)``;
- ``form.store_files() -> list[str]``: after ``is_valid()``, save pending uploads with
  ``upload_save`` and put ``{"$file": name}`` in ``cleaned_data`` in their place; returns
  the storage names saved (deleted again if queuing fails);
- ``form.describe() -> (prompt, summary)``: text for the list pages (prompt ≤ 2500 chars,
  summary ≤ 200: file names, sizes, durations);
- ``Form.initial_from_params(params) -> dict`` and ``Form.initial_from_query(query) ->
  dict``: the initial data for "run again with these settings" and for links that prefill
  (``?video_id=``, ``?frontal_image_url=``).
"""

from __future__ import annotations

import html
import posixpath
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.utils import timezone
from django.utils.functional import Promise

from tasks_app.kept import KeepUploadsMixin
from tasks_app.models import Family, Status, Task
from tasks_app.uploads import upload_belongs_to, upload_save, upload_url
from tasks_app.validators import check_audio_file, check_image_file, check_media_url

PROMPT_MAX_CHARS = 2500
MODES = [("std", "Standard (std) — cheaper"), ("pro", "Professional (pro) — higher quality")]
#: §5.6 (public docs). Text to video.
TEXT2VIDEO_MODELS = [
    "kling-v1",
    "kling-v1-6",
    "kling-v2-master",
    "kling-v2-1-master",
    "kling-v2-5-turbo",
    "kling-v2-6",
    "kling-v3",  # KLING_API_2026.md §5: new model 02/25/2026
]
#: §5.6 (public docs). Image to video.
IMAGE2VIDEO_MODELS = [
    "kling-v1",
    "kling-v1-5",
    "kling-v1-6",
    "kling-v2-master",
    "kling-v2-1",
    "kling-v2-1-master",
    "kling-v2-5-turbo",
    "kling-v2-6",
    "kling-v3",
]
#: Legacy ``mode`` values beyond std|pro: ``4k`` on kling-v3 only (KLING_API_2026.md §5).
MODES_4K_MODELS = frozenset({"kling-v3"})
#: Models with the ``sound`` switch (KLING_API_2026.md §5: 2.6 since 12/15/2025; 3.0);
#: on kling-v2-6 sound needs mode pro (1080p: its price table and page have no 720p audio).
SOUND_MODELS = ("kling-v2-6", "kling-v3")
SOUND_NEEDS_PRO = frozenset({"kling-v2-6"})
#: ``camera_control.type`` (§5.6): ``simple`` takes a ``config`` with exactly one non-zero
#: axis in [-10, 10]; the named moves take no config.
CAMERA_TYPES = [
    ("", "None"),
    ("simple", "Simple move (one axis)"),
    ("down_back", "Down and back"),
    ("forward_up", "Forward and up"),
    ("right_turn_forward", "Turn right, move forward"),
    ("left_turn_forward", "Turn left, move forward"),
]
CAMERA_AXES = [
    ("horizontal", "horizontal (truck)"),
    ("vertical", "vertical (pedestal)"),
    ("pan", "pan"),
    ("tilt", "tilt"),
    ("roll", "roll"),
    ("zoom", "zoom"),
]
#: §5.3: only videos of V1.0, V1.5 and V1.6 models can be extended.
EXTENDABLE_MODELS = frozenset({"kling-v1", "kling-v1-5", "kling-v1-6"})
EXTEND_MAX_TOTAL_SECONDS = 180
EXTEND_ADDS_SECONDS = 5
VENDOR_KEEPS_DAYS = 30
ASPECT_RATIOS = [("16:9", "16:9 (landscape)"), ("9:16", "9:16 (portrait)"), ("1:1", "1:1 (square)")]
DURATIONS = [("5", "5 s"), ("10", "10 s")]


class PromptField(forms.CharField):
    """A prompt: newlines normalised to ``\\n`` (what is sent), at most ``max_chars``
    characters (Unicode code points, as the vendor counts), with a live counter."""

    def __init__(self, *, max_chars: int = PROMPT_MAX_CHARS, **kwargs: Any):
        self.max_chars = max_chars
        kwargs.setdefault("required", False)
        kwargs.setdefault(
            "widget",
            forms.Textarea(attrs={"rows": 4, "data-charcount": str(max_chars)}),
        )
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> str:
        """The text with CR LF and CR turned into LF, stripped."""
        value = super().to_python(value)
        return value.replace("\r\n", "\n").replace("\r", "\n").strip()

    def validate(self, value: str) -> None:
        """Refuse more than ``max_chars`` characters, saying how many there are."""
        super().validate(value)
        if len(value) > self.max_chars:
            raise ValidationError(
                f"{self.label or 'Prompt'} is {len(value)} characters long; "
                f"the limit is {self.max_chars}.",
                code="prompt_too_long",
            )


class CfgScaleField(forms.FloatField):
    """``cfg_scale``: a float in [0, 1] (§5.3, §5.6); empty means the vendor default 0.5."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("required", False)
        kwargs.setdefault("label", "Prompt strength (cfg_scale)")
        kwargs.setdefault("help_text", "0 to 1; higher follows the prompt more closely.")
        kwargs.setdefault("widget", forms.NumberInput(attrs={"step": "0.05", "min": 0, "max": 1}))
        super().__init__(**kwargs)

    def validate(self, value: float | None) -> None:
        """Refuse values outside [0, 1]."""
        super().validate(value)
        if value is not None and not 0 <= value <= 1:
            raise ValidationError(
                f"cfg_scale must be between 0 and 1 (got {value:g}).", code="cfg_range"
            )


@dataclass(frozen=True)
class InputSpec:
    """A file-or-URL input: fields ``<name>_file``, ``<name>_url`` and ``<name>_stored``.

    ``param``: the request key it fills. ``kind``: ``"image"`` or ``"audio"``.
    ``<name>_stored`` carries an earlier upload of the team (run again) as a storage name.
    """

    name: str
    param: str
    kind: str
    label: str
    required: bool = True
    help: str = ""


IMAGE_HELP = "JPG or PNG, up to 10 MB, each side at least 300 px, aspect ratio 1:2.5 to 2.5:1."
AUDIO_HELP = "MP3, WAV, M4A or AAC, up to 5 MB, 2 to 300 seconds long."
ACCEPT = {"image": "image/png,image/jpeg", "audio": "audio/*,.mp3,.wav,.m4a,.aac"}


class TaskForm(KeepUploadsMixin, forms.Form):
    """Base of the create forms (see the module docstring for the protocol).

    Subclasses list their file-or-URL inputs in ``inputs``; the base adds the three fields
    of each, checks exactly one source is given, checks uploads by content and URLs by
    scheme and extension, and leaves in ``cleaned_data[spec.name]`` either a pending
    ``UploadedFile``, a URL string, or ``{"$file": name}`` for an earlier upload.

    After an error, uploads that passed their checks are kept for the next try
    (``tasks_app.kept.KeepUploadsMixin``: "kept: portrait.png — replace").
    """

    family_key: ClassVar[str] = ""
    inputs: ClassVar[tuple[InputSpec, ...]] = ()
    layout: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *args: Any, team: Any, user: Any = None, **kwargs: Any):
        self.team = team
        self.user = user
        super().__init__(*args, **kwargs)
        self._notes: dict[str, str] = {}
        for spec in self.inputs:
            self.fields[f"{spec.name}_file"] = forms.FileField(
                required=False,
                label=spec.label,
                help_text=spec.help,
                widget=forms.ClearableFileInput(attrs={"accept": ACCEPT.get(spec.kind, "")}),
            )
            self.fields[f"{spec.name}_url"] = forms.CharField(
                required=False,
                label="…or its URL",
                max_length=2000,
                widget=forms.URLInput(attrs={"placeholder": "https://…"}),
            )
            self.fields[f"{spec.name}_stored"] = forms.CharField(
                required=False, widget=forms.HiddenInput
            )

    def keep_kind(self, name: str) -> str:
        """The kind (``image``/``audio``) of the input whose file field is ``name``."""
        for spec in self.inputs:
            if name == f"{spec.name}_file":
                return spec.kind
        return super().keep_kind(name)

    def keep_candidates(self) -> dict[str, Any]:
        """Only uploads that passed the input's checks and were chosen as its source (not
        one refused for being given together with a URL)."""
        cleaned = getattr(self, "cleaned_data", {}) or {}
        out = {}
        for spec in self.inputs:
            upload = cleaned.get(spec.name)
            if isinstance(upload, UploadedFile) and f"{spec.name}_file" not in self._errors:
                out[f"{spec.name}_file"] = upload
        return out

    # -- rendering ----------------------------------------------------------------------
    def input_group(self, spec: InputSpec) -> dict:
        """What the template needs for one file-or-URL input: the spec, the bound ``file``,
        ``url`` and ``stored`` fields, and the earlier upload it carries (name, URL)."""
        stored = self[f"{spec.name}_stored"].value() or ""
        if not upload_belongs_to(team=self.team, name=stored):
            stored = ""
        return {
            "spec": spec,
            "file": self[f"{spec.name}_file"],
            "url": self[f"{spec.name}_url"],
            "stored": self[f"{spec.name}_stored"],
            "stored_name": posixpath.basename(stored) if stored else "",
            "stored_url": upload_url(team=self.team, name=stored) if stored else "",
            "errors": self[f"{spec.name}_file"].errors + self[f"{spec.name}_url"].errors,
        }

    def layout_items(self) -> list[dict]:
        """The form in display order: ``{"input": group}`` or ``{"field": bound field}``.

        Order: ``layout`` when a subclass sets it (names of inputs and fields), else the
        inputs first and then the other fields as declared."""
        specs = {spec.name: spec for spec in self.inputs}
        hidden_parts = {f"{n}_{part}" for n in specs for part in ("file", "url", "stored")}
        names = list(self.layout) or [*specs, *(n for n in self.fields if n not in hidden_parts)]
        items = []
        for name in names:
            if name in specs:
                items.append({"input": self.input_group(specs[name])})
            elif name in self.fields:
                items.append({"field": self[name]})
        return items

    def _clean_input(self, spec: InputSpec) -> Any:
        upload = self.cleaned_data.get(f"{spec.name}_file")
        url = (self.cleaned_data.get(f"{spec.name}_url") or "").strip()
        stored = (self.cleaned_data.get(f"{spec.name}_stored") or "").strip()
        file_field = f"{spec.name}_file"
        if isinstance(upload, UploadedFile):
            if url:
                self.add_error(
                    f"{spec.name}_url", "Give either a file or a URL, not both (clear one)."
                )
                return None
            try:
                if spec.kind == "image":
                    info = check_image_file(upload)
                    self._notes[spec.name] = f"{upload.name} ({info.width}×{info.height})"
                else:
                    audio = check_audio_file(upload)
                    self._notes[spec.name] = f"{upload.name} ({audio.duration_s:.1f} s)"
            except ValidationError as exc:
                self.add_error(file_field, exc)
                return None
            return upload
        if url:
            try:
                url = check_media_url(url, spec.kind)
            except ValidationError as exc:
                self.add_error(f"{spec.name}_url", exc)
                return None
            self._notes[spec.name] = url.rsplit("/", 1)[-1][:60] or urlsplit(url).hostname
            return url
        if stored:
            if not upload_belongs_to(team=self.team, name=stored):
                self.add_error(file_field, "The earlier upload is gone; upload the file again.")
                return None
            self._notes[spec.name] = f"earlier upload {posixpath.basename(stored)}"
            return {"$file": stored}
        if spec.required:
            self.add_error(file_field, f"Upload the {spec.label.lower()} or paste its URL.")
        return None

    def clean(self) -> dict:
        """Resolve every file-or-URL input into ``cleaned_data[spec.name]``."""
        cleaned = super().clean()
        for spec in self.inputs:
            cleaned[spec.name] = self._clean_input(spec)
        return cleaned

    def store_files(self) -> list[str]:
        """Save pending uploads (``upload_save``), replacing them by ``{"$file": name}``.

        Returns the storage names saved by this call."""
        saved: list[str] = []
        for spec in self.inputs:
            value = self.cleaned_data.get(spec.name)
            if isinstance(value, UploadedFile):
                name = upload_save(team=self.team, file=value, kind=spec.kind)
                self.cleaned_data[spec.name] = {"$file": name}
                saved.append(name)
        return saved

    def describe(self) -> tuple[str, str]:
        """``(prompt, summary)`` for the list pages: the prompt, and the inputs in words."""
        prompt = self.cleaned_data.get("prompt") or ""
        parts = [
            f"{spec.label}: {self._notes[spec.name]}"
            for spec in self.inputs
            if spec.name in self._notes
        ]
        return prompt, " · ".join(parts)[:200]

    # -- initial data -------------------------------------------------------------------
    @classmethod
    def initial_from_params(cls, params: dict) -> dict:
        """Form initial data from a task's stored request params (run again)."""
        initial: dict[str, Any] = {}
        input_params = {spec.param: spec for spec in cls.inputs}
        for key, value in (params or {}).items():
            spec = input_params.get(key)
            if spec is not None:
                if isinstance(value, dict) and "$file" in value:
                    initial[f"{spec.name}_stored"] = value["$file"]
                elif isinstance(value, str):
                    initial[f"{spec.name}_url"] = value
            elif key == "watermark_info" and isinstance(value, dict):
                initial["watermark"] = bool(value.get("enabled"))
            elif isinstance(value, str | int | float | bool):
                initial[key] = value
        return initial

    @classmethod
    def initial_from_query(cls, query: Any) -> dict:
        """Form initial data from the page's query string (none by default)."""
        return {}


def _mode_field() -> forms.ChoiceField:
    return forms.ChoiceField(choices=MODES, initial="std", widget=forms.RadioSelect, label="Mode")


def _watermark_field() -> forms.BooleanField:
    return forms.BooleanField(
        required=False, label="Also make a watermarked copy (watermark_info.enabled)"
    )


class AvatarForm(TaskForm):
    """Avatar (§5.2): image + exactly one of sound file (upload or URL) and ``audio_id``;
    prompt ≤ 2500; mode std|pro; watermark."""

    family_key = Family.AVATAR
    inputs = (
        InputSpec("image", "image", "image", "Avatar image", help=IMAGE_HELP),
        InputSpec("sound", "sound_file", "audio", "Sound file", required=False, help=AUDIO_HELP),
    )
    layout = ("image", "sound", "audio_id", "prompt", "mode", "watermark")

    audio_id = forms.CharField(
        required=False,
        max_length=100,
        label="…or an audio_id",
        help_text="From Kling's text-to-speech within the last 30 days (2 to 300 s).",
    )
    prompt = PromptField(
        label="Prompt", help_text="Optional: actions, emotions, camera. Up to 2500 characters."
    )
    mode = _mode_field()
    watermark = _watermark_field()

    def clean(self) -> dict:
        """Require exactly one of sound upload, sound URL, earlier upload and audio_id."""
        cleaned = super().clean()
        audio_id = (cleaned.get("audio_id") or "").strip()
        sources = [
            bool(self.cleaned_data.get("sound_file")),
            bool((self.cleaned_data.get("sound_url") or "").strip()),
            bool(audio_id),
        ]
        if "sound_file" in self.errors or "sound_url" in self.errors:
            return cleaned
        if not any(sources) and not cleaned.get("sound"):
            self.add_error(
                "sound_file", "Give the sound: upload a file, paste its URL, or give an audio_id."
            )
        elif sum(sources) > 1 or (cleaned.get("sound") and audio_id):
            self.add_error(
                "audio_id",
                "Give exactly one of: a sound file, a sound URL, or an audio_id (not several).",
            )
        if audio_id:
            self._notes["sound"] = f"audio_id {audio_id}"
        return cleaned


def _video_age_days(task: Task) -> float | None:
    born = task.vendor_created_at or task.finished_at
    if born is None:
        return None
    return (timezone.now() - born).total_seconds() / 86400


def video_extend_refusal(task: Task, video: dict) -> str | None:
    """Why ``video`` (an item of ``task.result["videos"]``) cannot be extended, or None.

    Rules (§5.3): made by text-to-video, image-to-video or an earlier extension; only
    V1.0/V1.5/V1.6 models; not older than 30 days; total after extending (+4–5 s) ≤ 3 min.
    """
    if task.family not in (Family.TEXT2VIDEO, Family.IMAGE2VIDEO, Family.VIDEO_EXTEND):
        return "Only videos made by text-to-video, image-to-video or an extension can be extended."
    if task.family != Family.VIDEO_EXTEND and task.model_name not in EXTENDABLE_MODELS:
        return (
            f"Made with {task.model_name or 'an unknown model'}; only kling-v1, kling-v1-5 and "
            "kling-v1-6 videos can be extended."
        )
    age = _video_age_days(task)
    if age is not None and age >= VENDOR_KEEPS_DAYS:
        return "The video is more than 30 days old; Kling has deleted it and cannot extend it."
    try:
        duration = float(video.get("duration") or 0)
    except (TypeError, ValueError):
        duration = 0.0
    if duration + EXTEND_ADDS_SECONDS > EXTEND_MAX_TOTAL_SECONDS:
        return (
            f"The video is {duration:g} s long; extended it would pass the 3-minute (180 s) limit."
        )
    return None


def team_videos(team: Any, *, limit: int = 200) -> list[tuple[Task, dict]]:
    """The team's succeeded tasks' result videos, newest first: ``(task, video dict)``."""
    tasks = Task.objects.filter(
        team=team,
        status=Status.SUCCEED,
        family__in=[Family.TEXT2VIDEO, Family.IMAGE2VIDEO, Family.VIDEO_EXTEND],
    ).order_by("-created_at")[:limit]
    out = []
    for task in tasks:
        for video in (task.result or {}).get("videos") or []:
            if isinstance(video, dict) and video.get("id"):
                out.append((task, video))
    return out


def _tasks_with_video(tasks, video_id: str):
    """The tasks of ``tasks`` whose result lists a video with id ``video_id``."""
    candidates = tasks.filter(
        family__in=[Family.TEXT2VIDEO, Family.IMAGE2VIDEO, Family.VIDEO_EXTEND]
    ).filter(result__icontains=video_id)
    for task in candidates.iterator():
        for video in (task.result or {}).get("videos") or []:
            if isinstance(video, dict) and str(video.get("id")) == video_id:
                yield task
                break


def video_source_task(team: Any, video_id: str) -> Task | None:
    """The team's task that made the video ``video_id`` (what a video extension extends), or
    None when no task of the team lists it (a pasted id of a video made elsewhere)."""
    if not video_id:
        return None
    return next(
        _tasks_with_video(Task.objects.filter(team=team).order_by("-created_at"), video_id), None
    )


def video_of_another_team(team: Any, video_id: str) -> bool:
    """True when ``video_id`` is a result video of another team's task in the portal: such
    an id must not be extended from ``team`` (both teams may share the operator's Kling
    account, so the vendor would accept it)."""
    if not video_id:
        return False
    return (
        next(_tasks_with_video(Task.objects.exclude(team=team).only("result"), video_id), None)
        is not None
    )


class VideoExtendForm(TaskForm):
    """Video extension (§5.3): a video of the team's (or a pasted ``video_id``; exactly one),
    prompt and negative prompt ≤ 2500, cfg_scale in [0, 1], watermark."""

    family_key = Family.VIDEO_EXTEND

    source_video = forms.ChoiceField(
        required=False,
        label="A video of your team",
        help_text=(
            "Videos of kling-v1, v1.5 and v1.6 under 30 days old and under 3 minutes. "
            "Each extension adds 4–5 s; model and mode follow the source video."
        ),
    )
    video_id = forms.CharField(required=False, max_length=100, label="…or paste a video_id")
    prompt = PromptField(label="Prompt")
    negative_prompt = PromptField(label="Negative prompt")
    cfg_scale = CfgScaleField(initial=0.5)
    watermark = _watermark_field()

    def __init__(self, *args: Any, team: Any, user: Any = None, **kwargs: Any):
        super().__init__(*args, team=team, user=user, **kwargs)
        self._videos: dict[str, tuple[Task, dict]] = {}
        choices = [("", "— choose —")]
        for task, video in team_videos(team):
            self._videos.setdefault(str(video["id"]), (task, video))
            if video_extend_refusal(task, video) is None:
                label = (task.prompt or task.summary or task.get_family_display())[:60]
                duration = video.get("duration")
                when = timezone.localtime(task.created_at).strftime("%Y-%m-%d %H:%M")
                choices.append((str(video["id"]), f"{label} · {duration or '?'} s · {when}"))
        self.fields["source_video"].choices = choices
        self._place_initial_video()

    def clean(self) -> dict:
        """Exactly one of the picked video and the pasted id; a known video must qualify."""
        cleaned = super().clean()
        picked = cleaned.get("source_video") or ""
        pasted = (cleaned.get("video_id") or "").strip()
        if picked and pasted and picked != pasted:
            self.add_error("video_id", "Pick a video or paste a video_id, not both.")
            return cleaned
        video_id = picked or pasted
        if not video_id:
            if "source_video" not in self.errors:
                self.add_error("source_video", "Pick a video to extend or paste its video_id.")
            return cleaned
        known = self._videos.get(video_id)
        if known is not None:
            reason = video_extend_refusal(*known)
            if reason:
                self.add_error("video_id" if pasted else "source_video", reason)
                return cleaned
            self._notes["video"] = f"extends {known[0].prompt[:40] or video_id}"
        elif video_of_another_team(self.team, video_id):
            self.add_error(
                "video_id" if pasted else "source_video",
                "This video_id is not one of your team's videos; pick one of them, or paste "
                "the id of a video made outside the portal.",
            )
            return cleaned
        else:
            self._notes["video"] = f"extends video {video_id}"
        cleaned["video_id"] = video_id
        return cleaned

    def describe(self) -> tuple[str, str]:
        """The prompt, and which video is extended."""
        return self.cleaned_data.get("prompt") or "", self._notes.get("video", "")[:200]

    @classmethod
    def initial_from_params(cls, params: dict) -> dict:
        """Put the video id in the picker (the form moves it to ``video_id`` if unknown)."""
        initial = super().initial_from_params(params)
        if "video_id" in initial:
            initial["source_video"] = initial["video_id"]
        return initial

    @classmethod
    def initial_from_query(cls, query: Any) -> dict:
        """``?video_id=`` (the "extend this video" action)."""
        video_id = (query.get("video_id") or "").strip()[:100]
        return {"source_video": video_id, "video_id": video_id} if video_id else {}

    def _place_initial_video(self) -> None:
        """Show a video id in the picker when it is one of the team's, else in the text box."""
        if self.is_bound:
            return
        wanted = self.initial.get("source_video") or self.initial.get("video_id")
        if not wanted:
            return
        if any(value == wanted for value, _ in self.fields["source_video"].choices):
            self.initial["source_video"], self.initial["video_id"] = wanted, ""
        else:
            self.initial["source_video"], self.initial["video_id"] = "", wanted


class MultiShotForm(TaskForm):
    """AI multi-shot (§5.1): the subject's frontal image (upload or URL; image rule)."""

    family_key = Family.MULTI_SHOT
    inputs = (
        InputSpec(
            "frontal_image", "element_frontal_image", "image", "Frontal image", help=IMAGE_HELP
        ),
    )

    @classmethod
    def initial_from_query(cls, query: Any) -> dict:
        """``?frontal_image_url=`` (elements prefill the form with an element's image)."""
        url = (query.get("frontal_image_url") or "").strip()[:2000]
        return {"frontal_image_url": url} if url else {}


class LegacyVideoOptionsMixin(forms.Form):
    """The 2026 options of the legacy text/image-to-video pages (KLING_API_2026.md §5,
    KLING_API.md §5.6): ``mode`` std|pro|4k (4k on kling-v3 only), ``sound`` on|off
    (kling-v2-6 and kling-v3; on with kling-v2-6 needs pro), ``camera_control`` (a named
    move, or ``simple`` with one axis moved by −10…10, not 0), ``watermark_info``.
    Errors name the option and the model."""

    sound = forms.ChoiceField(
        required=False,
        choices=[("", "Not sent (model default)"), ("off", "Off"), ("on", "On (native audio)")],
        label="Sound (sound)",
        help_text="kling-v2-6 (with mode pro) and kling-v3 only.",
    )
    camera_type = forms.ChoiceField(
        required=False, choices=CAMERA_TYPES, label="Camera movement (camera_control)"
    )
    camera_axis = forms.ChoiceField(
        required=False,
        choices=[("", "—"), *CAMERA_AXES],
        label="Axis (simple move)",
    )
    camera_amount = forms.IntegerField(
        required=False,
        min_value=-10,
        max_value=10,
        label="Amount (simple move)",
        help_text="−10 to 10, not 0.",
    )
    watermark = _watermark_field()

    def clean_legacy_options(self, cleaned: dict) -> None:
        """Model-dependent rules between mode, sound and camera control."""
        model = cleaned.get("model_name") or ""
        mode = cleaned.get("mode") or "std"
        if mode == "4k" and model not in MODES_4K_MODELS:
            self.add_error("mode", f"4K is available with kling-v3 only (chosen: {model}).")
        sound = cleaned.get("sound") or ""
        if sound and model not in SOUND_MODELS:
            self.add_error(
                "sound", f"Sound is available with kling-v2-6 and kling-v3 only (chosen: {model})."
            )
        elif sound == "on" and model in SOUND_NEEDS_PRO and mode != "pro":
            self.add_error("sound", f"Sound on {model} needs mode pro (1080p).")
        kind = cleaned.get("camera_type") or ""
        axis = cleaned.get("camera_axis") or ""
        amount = cleaned.get("camera_amount")
        if kind == "simple":
            if not axis:
                self.add_error("camera_axis", "A simple camera move needs an axis.")
            if not amount:
                self.add_error("camera_amount", "A simple camera move needs an amount (not 0).")
        elif axis or amount:
            self.add_error(
                "camera_type",
                "An axis and amount apply to the simple camera move only; choose “Simple move” "
                "or clear them.",
            )

    @staticmethod
    def camera_control_of(data: dict) -> dict | None:
        """The ``camera_control`` object of the cleaned data, or None."""
        kind = data.get("camera_type") or ""
        if not kind:
            return None
        if kind == "simple":
            return {"type": "simple", "config": {data["camera_axis"]: data["camera_amount"]}}
        return {"type": kind}

    @staticmethod
    def initial_from_camera(params: dict) -> dict:
        """Form initial data of a stored ``camera_control``."""
        camera = (params or {}).get("camera_control")
        if not isinstance(camera, dict):
            return {}
        initial = {"camera_type": camera.get("type") or ""}
        for axis, amount in (camera.get("config") or {}).items():
            if amount:
                initial["camera_axis"], initial["camera_amount"] = axis, amount
        return initial


def _mode_4k_field() -> forms.ChoiceField:
    return forms.ChoiceField(
        choices=[*MODES, ("4k", "4K — kling-v3 only")],
        initial="std",
        widget=forms.RadioSelect,
        label="Mode",
    )


class Text2VideoForm(LegacyVideoOptionsMixin, TaskForm):
    """Text to video (§5.6, KLING_API_2026.md §5): model, prompt (required) ≤ 2500, negative
    prompt ≤ 2500, mode std|pro|4k, aspect ratio 16:9|9:16|1:1, duration 5|10, cfg_scale in
    [0, 1], sound, camera control, watermark (rules: ``LegacyVideoOptionsMixin``)."""

    family_key = Family.TEXT2VIDEO
    layout = (
        "model_name",
        "prompt",
        "negative_prompt",
        "mode",
        "aspect_ratio",
        "duration",
        "sound",
        "camera_type",
        "camera_axis",
        "camera_amount",
        "cfg_scale",
        "watermark",
    )

    model_name = forms.ChoiceField(
        choices=[(m, m) for m in TEXT2VIDEO_MODELS], initial="kling-v1-6", label="Model"
    )
    prompt = PromptField(label="Prompt", required=True)
    negative_prompt = PromptField(label="Negative prompt")
    mode = _mode_4k_field()
    aspect_ratio = forms.ChoiceField(choices=ASPECT_RATIOS, initial="16:9", label="Aspect ratio")
    duration = forms.ChoiceField(
        choices=DURATIONS, initial="5", widget=forms.RadioSelect, label="Duration"
    )
    cfg_scale = CfgScaleField()

    def clean(self) -> dict:
        """The option rules of ``LegacyVideoOptionsMixin``."""
        cleaned = super().clean()
        self.clean_legacy_options(cleaned)
        return cleaned

    @classmethod
    def initial_from_params(cls, params: dict) -> dict:
        """As the base, plus the camera control."""
        return {**super().initial_from_params(params), **cls.initial_from_camera(params)}


class Image2VideoForm(LegacyVideoOptionsMixin, TaskForm):
    """Image to video (§5.6, KLING_API_2026.md §5): model, image (required, image rule),
    optional tail image (image rule), prompt and negative prompt ≤ 2500, mode std|pro|4k,
    duration 5|10, cfg_scale [0, 1], sound, camera control, watermark. The end image and
    camera control exclude each other (§5.6; motion masks, the third of that group, are not
    offered)."""

    family_key = Family.IMAGE2VIDEO
    inputs = (
        InputSpec("image", "image", "image", "Start image", help=IMAGE_HELP),
        InputSpec(
            "image_tail",
            "image_tail",
            "image",
            "End image",
            required=False,
            help="Optional last frame. " + IMAGE_HELP,
        ),
    )

    layout = (
        "image",
        "image_tail",
        "model_name",
        "prompt",
        "negative_prompt",
        "mode",
        "duration",
        "sound",
        "camera_type",
        "camera_axis",
        "camera_amount",
        "cfg_scale",
        "watermark",
    )

    model_name = forms.ChoiceField(
        choices=[(m, m) for m in IMAGE2VIDEO_MODELS], initial="kling-v1-6", label="Model"
    )
    prompt = PromptField(label="Prompt")
    negative_prompt = PromptField(label="Negative prompt")
    mode = _mode_4k_field()
    duration = forms.ChoiceField(
        choices=DURATIONS, initial="5", widget=forms.RadioSelect, label="Duration"
    )
    cfg_scale = CfgScaleField()

    def clean(self) -> dict:
        """The option rules, and end image × camera control (mutually exclusive)."""
        cleaned = super().clean()
        self.clean_legacy_options(cleaned)
        if cleaned.get("image_tail") and cleaned.get("camera_type"):
            self.add_error(
                "camera_type",
                "An end image and a camera movement cannot be combined (Kling takes one of "
                "them); remove one.",
            )
        return cleaned

    @classmethod
    def initial_from_params(cls, params: dict) -> dict:
        """As the base, plus the camera control."""
        return {**super().initial_from_params(params), **cls.initial_from_camera(params)}


# -- the task list's filters ------------------------------------------------------------


class PlainSelect(forms.Select):
    """A ``Select`` rendered in Python: the markup of Django's ``select.html`` /
    ``select_option.html`` without a template include per option.

    The list's "Created by" select has one option per member (200 in the load bench); through
    the template engine each option costs an include of ``attrs.html``, which made the
    filter form the costliest part of a list page. Groups (optgroups) are not used by the
    list's filters and are rendered flat."""

    def use_required_attribute(self, initial: Any) -> bool:
        """As ``Select`` (``required`` only when the first option is empty), without reading
        the choices for a field that is not required (``BoundField`` then adds no
        ``required`` anyway): the members' choices are normalised once, when rendered."""
        if not self.is_required:
            return False
        return super().use_required_attribute(initial)

    def render(self, name: str, value: Any, attrs: dict | None = None, renderer=None) -> str:
        """The ``<select>`` element (safe HTML) for ``name`` with ``value`` selected: the
        same text, byte for byte, as Django's templates give."""
        from django.utils.html import conditional_escape
        from django.utils.safestring import mark_safe

        # What ``get_context`` and ``optgroups`` give, without a dict per option (200 members).
        final_attrs = self.build_attrs(self.attrs, attrs)
        if self.allow_multiple_selected:
            final_attrs["multiple"] = True
        values = self.format_value(value)
        parts = [f'<select name="{conditional_escape(name)}"{_attrs(final_attrs)}>']
        has_selected = False
        for option_value, option_label in self.choices:
            if isinstance(option_label, list | tuple):
                group = option_label
            else:
                group = [("" if option_value is None else option_value, option_label)]
            for subvalue, sublabel in group:
                selected = (not has_selected or self.allow_multiple_selected) and str(
                    subvalue
                ) in values
                has_selected |= selected
                parts.append(
                    f'\n  <option value="{_escape(str(subvalue))}"'
                    f"{' selected' if selected else ''}>{_escape(sublabel)}</option>\n"
                )
        parts.append("\n</select>")
        return mark_safe("".join(parts))  # noqa: S308 -- every value above is escaped


def _escape(value: Any) -> str:
    """``conditional_escape(value)`` as text, without its lazy wrappers (two options per
    member): ``__html__()`` for safe text, else ``html.escape`` (what Django's ``escape``
    returns, marked safe)."""
    if isinstance(value, Promise):
        value = str(value)
    if hasattr(value, "__html__"):
        return value.__html__()
    return html.escape(str(value))


def _attrs(attrs: dict) -> str:
    """HTML attributes as Django's ``attrs.html`` writes them (in order; True: the bare
    name; False: left out; values escaped)."""
    from django.utils.html import conditional_escape

    out = []
    for key, value in attrs.items():
        if value is False:
            continue
        if value is True:
            out.append(f" {key}")
        else:
            out.append(f' {key}="{conditional_escape(str(value))}"')
    return "".join(out)


class TaskFilterForm(forms.Form):
    """Filters of the task lists (GET): status, family, creator, date range (in the team's
    time zone, inclusive), text search (prompt, summary, code, vendor task_id), sort."""

    SORTS = [("-created", "Newest first"), ("created", "Oldest first")]

    q = forms.CharField(
        required=False,
        max_length=200,
        label="Search",
        widget=forms.SearchInput(attrs={"placeholder": "Prompt, file, task id…"}),
    )
    status = forms.ChoiceField(required=False, label="Status", widget=PlainSelect)
    family = forms.ChoiceField(required=False, label="Kind", widget=PlainSelect)
    creator = forms.ChoiceField(required=False, label="Created by", widget=PlainSelect)
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )
    sort = forms.ChoiceField(required=False, choices=SORTS, label="Sort", widget=PlainSelect)

    def __init__(self, *args: Any, team: Any, families: list[tuple[str, str]], mine: bool, **kw):
        super().__init__(*args, **kw)
        self.team = team
        self.fields["status"].choices = [
            ("", "Any status"),
            ("unfinished", "Unfinished (queued or at Kling)"),
            ("in_flight", "At Kling (submitted or processing)"),
        ] + list(Status.choices)
        self.fields["family"].choices = [("", "Any kind")] + families
        if mine:
            del self.fields["creator"]
        else:
            # A callable: the members are read only when the field is rendered or a
            # ``creator`` is validated (the list's live request usually does neither).
            self.fields["creator"].choices = self._creator_choices

    def _creator_choices(self) -> list[tuple[str, str]]:
        """``("", "Anyone")`` then the team's members (user id, username) by username; read
        once per form (Django calls this at every iteration of the choices)."""
        if self._members is None:
            # Two columns, no model instances: 200 members cost ~10 ms as objects.
            name = f"user__{get_user_model().USERNAME_FIELD}"
            members = self.team.memberships.order_by(name).values_list("user_id", name)
            self._members = [(str(pk), str(username)) for pk, username in members]
        return [("", "Anyone"), *self._members]

    _members: list[tuple[str, str]] | None = None

    def clean(self) -> dict:
        """Refuse a range whose end is before its start."""
        cleaned = super().clean()
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and end < start:
            self.add_error("date_to", "The end date is before the start date.")
        return cleaned

    def filter(self, queryset: Any) -> Any:
        """``queryset`` narrowed by the valid filters and sorted (invalid ones are ignored)."""
        from django.db.models import Q

        data = self.cleaned_data if self.is_valid() else {}
        status = data.get("status")
        if status == "unfinished":
            queryset = queryset.unfinished()
        elif status == "in_flight":
            queryset = queryset.in_flight()
        elif status:
            queryset = queryset.filter(status=status)
        if data.get("family"):
            queryset = queryset.filter(family=data["family"])
        if data.get("creator"):
            queryset = queryset.filter(creator_id=data["creator"])
        try:
            tz = ZoneInfo(self.team.time_zone)
        except Exception:
            tz = ZoneInfo("UTC")
        if data.get("date_from"):
            start = datetime.combine(data["date_from"], time.min)
            queryset = queryset.filter(created_at__gte=start.replace(tzinfo=tz))
        if data.get("date_to"):
            end = datetime.combine(data["date_to"], time.min)
            queryset = queryset.filter(created_at__lt=end.replace(tzinfo=tz) + timedelta(days=1))
        q = (data.get("q") or "").strip()
        if q:
            queryset = queryset.filter(
                Q(prompt__icontains=q)
                | Q(summary__icontains=q)
                | Q(task_id__icontains=q)
                | Q(code__icontains=q)
            )
        if data.get("sort") == "created":
            return queryset.order_by("created_at", "id")
        return queryset.order_by("-created_at", "-id")
