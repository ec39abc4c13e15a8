"""The create-element form (KLING_API.md §5.4).

Fields follow the vendor's create body: ``element_name`` (≤ 20 characters),
``element_description`` (≤ 100), ``reference_type``; for ``image_refer`` a frontal image and
1–3 other-angle images (image rule, ``tasks_app.validators.check_image_file``); for
``video_refer`` exactly one video (``elements_app.validators.check_element_video``); an
optional voice id; tags. Each input is an upload or a URL the vendor fetches (checked like
the task forms' URLs, ``tasks_app.validators.check_media_url``: http(s), extension of the
right kind). The form only validates: files stay ``UploadedFile`` objects (URLs strings) in
``cleaned_data``; ``elements_app.services.element_create`` stores the files (once) and
builds the create body. An uploaded video is refused when the portal has no public address
(``tasks_app.inputs``): Kling takes reference videos by URL only (a video URL goes as is).

The page and ``POST /api/v1/elements`` (``klingweb.api``) both validate with this form.

Like the task forms (``tasks_app.forms``) it is constructed with ``team=`` and ``user=``
and offers ``initial_from_params`` and ``initial_from_query``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from elements_app.models import ElementStatus, ElementTag, ReferenceType
from elements_app.validators import check_element_video
from klingweb.safe_text import refuse_control_characters
from tasks_app.inputs import NO_PUBLIC_ADDRESS, inputs_by_url_available
from tasks_app.kept import KeepUploadsMixin
from tasks_app.validators import URL_MAX_LENGTH, check_image_file, check_media_url

NAME_MAX = 20
DESCRIPTION_MAX = 100
REFER_MIN = 1
REFER_MAX = 3
#: The video variant's error (and help text) when the portal has no public address.
VIDEO_NEEDS_ADDRESS = f"{NO_PUBLIC_ADDRESS} Until then, create the element from images."


class MultipleFileInput(forms.ClearableFileInput):
    """A file input that accepts several files (``<input type=file multiple>``)."""

    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field whose cleaned value is a list of ``UploadedFile`` (possibly empty)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ".jpg,.jpeg,.png"}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        """Clean each file like a ``FileField``; returns ``list[UploadedFile]``."""
        single_clean = super().clean
        if isinstance(data, list | tuple):
            return [single_clean(item, initial) for item in data if item]
        return [single_clean(data, initial)] if data else []


def _check_image(f, what: str):
    try:
        return check_image_file(f)
    except ValidationError as exc:
        raise ValidationError(
            [f"{what} ({f.name}): {message}" for message in exc.messages], code="image"
        ) from None


class ElementForm(KeepUploadsMixin, forms.Form):
    """Create a custom element. ``cleaned_data``: ``name``, ``description``,
    ``reference_type``, ``frontal_image`` (UploadedFile | URL str | None), ``refer_images``
    (list of UploadedFile or URL str, 1–3 for images, [] for video), ``video`` (UploadedFile
    | URL str | None), ``voice_id`` (str, may be empty), ``tags`` (list of ``ElementTag``
    values). ``frontal_image_url``, ``refer_image_urls`` (one URL a line) and ``video_url``
    are the URL alternatives of the three uploads.

    After an error, files that passed their checks are kept for the next try
    (``tasks_app.kept.KeepUploadsMixin``)."""

    name = forms.CharField(
        max_length=NAME_MAX,
        validators=[refuse_control_characters],
        help_text=f"At most {NAME_MAX} characters.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    description = forms.CharField(
        max_length=DESCRIPTION_MAX,
        help_text=f"At most {DESCRIPTION_MAX} characters.",
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    reference_type = forms.ChoiceField(
        choices=[
            (ReferenceType.IMAGE_REFER, "Images: a frontal image and 1–3 other angles"),
            (ReferenceType.VIDEO_REFER, "Video: one 3–8 s 1080p clip of a real person"),
        ],
        initial=ReferenceType.IMAGE_REFER,
        widget=forms.RadioSelect,
        label="Reference",
    )
    frontal_image = forms.FileField(
        required=False,
        label="Frontal image",
        help_text="JPG or PNG, at most 10 MB, at least 300 px each side, 1:2.5 to 2.5:1.",
        widget=forms.ClearableFileInput(attrs={"accept": ".jpg,.jpeg,.png"}),
    )
    refer_images = MultipleFileField(
        required=False,
        label="Other angles",
        help_text="1 to 3 images from other angles or close-ups (same image rule).",
    )
    video = forms.FileField(
        required=False,
        label="Reference video",
        help_text="MP4 or MOV, 3–8 s, 1080p (1920×1080 or 1080×1920), at most 200 MB.",
        widget=forms.ClearableFileInput(attrs={"accept": ".mp4,.mov,video/mp4,video/quicktime"}),
    )
    frontal_image_url = forms.CharField(
        required=False,
        max_length=URL_MAX_LENGTH,
        label="…or its URL",
        widget=forms.URLInput(attrs={"placeholder": "https://…"}),
    )
    refer_image_urls = forms.CharField(
        required=False,
        max_length=REFER_MAX * (URL_MAX_LENGTH + 2),
        label="…or their URLs",
        help_text="One URL a line.",
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "https://…"}),
    )
    video_url = forms.CharField(
        required=False,
        max_length=URL_MAX_LENGTH,
        label="…or its URL",
        help_text="Kling downloads it from there (the same rule applies).",
        widget=forms.URLInput(attrs={"placeholder": "https://…"}),
    )
    voice_id = forms.CharField(
        required=False,
        max_length=100,
        label="Voice id",
        help_text="Optional: bind an existing voice from the voice library.",
    )
    tags = forms.MultipleChoiceField(
        required=False,
        choices=ElementTag.choices,
        widget=forms.CheckboxSelectMultiple,
    )

    def __init__(self, *args: Any, team: Any, user: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.team = team
        self.user = user
        #: Kling takes reference videos by URL only (kling-docs/elements.txt): without a
        #: public address (``tasks_app.inputs``) the video variant cannot be sent at all.
        self.videos_possible = inputs_by_url_available()
        if not self.videos_possible:
            self.fields["video"].help_text = VIDEO_NEEDS_ADDRESS

    def keep_kind(self, name: str) -> str:
        """Kept files of ``video`` go under ``video/``, the images under ``image/``."""
        return "video" if name == "video" else "image"

    # -- prefill ----------------------------------------------------------------------------
    @classmethod
    def initial_from_params(cls, params: dict) -> dict:
        """Initial data from an element task's params (text fields and tags; files must be
        uploaded again)."""
        params = params or {}
        images = params.get("element_image_list") or {}
        videos = (params.get("element_video_list") or {}).get("refer_videos") or []
        refers = [r.get("image_url") for r in images.get("refer_images") or [] if _is_ref(r)]
        video = videos[0].get("video_url") if videos and isinstance(videos[0], dict) else None
        frontal = images.get("frontal_image")
        return {
            "name": params.get("element_name", ""),
            "description": params.get("element_description", ""),
            "reference_type": params.get("reference_type", ReferenceType.IMAGE_REFER),
            "voice_id": params.get("element_voice_id", ""),
            "tags": [t.get("tag_id") for t in params.get("tag_list") or [] if isinstance(t, dict)],
            # Inputs given as URLs come back as URLs; uploads must be chosen again.
            "frontal_image_url": frontal if _is_url(frontal) else "",
            "refer_image_urls": "\n".join(url for url in refers if _is_url(url)),
            "video_url": video if _is_url(video) else "",
        }

    @classmethod
    def initial_from_query(cls, query: Any) -> dict:
        """``?reference_type=video_refer`` preselects the video variant."""
        kind = query.get("reference_type") if query is not None else None
        return {"reference_type": kind} if kind in ReferenceType.values else {}

    def clean_name(self) -> str:
        """Strip; the 20-character limit is the field's ``max_length``."""
        return self.cleaned_data["name"].strip()

    def clean_voice_id(self) -> str:
        """Strip; empty means no bound voice."""
        return self.cleaned_data.get("voice_id", "").strip()

    def clean(self) -> dict:
        """Require the inputs of the chosen reference type and check each file's content."""
        data = super().clean()
        kind = data.get("reference_type")
        if kind == ReferenceType.IMAGE_REFER:
            self._clean_images(data)
            data["video"] = None
        elif kind == ReferenceType.VIDEO_REFER:
            self._clean_video(data)
            data["frontal_image"] = None
            data["refer_images"] = []
        return data

    def _url(self, data: dict, name: str, kind: str, what: str) -> str | None:
        """The checked URL of URL field ``name`` (None when empty or refused: error added)."""
        url = (data.get(name) or "").strip()
        if not url:
            return None
        try:
            return check_media_url(url, kind)
        except ValidationError as exc:
            self.add_error(name, [f"{what}: {message}" for message in exc.messages])
            return None

    def _clean_images(self, data: dict) -> None:
        frontal = data.get("frontal_image")
        frontal_url = self._url(data, "frontal_image_url", "image", "Frontal image URL")
        if frontal and (data.get("frontal_image_url") or "").strip():
            self.add_error(
                "frontal_image_url", "Give either a frontal image file or its URL, not both."
            )
        elif frontal_url:
            data["frontal_image"] = frontal_url
        elif not frontal:
            if "frontal_image" not in self.errors and "frontal_image_url" not in self.errors:
                self.add_error("frontal_image", "Add a frontal image.")
        else:
            try:
                _check_image(frontal, "Frontal image")
            except ValidationError as exc:
                self.add_error("frontal_image", exc)
        lines = (data.get("refer_image_urls") or "").splitlines()
        refer_urls = [line.strip() for line in lines if line.strip()]
        refers = data.get("refer_images") or []
        given = len(refers) + len(refer_urls)
        if not REFER_MIN <= given <= REFER_MAX:
            self.add_error(
                "refer_images",
                f"Add 1 to 3 images from other angles (you gave {given}).",
            )
            return
        for number, image in enumerate(refers, start=1):
            try:
                _check_image(image, f"Other angle {number}")
            except ValidationError as exc:
                self.add_error("refer_images", exc)
        checked = []
        for number, url in enumerate(refer_urls, start=len(refers) + 1):
            try:
                checked.append(check_media_url(url, "image"))
            except ValidationError as exc:
                self.add_error(
                    "refer_image_urls", [f"Other angle {number}: {m}" for m in exc.messages]
                )
        data["refer_images"] = [*refers, *checked]

    def _clean_video(self, data: dict) -> None:
        video = data.get("video")
        video_url = self._url(data, "video_url", "video", "Reference video URL")
        if video and (data.get("video_url") or "").strip():
            self.add_error("video_url", "Give either a video file or its URL, not both.")
            return
        if video_url:
            # Kling downloads it from there: no public address of ours is needed.
            data["video"] = video_url
            return
        if not video:
            if "video" not in self.errors and "video_url" not in self.errors:
                self.add_error("video", "Add one reference video.")
        else:
            try:
                check_element_video(video)
            except ValidationError as exc:
                self.add_error("video", exc)
        if not self.videos_possible and "video_url" not in self.errors:
            self.add_error("video", VIDEO_NEEDS_ADDRESS)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _is_ref(value: Any) -> bool:
    return isinstance(value, dict) and "image_url" in value


class PresetFilterForm(forms.Form):
    """Filters of the presets tab: ``q`` (name contains) and ``tag``."""

    q = forms.CharField(required=False, max_length=100, label="Search by name")
    tag = forms.ChoiceField(
        required=False, choices=[("", "Any tag"), *ElementTag.choices], label="Tag"
    )


class ElementFilterForm(PresetFilterForm):
    """Filters of the library: name, tag, ``status`` (an ``ElementStatus`` value) and
    ``deleted`` (include deleted elements, hidden by default)."""

    status = forms.ChoiceField(
        required=False, choices=[("", "Any status"), *ElementStatus.choices], label="Status"
    )
    deleted = forms.BooleanField(required=False, label="Show deleted")
