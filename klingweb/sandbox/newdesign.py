"""The new API design's create endpoints and their validation (KLING_API_2026.md §1, §4).

Bodies are ``{prompt?, contents[]?, settings{}, options{}}``; the model is in the path.
Every refusal is HTTP 400, code 1201, with a message that starts with the field's path
(``settings.duration``, ``contents[2].url``, ``options.callback_url``), as on the legacy
design. ``validate_new`` returns the facts the state keeps: ``callback_url``,
``external_task_id``, ``watermark``, ``output_seconds`` (Decimal), ``price`` (the price
table's ``(model, variant, resolution)``), ``resolution``, ``audio``.

Endpoints (``NEW_ENDPOINTS``, path → model row and kind):

- ``/text-to-video/kling-3.0-turbo`` (§4.1), ``/image-to-video/kling-3.0-turbo`` (§4.2);
- ``/text-to-video/kling-3.0`` (§4.3), ``/image-to-video/kling-3.0`` (§4.4);
- ``/omni-video/kling-3.0-omni`` (§4.5);
- ``/motion-control/kling-3.0``, ``/motion-control/kling-2.6`` (§4.6);
- ``/text-to-video/kling-2.6``, ``/image-to-video/kling-2.6``,
  ``/text-to-video/kling-2.5-turbo``, ``/image-to-video/kling-2.5-turbo`` (§4.7; 2.6
  ``voice`` items are not supported by the sandbox and are refused).

Decisions where the digest is silent: unknown keys inside ``settings``/``options`` are
ignored (as the legacy design ignores unknown fields); ``duration`` must be a JSON integer
(the pages type it ``int``); a storyboard prompt's shots must be numbered 1, 2, … in order;
a content ``id`` may appear once per request ("must not be duplicated").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from .errors import invalid
from .fetch import fetch_video
from .validation import check_image

MB = 1024 * 1024
PROMPT_MAX = 3072  # characters (3.0 family)
PROMPT_MAX_2500 = 2500  # 3.0 Turbo image-to-video, motion control, 2.6/2.5
SHOT_WORDS_MAX = 512
SHOTS_MAX = 6
NEW_IMAGE_MAX_BYTES = 50 * MB  # §4 common rules: ≤ 50 MB on the new design
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
OMNI_VIDEO_MAX_BYTES = 200 * MB
OMNI_VIDEO_SECONDS = (3.0, 15.5)
OMNI_VIDEO_SIDES = (700, 4553)
OMNI_VIDEO_MAX_PIXELS = 8_294_400
OMNI_VIDEO_ASPECT = (0.4, 2.0)  # width / height
OMNI_VIDEO_FPS = (24.0, 60.0)
MOTION_VIDEO_MAX_BYTES = 100 * MB
MOTION_VIDEO_SIDES = (340, 3850)
MOTION_VIDEO_MIN_SECONDS = 3.0
MOTION_VIDEO_MAX_SECONDS = {"video": 30.0, "image": 10.0}  # by character_orientation

Json = dict[str, Any]
#: ``element_id`` → ``(element_name, reference_type)`` of a usable element, or ``None``.
ElementLookup = Callable[[str], tuple[str, str] | None]

#: path → (model row of the price table, kind of endpoint)
NEW_ENDPOINTS: dict[str, tuple[str, str]] = {
    "/text-to-video/kling-3.0-turbo": ("kling-3.0-turbo", "t2v"),
    "/image-to-video/kling-3.0-turbo": ("kling-3.0-turbo", "i2v"),
    "/text-to-video/kling-3.0": ("kling-3.0", "t2v"),
    "/image-to-video/kling-3.0": ("kling-3.0", "i2v"),
    "/omni-video/kling-3.0-omni": ("kling-3.0-omni", "omni"),
    "/motion-control/kling-3.0": ("kling-3.0", "motion"),
    "/motion-control/kling-2.6": ("kling-2.6", "motion"),
    "/text-to-video/kling-2.6": ("kling-2.6", "t2v"),
    "/image-to-video/kling-2.6": ("kling-2.6", "i2v"),
    "/text-to-video/kling-2.5-turbo": ("kling-2.5-turbo", "t2v"),
    "/image-to-video/kling-2.5-turbo": ("kling-2.5-turbo", "i2v"),
}

_SHOT = re.compile(r"^\s*shot\s+(\d+)\s*,\s*(\d+)\s*,(.*)$", re.IGNORECASE | re.DOTALL)
_LOOKS_LIKE_SHOTS = re.compile(r"^\s*shot\s+\d+\s*,", re.IGNORECASE)


# ----- small helpers ---------------------------------------------------------------------------


def _object(body: Json, name: str) -> Json:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(name, "must be an object")
    return value


def _choice(obj: Json, key: str, path: str, choices: tuple[str, ...], default: str) -> str:
    value = obj.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value not in choices:
        raise invalid(path, f"must be one of {', '.join(choices)} (got {value!r})")
    return value


def _bool(obj: Json, key: str, path: str, default: bool) -> bool:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(path, "must be true or false")
    return value


def _duration(settings: Json, allowed: tuple[int, ...], default: int) -> int:
    value = settings.get("duration")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        low, high = allowed[0], allowed[-1]
        choices = f"{low}–{high}" if len(allowed) > 2 else " or ".join(map(str, allowed))
        raise invalid("settings.duration", f"must be an integer {choices} (got {value!r})")
    return value


def _options(body: Json) -> Json:
    options = _object(body, "options")
    callback_url = options.get("callback_url")
    if callback_url in (None, ""):
        callback_url = None
    elif not isinstance(callback_url, str):
        raise invalid("options.callback_url", "must be an http(s) URL")
    else:
        parts = urlsplit(callback_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise invalid("options.callback_url", "must be an http(s) URL")
    external = options.get("external_task_id")
    if external in (None, ""):
        external = None
    elif not isinstance(external, str):
        raise invalid("options.external_task_id", "must be a string")
    watermark = options.get("watermark_info")
    enabled = False
    if watermark is not None:
        if not isinstance(watermark, dict) or not isinstance(watermark.get("enabled", False), bool):
            raise invalid("options.watermark_info", 'must be {"enabled": true|false}')
        enabled = bool(watermark.get("enabled", False))
    return {"callback_url": callback_url, "external_task_id": external, "watermark": enabled}


def check_shots(prompt: str, field: str, duration: int) -> int:
    """A storyboard prompt ``shot n, m, words; shot n, m, words; …`` (§4 common rules):
    1–6 shots numbered 1, 2, … in order, each ``m`` ≥ 1 s, the ``m`` summing to
    ``duration``, each ``words`` ≤ 512 characters. A prompt that does not start with
    ``shot <n>,`` is an ordinary prompt (returns 0); else returns the number of shots.
    Raises ``ApiError`` 1201 naming ``field``."""
    if not _LOOKS_LIKE_SHOTS.match(prompt):
        return 0
    parts = [p for p in prompt.split(";") if p.strip()]
    if not 1 <= len(parts) <= SHOTS_MAX:
        raise invalid(field, f"a storyboard holds 1 to {SHOTS_MAX} shots (got {len(parts)})")
    total = 0
    for index, part in enumerate(parts, start=1):
        match = _SHOT.match(part)
        if match is None:
            raise invalid(field, f"shot {index} must read 'shot {index}, <seconds>, <words>'")
        number, seconds, words = int(match[1]), int(match[2]), match[3].strip()
        if number != index:
            raise invalid(
                field, f"shots must be numbered 1, 2, … in order (shot {index} is {number})"
            )
        if seconds < 1:
            raise invalid(field, f"shot {index} must last at least 1 s")
        if len(words) > SHOT_WORDS_MAX:
            raise invalid(
                field,
                f"shot {index} words must be at most {SHOT_WORDS_MAX} characters (got {len(words)})",
            )
        total += seconds
    if total != duration:
        raise invalid(
            field, f"shot durations must add up to the video duration {duration} s (got {total} s)"
        )
    return len(parts)


def _prompt_text(value: Any, field: str, max_len: int, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise invalid(field, "is required")
        return None
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if len(value) > max_len:
        raise invalid(field, f"must be at most {max_len} characters (got {len(value)})")
    return value


# ----- contents[] ------------------------------------------------------------------------------


class _Contents:
    """The parsed ``contents[]``: one prompt, images by type, videos, elements, in order."""

    def __init__(self) -> None:
        self.prompt: str | None = None
        self.prompt_field = "contents"
        self.images: dict[str, list[int]] = {}  # type -> indexes
        self.videos: list[tuple[int, str, Json]] = []  # (index, type, item)
        self.elements: list[tuple[int, str, str]] = []  # (index, name, reference_type)


def _contents(
    body: Json,
    *,
    allowed: tuple[str, ...],
    prompt_max: int,
    elements: ElementLookup,
) -> _Contents:
    items = body.get("contents")
    if not isinstance(items, list) or not items:
        raise invalid("contents", "is required: a non-empty list of inputs")
    parsed = _Contents()
    seen_ids: set[str] = set()
    for i, item in enumerate(items):
        field = f"contents[{i}]"
        if not isinstance(item, dict):
            raise invalid(field, "must be an object")
        kind = item.get("type")
        if kind not in allowed:
            raise invalid(f"{field}.type", f"must be one of {', '.join(allowed)} (got {kind!r})")
        ident = item.get("id")
        if ident not in (None, ""):
            if not isinstance(ident, str):
                raise invalid(f"{field}.id", "must be a string")
            if ident in seen_ids:
                raise invalid(f"{field}.id", f"'{ident}' is used twice (ids must be unique)")
            seen_ids.add(ident)
        if kind == "prompt":
            if parsed.prompt is not None:
                raise invalid(f"{field}.type", "only one prompt item is allowed")
            parsed.prompt = _prompt_text(
                item.get("text"), f"{field}.text", prompt_max, required=True
            )
            parsed.prompt_field = f"{field}.text"
        elif kind in ("first_frame", "last_frame", "refer_image", "image"):
            check_image(item.get("url"), f"{field}.url", max_bytes=NEW_IMAGE_MAX_BYTES)
            parsed.images.setdefault(kind, []).append(i)
        elif kind in ("feature_video", "base_video", "video"):
            parsed.videos.append((i, kind, item))
        elif kind == "element":
            if ident in (None, ""):
                raise invalid(f"{field}.id", "is required for an element")
            element_id = item.get("element_id")
            if element_id in (None, "") or isinstance(element_id, bool | dict | list):
                raise invalid(f"{field}.element_id", "is required")
            found = elements(str(element_id))
            if found is None:
                raise invalid(f"{field}.element_id", f"element '{element_id}' not found")
            parsed.elements.append((i, found[0], found[1]))
    for kind in ("first_frame", "last_frame"):
        if len(parsed.images.get(kind, [])) > 1:
            raise invalid(f"contents[{parsed.images[kind][1]}].type", f"at most one {kind}")
    if "last_frame" in parsed.images and "first_frame" not in parsed.images:
        raise invalid(
            f"contents[{parsed.images['last_frame'][0]}].type",
            "a last_frame needs a first_frame (last frame alone is not supported)",
        )
    names = [name for _, name, _ in parsed.elements]
    for a in names:
        for b in names:
            if a != b and a in b:
                raise invalid(
                    "contents",
                    f"element names must not be substrings of each other ('{a}' in '{b}')",
                )
    return parsed


def _count(parsed: _Contents, *kinds: str) -> int:
    return sum(len(parsed.images.get(k, [])) for k in kinds)


# ----- endpoints -------------------------------------------------------------------------------


def _t2v(body: Json, model: str) -> Json:
    settings = _object(body, "settings")
    max_len = PROMPT_MAX if model.startswith("kling-3.0") else PROMPT_MAX_2500
    prompt = _prompt_text(body.get("prompt"), "prompt", max_len, required=True)
    _choice(settings, "aspect_ratio", "settings.aspect_ratio", ASPECT_RATIOS, "16:9")
    if model.startswith("kling-3.0"):
        duration = _duration(settings, tuple(range(3, 16)), 5)
        check_shots(prompt or "", "prompt", duration)
    else:
        duration = _duration(settings, (5, 10), 5)
    resolution, variant, audio = _resolution_audio(settings, model)
    return {
        "output_seconds": Decimal(duration),
        "price": (model, variant, resolution),
        "resolution": resolution,
        "audio": audio,
    }


def _resolution_audio(settings: Json, model: str) -> tuple[str, str, str]:
    """(resolution, price variant, audio) for the t2v/i2v endpoints of ``model``."""
    if model == "kling-3.0":
        resolution = _choice(
            settings, "resolution", "settings.resolution", ("720p", "1080p", "4k"), "720p"
        )
        _bool(settings, "multi_shot", "settings.multi_shot", True)
        audio = _choice(settings, "audio", "settings.audio", ("native", "off"), "off")
        return resolution, audio, audio
    resolution = _choice(settings, "resolution", "settings.resolution", ("720p", "1080p"), "720p")
    if model == "kling-3.0-turbo":
        return resolution, "native", "native"  # priced "with native audio"; no audio field
    if model == "kling-2.6":
        audio = _choice(settings, "audio", "settings.audio", ("native", "off"), "off")
        if audio == "native" and resolution != "1080p":
            raise invalid("settings.audio", "native audio needs settings.resolution 1080p")
        return resolution, audio, audio
    return resolution, "off", "off"  # 2.5 Turbo: no audio


def _i2v(body: Json, model: str, elements: ElementLookup) -> Json:
    settings = _object(body, "settings")
    allowed: tuple[str, ...] = ("prompt", "first_frame")
    if model != "kling-3.0-turbo":
        allowed += ("last_frame",)
    if model == "kling-3.0":
        allowed += ("element",)
    max_len = PROMPT_MAX if model == "kling-3.0" else PROMPT_MAX_2500
    parsed = _contents(body, allowed=allowed, prompt_max=max_len, elements=elements)
    if "first_frame" not in parsed.images:
        raise invalid("contents", "a first_frame image is required")
    if len(parsed.elements) > 3:
        raise invalid(f"contents[{parsed.elements[3][0]}]", "at most 3 elements")
    if model.startswith("kling-3.0"):
        duration = _duration(settings, tuple(range(3, 16)), 5)
        if parsed.prompt:
            check_shots(parsed.prompt, parsed.prompt_field, duration)
    else:
        duration = _duration(settings, (5, 10), 5)
    resolution, variant, audio = _resolution_audio(settings, model)
    last = "last_frame" in parsed.images
    if last and model in ("kling-2.6", "kling-2.5-turbo") and resolution != "1080p":
        raise invalid("settings.resolution", "a last_frame needs 1080p on this model")
    return {
        "output_seconds": Decimal(duration),
        "price": (model, variant, resolution),
        "resolution": resolution,
        "audio": audio,
    }


def _omni(body: Json, model: str, elements: ElementLookup, fetch_timeout: float) -> Json:
    settings = _object(body, "settings")
    parsed = _contents(
        body,
        allowed=(
            "prompt",
            "first_frame",
            "last_frame",
            "refer_image",
            "feature_video",
            "base_video",
            "element",
        ),
        prompt_max=PROMPT_MAX,
        elements=elements,
    )
    multi_shot = _bool(settings, "multi_shot", "settings.multi_shot", True)
    audio = _choice(settings, "audio", "settings.audio", ("native", "original", "off"), "off")
    resolution = _choice(
        settings, "resolution", "settings.resolution", ("720p", "1080p", "4k"), "720p"
    )
    duration = _duration(settings, tuple(range(3, 16)), 5)
    has_frame = "first_frame" in parsed.images
    if len(parsed.videos) > 1:
        raise invalid(f"contents[{parsed.videos[1][0]}]", "at most 1 reference video")
    video_kind = parsed.videos[0][1] if parsed.videos else None
    if settings.get("aspect_ratio") in (None, "") and not has_frame and video_kind is None:
        raise invalid(
            "settings.aspect_ratio", "is required without a first frame or a reference video"
        )
    _choice(settings, "aspect_ratio", "settings.aspect_ratio", ASPECT_RATIOS, "16:9")
    if parsed.prompt:
        check_shots(parsed.prompt, parsed.prompt_field, duration)
    if video_kind == "feature_video":
        if not multi_shot:
            raise invalid("settings.multi_shot", "must be true with a feature_video")
        if audio != "off":
            raise invalid("settings.audio", "must be off with a feature_video")
    if video_kind == "base_video":
        if has_frame or "last_frame" in parsed.images:
            raise invalid("contents", "a base_video allows no first_frame or last_frame")
        if multi_shot:
            raise invalid("settings.multi_shot", "must be false with a base_video")
        if audio == "native":
            raise invalid("settings.audio", "cannot be native with a base_video")
    if audio == "original" and video_kind is None:
        raise invalid("settings.audio", "original needs a reference video")
    # Element limits (§4.5).
    images = _count(parsed, "first_frame", "last_frame", "refer_image")
    multi = sum(1 for _, _, kind in parsed.elements if kind == "image_refer")
    character = sum(1 for _, _, kind in parsed.elements if kind == "video_refer")
    if has_frame and len(parsed.elements) > 3:
        raise invalid("contents", "at most 3 elements with a first frame")
    if video_kind is None:
        if character > 3:
            raise invalid("contents", "at most 3 video-character elements")
        limit = 4 if character and multi else 7
        if images + multi > limit:
            raise invalid(
                "contents",
                f"images + multi-image elements must be at most {limit} (got {images + multi})",
            )
    else:
        if character and multi:
            raise invalid(
                "contents",
                "with a reference video, video-character and multi-image elements cannot be mixed",
            )
        if character > 1:
            raise invalid("contents", "at most 1 video-character element with a reference video")
        if character and images:
            raise invalid(
                "contents",
                "with a reference video, video-character elements and images cannot be mixed",
            )
        if images + multi > 4:
            raise invalid(
                "contents",
                f"images + multi-image elements must be at most 4 with a reference video (got {images + multi})",
            )
        index, _, item = parsed.videos[0]
        _check_omni_video(item.get("url"), f"contents[{index}].url", fetch_timeout)
    variant = "video" if video_kind is not None else ("native" if audio == "native" else "off")
    return {
        "output_seconds": Decimal(duration),
        "price": (model, variant, resolution),
        "resolution": resolution,
        "audio": audio,
    }


def _check_omni_video(value: Any, field: str, timeout: float) -> None:
    facts = fetch_video(value, field, max_bytes=OMNI_VIDEO_MAX_BYTES, timeout=timeout)
    low, high = OMNI_VIDEO_SECONDS
    if not low <= facts.seconds <= high:
        raise invalid(
            field,
            f"video duration must be between {low:g} and {high:g} s (got {facts.seconds:.2f} s)",
        )
    side_low, side_high = OMNI_VIDEO_SIDES
    if not (side_low <= facts.width <= side_high and side_low <= facts.height <= side_high):
        raise invalid(
            field,
            f"width and height must be {side_low}–{side_high} px (got {facts.width}x{facts.height})",
        )
    if facts.width * facts.height > OMNI_VIDEO_MAX_PIXELS:
        raise invalid(
            field,
            f"at most {OMNI_VIDEO_MAX_PIXELS} pixels per frame (got {facts.width * facts.height})",
        )
    ratio = facts.width / facts.height
    if not OMNI_VIDEO_ASPECT[0] <= ratio <= OMNI_VIDEO_ASPECT[1]:
        raise invalid(field, f"aspect ratio (width/height) must be 0.4–2 (got {ratio:.2f})")
    if not OMNI_VIDEO_FPS[0] <= round(facts.fps, 2) <= OMNI_VIDEO_FPS[1]:
        raise invalid(field, f"frame rate must be 24–60 fps (got {facts.fps:g})")


def _motion(body: Json, model: str, elements: ElementLookup, fetch_timeout: float) -> Json:
    settings = _object(body, "settings")
    allowed: tuple[str, ...] = ("prompt", "image", "video")
    if model == "kling-3.0":
        allowed += ("element",)
    parsed = _contents(body, allowed=allowed, prompt_max=PROMPT_MAX_2500, elements=elements)
    orientation = settings.get("character_orientation")
    if orientation not in ("image", "video"):
        raise invalid(
            "settings.character_orientation", f"is required: image or video (got {orientation!r})"
        )
    _choice(settings, "audio", "settings.audio", ("original", "off"), "original")
    resolution = _choice(settings, "resolution", "settings.resolution", ("720p", "1080p"), "720p")
    if len(parsed.images.get("image", [])) != 1:
        raise invalid("contents", "exactly one image is required")
    if len(parsed.videos) != 1:
        raise invalid("contents", "exactly one video is required")
    if len(parsed.elements) > 1:
        raise invalid(f"contents[{parsed.elements[1][0]}]", "at most 1 element")
    index, _, item = parsed.videos[0]
    field = f"contents[{index}].url"
    facts = fetch_video(
        item.get("url"), field, max_bytes=MOTION_VIDEO_MAX_BYTES, timeout=fetch_timeout
    )
    low, high = MOTION_VIDEO_SIDES
    if not (low <= facts.width <= high and low <= facts.height <= high):
        raise invalid(
            field, f"width and height must be {low}–{high} px (got {facts.width}x{facts.height})"
        )
    longest = MOTION_VIDEO_MAX_SECONDS[orientation]
    if not MOTION_VIDEO_MIN_SECONDS <= facts.seconds <= longest:
        raise invalid(
            field,
            f"video duration must be {MOTION_VIDEO_MIN_SECONDS:g}–{longest:g} s with "
            f"character_orientation {orientation} (got {facts.seconds:.2f} s)",
        )
    seconds = Decimal(str(round(facts.seconds, 1)))
    return {
        "output_seconds": seconds,
        "price": (model, "motion", resolution),
        "resolution": resolution,
        "audio": settings.get("audio") or "original",
    }


def validate_new(
    path: str, body: Json, *, elements: ElementLookup, fetch_timeout: float = 10.0
) -> Json:
    """Check a create ``body`` for the new-design ``path`` (a key of ``NEW_ENDPOINTS``).

    ``elements`` resolves an ``element_id`` of the caller's account (or a preset) to
    ``(name, reference_type)``; ``fetch_timeout`` bounds each reference-video download.
    Returns ``{callback_url, external_task_id, watermark, output_seconds (Decimal s),
    price (model, variant, resolution), resolution, audio, model, kind}``. Raises
    ``ApiError`` HTTP 400 / 1201 naming the field.
    """
    model, kind = NEW_ENDPOINTS[path]
    info = _options(body)
    if kind == "t2v":
        info.update(_t2v(body, model))
    elif kind == "i2v":
        info.update(_i2v(body, model, elements))
    elif kind == "omni":
        info.update(_omni(body, model, elements, fetch_timeout))
    else:
        info.update(_motion(body, model, elements, fetch_timeout))
    info["model"] = model
    info["kind"] = kind
    return info
