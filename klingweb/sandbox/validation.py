"""Request validation: every field rule of KLING_API.md §5 and the kling-docs pages.

Each check raises ``ApiError`` (HTTP 400, code 1201) whose message starts with the field's
name (nested as ``element_image_list.refer_images[1].image_url``) followed by the rule that
failed. ``validate_create`` returns the facts the state needs (mode, duration, model, ...).

Images and audio given as URLs are never fetched: only the scheme and the extension of the
last path segment are checked (none, or one of the allowed ones). Media given as Base64 are
decoded and inspected: images with Pillow, audio with mutagen. Element reference videos are
URLs only; the sandbox fetches them (``fetch``) and reads them with PyAV.
"""

from __future__ import annotations

import binascii
import io
import posixpath
from typing import Any
from urllib.parse import urlsplit

from .errors import invalid
from .fetch import fetch_bytes, probe_video, require_video_url

MB = 1024 * 1024
IMAGE_MAX_BYTES = 10 * MB
IMAGE_MIN_SIDE = 300  # pixels, width and height
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
AUDIO_MAX_BYTES = 5 * MB
AUDIO_MIN_SECONDS = 2.0
AUDIO_MAX_SECONDS = 300.0
AUDIO_EXTENSIONS = (".mp3", ".wav", ".m4a", ".aac")
VIDEO_MAX_BYTES = 200 * MB
VIDEO_MIN_SECONDS = 3.0
VIDEO_MAX_SECONDS = 8.0
VIDEO_EXTENSIONS = (".mp4", ".mov")
PROMPT_MAX = 2500  # characters
ELEMENT_NAME_MAX = 20
ELEMENT_DESCRIPTION_MAX = 100
REFER_IMAGES_MIN, REFER_IMAGES_MAX = 1, 3
PAGE_NUM_MAX = 1000
PAGE_SIZE_MAX = 500

MODES = ("std", "pro")
MODES_ALL = ("std", "pro", "4k")
# model_name values of the public text-to-video / image-to-video references (KLING_API.md §5.6).
MODEL_NAMES = (
    "kling-v1",
    "kling-v1-5",
    "kling-v1-6",
    "kling-v2-master",
    "kling-v2-1",
    "kling-v2-1-master",
    "kling-v2-5-turbo",
    "kling-v2-6",
    "kling-v3",
)
# Models with a ``sound`` switch (KLING_API_2026.md §5: 2.6 since 12/15/2025; 3.0 audio).
SOUND_MODELS = ("kling-v2-6", "kling-v3")
SOUND_VALUES = ("on", "off")
MODES_4K = ("kling-v3",)  # mode "4k" (KLING_API_2026.md §5)
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
DURATIONS = ("5", "10")
REFERENCE_TYPES = ("image_refer", "video_refer")
TAG_IDS = ("o_101", "o_102", "o_103", "o_104", "o_105", "o_106", "o_107", "o_108")
CAMERA_TYPES = ("simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward")
CAMERA_AXES = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")

Json = dict[str, Any]


# ----- small field helpers ----------------------------------------------------------------


def _str(
    body: Json, field: str, *, required: bool = False, max_len: int | None = None, path: str = ""
) -> str | None:
    """An optional (or required) string field; ``""`` and ``null`` count as absent."""
    name = path or field
    value = body.get(field)
    if value is None or value == "":
        if required:
            raise invalid(name, "is required")
        return None
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    if max_len is not None and len(value) > max_len:
        raise invalid(name, f"must be at most {max_len} characters (got {len(value)})")
    return value


def _enum(body: Json, field: str, choices: tuple[str, ...], default: str | None) -> str | None:
    value = body.get(field)
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value not in choices:
        raise invalid(field, f"must be one of {', '.join(choices)} (got {value!r})")
    return value


def _number(body: Json, field: str, low: float, high: float) -> float | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(field, f"must be a number in [{low:g}, {high:g}]")
    if not low <= value <= high:
        raise invalid(field, f"must be in [{low:g}, {high:g}] (got {value})")
    return float(value)


def _watermark(body: Json) -> bool:
    value = body.get("watermark_info")
    if value is None:
        return False
    if not isinstance(value, dict) or not isinstance(value.get("enabled"), bool):
        raise invalid("watermark_info", 'must be {"enabled": true|false}')
    return value["enabled"]


def _http_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _check_url(value: str, field: str, extensions: tuple[str, ...], kind: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise invalid(field, f"must be an http(s) URL of a {kind} or raw Base64")
    ext = posixpath.splitext(posixpath.basename(parts.path))[1].lower()
    if ext and ext not in extensions:
        raise invalid(field, f"URL must point to a {'/'.join(extensions)} file (got {ext})")


def _decode_base64(value: str, field: str, max_bytes: int, kinds: str) -> bytes:
    if value.lstrip()[:5].lower() == "data:":  # (not the whole value: it may be 270 MB)
        raise invalid(
            field,
            "Base64 must be raw, without a 'data:...;base64,' prefix",
        )
    text = "".join(value.split())
    limit_mb = max_bytes // MB
    if len(text) * 3 // 4 > max_bytes + 3:
        raise invalid(field, f"file size must not exceed {limit_mb} MB")
    text += "=" * (-len(text) % 4)
    try:
        # Strict: only the Base64 alphabet, padding only at the end (b64decode's
        # validate=True, without its copy of the text into bytes).
        data = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise invalid(field, f"must be an http(s) URL or raw Base64 of a {kinds} file")
    if not data:
        raise invalid(field, "is empty")
    if len(data) > max_bytes:
        raise invalid(field, f"file size must not exceed {limit_mb} MB (got {len(data)} bytes)")
    return data


# ----- media rules --------------------------------------------------------------------------


def check_image(
    value: Any, field: str, *, required: bool = True, max_bytes: int = IMAGE_MAX_BYTES
) -> str | None:
    """The image rule (KLING_API.md §5): an http(s) URL ending .jpg/.jpeg/.png (or with no
    extension), or raw Base64 (no ``data:`` prefix) of a JPEG/PNG (detected by content) of
    at most ``max_bytes`` (10 MB on ``/v1``; the new design passes 50 MB, KLING_API_2026.md
    §4), both sides ≥ 300 px, aspect ratio between 1:2.5 and 2.5:1 inclusive.
    Returns the value (``None`` when optional and absent); raises ``ApiError`` 1201."""
    from PIL import Image, UnidentifiedImageError

    if value is None or value == "":
        if required:
            raise invalid(field, "is required")
        return None
    if not isinstance(value, str):
        raise invalid(field, "must be a string (an image URL or raw Base64)")
    if _http_url(value):
        _check_url(value, field, IMAGE_EXTENSIONS, "image")
        return value
    data = _decode_base64(value, field, max_bytes, ".jpg/.jpeg/.png")
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = (image.format or "").upper()
            width, height = image.size
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise invalid(field, "is not a decodable image: format must be jpg, jpeg or png")
    if fmt not in ("JPEG", "PNG"):
        raise invalid(field, f"format must be jpg, jpeg or png (got {fmt.lower() or 'unknown'})")
    if width < IMAGE_MIN_SIDE or height < IMAGE_MIN_SIDE:
        raise invalid(
            field,
            f"width and height must be at least {IMAGE_MIN_SIDE}px (got {width}x{height})",
        )
    if 2 * width > 5 * height or 2 * height > 5 * width:
        raise invalid(
            field,
            f"aspect ratio must be between 1:2.5 and 2.5:1 (got {width}x{height})",
        )
    return value


def _sniff_audio(data: bytes):
    from mutagen.aac import AAC
    from mutagen.mp3 import MP3
    from mutagen.mp4 import MP4
    from mutagen.wave import WAVE

    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return WAVE, "wav"
    if data[4:8] == b"ftyp":
        return MP4, "m4a"
    start = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        start = 10 + size
    head = data[start : start + 2]
    if len(head) == 2 and head[0] == 0xFF:
        if head[1] & 0xF6 == 0xF0:  # ADTS sync word with layer 00: AAC
            return AAC, "aac"
        if head[1] & 0xE0 == 0xE0:  # MPEG audio frame sync
            return MP3, "mp3"
    return None, None


def check_audio(value: Any, field: str) -> float | None:
    """The audio rule of the avatar page: an http(s) URL ending .mp3/.wav/.m4a/.aac (not
    fetched; duration unknown → ``None``), or raw Base64 of MP3/WAV/M4A/AAC (by content,
    read with mutagen) of at most 5 MB lasting 2–300 s. Returns the duration in seconds;
    raises ``ApiError`` 1201."""
    if not isinstance(value, str):
        raise invalid(field, "must be a string (an audio URL or raw Base64)")
    if _http_url(value):
        _check_url(value, field, AUDIO_EXTENSIONS, "audio file")
        return None
    data = _decode_base64(value, field, AUDIO_MAX_BYTES, ".mp3/.wav/.m4a/.aac")
    kind, fmt = _sniff_audio(data)
    if kind is None:
        raise invalid(field, "audio format must be mp3, wav, m4a or aac")
    try:
        length = float(kind(io.BytesIO(data)).info.length)
    except Exception:  # noqa: BLE001 - mutagen raises many kinds of errors on bad files
        raise invalid(field, f"is not a readable {fmt} audio file")
    if not AUDIO_MIN_SECONDS <= length <= AUDIO_MAX_SECONDS:
        raise invalid(
            field,
            f"audio duration must be between {AUDIO_MIN_SECONDS:g} and "
            f"{AUDIO_MAX_SECONDS:g} seconds (got {length:.2f} s)",
        )
    return length


def check_video(value: Any, field: str, *, timeout: float = 10.0) -> str:
    """The element video rule (kling-docs/elements.txt, KLING_API_2026.md §4.9): an
    http(s) URL of a .mp4/.mov, which the sandbox fetches (≤ 200 MB, ``timeout`` s) and
    reads with PyAV: 3–8 s, 1080p (1920x1080 or 1080x1920, i.e. 16:9 or 9:16). Base64 is
    refused: the vendor documents URLs there. Raises ``ApiError`` 1201."""
    url = require_video_url(value, field)
    facts = probe_video(fetch_bytes(url, field, max_bytes=VIDEO_MAX_BYTES, timeout=timeout), field)
    if not VIDEO_MIN_SECONDS <= facts.seconds <= VIDEO_MAX_SECONDS:
        raise invalid(
            field,
            f"video duration must be between {VIDEO_MIN_SECONDS:g} and "
            f"{VIDEO_MAX_SECONDS:g} seconds (got {facts.seconds:.2f} s)",
        )
    if sorted((facts.width, facts.height)) != [1080, 1920]:
        raise invalid(
            field, f"video must be 1080p, 16:9 or 9:16 (got {facts.width}x{facts.height})"
        )
    return url


# ----- shared parts of create bodies --------------------------------------------------------


def _common(body: Json) -> Json:
    callback_url = _str(body, "callback_url")
    if callback_url is not None:
        parts = urlsplit(callback_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise invalid("callback_url", "must be an http(s) URL")
    external = _str(body, "external_task_id")
    return {"callback_url": callback_url, "external_task_id": external}


def _camera_control(body: Json) -> None:
    value = body.get("camera_control")
    if value is None:
        return
    if not isinstance(value, dict):
        raise invalid("camera_control", "must be an object")
    kind = value.get("type")
    if kind not in CAMERA_TYPES:
        raise invalid("camera_control.type", f"must be one of {', '.join(CAMERA_TYPES)}")
    config = value.get("config")
    if kind != "simple":
        if config not in (None, {}):
            raise invalid("camera_control.config", f"must be empty when type is {kind}")
        return
    if not isinstance(config, dict):
        raise invalid("camera_control.config", "is required when type is simple")
    nonzero = 0
    for axis, amount in config.items():
        if axis not in CAMERA_AXES:
            raise invalid(f"camera_control.config.{axis}", "is not a camera axis")
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise invalid(f"camera_control.config.{axis}", "must be a number in [-10, 10]")
        if not -10 <= amount <= 10:
            raise invalid(f"camera_control.config.{axis}", "must be in [-10, 10]")
        nonzero += amount != 0
    if nonzero != 1:
        raise invalid("camera_control.config", "exactly one axis must be non-zero")


def _prompts(body: Json, *, prompt_required: bool) -> None:
    _str(body, "prompt", required=prompt_required, max_len=PROMPT_MAX)
    _str(body, "negative_prompt", max_len=PROMPT_MAX)
    _number(body, "cfg_scale", 0, 1)


# ----- one validator per family ---------------------------------------------------------------


def _multi_shot(body: Json) -> Json:
    check_image(body.get("element_frontal_image"), "element_frontal_image")
    return {}


def _avatar(body: Json) -> Json:
    check_image(body.get("image"), "image")
    audio_id = _str(body, "audio_id")
    sound_file = body.get("sound_file")
    has_sound = sound_file not in (None, "")
    if audio_id is not None and has_sound:
        raise invalid(
            "audio_id/sound_file", "audio_id and sound_file are mutually exclusive: give one"
        )
    if audio_id is None and not has_sound:
        raise invalid("audio_id/sound_file", "one of audio_id or sound_file is required")
    seconds = check_audio(sound_file, "sound_file") if has_sound else None
    _str(body, "prompt", max_len=PROMPT_MAX)
    mode = _enum(body, "mode", MODES, "std")
    return {"mode": mode, "audio_seconds": seconds, "watermark": _watermark(body)}


def _video_extend(body: Json) -> Json:
    video_id = body.get("video_id")
    if video_id is None or video_id == "":
        raise invalid("video_id", "is required")
    if not isinstance(video_id, str):
        raise invalid("video_id", "must be a string")
    _prompts(body, prompt_required=False)
    return {"video_id": video_id, "watermark": _watermark(body)}


def _mode_and_sound(body: Json, model: str) -> tuple[str, str | None]:
    """``mode`` (std|pro, or 4k for kling-v3) and ``sound`` (on|off, kling-v2-6 and kling-v3
    only; on kling-v2-6 it needs pro, as the price table has no 2.6 audio at 720p and the
    2.6 page says native audio needs 1080p)."""
    mode = _enum(body, "mode", MODES_ALL, "std")
    if mode == "4k" and model not in MODES_4K:
        raise invalid("mode", f"4k is only available with {', '.join(MODES_4K)} (got {model})")
    sound = _enum(body, "sound", SOUND_VALUES, None)
    if sound is not None and model not in SOUND_MODELS:
        raise invalid("sound", f"is only available with {', '.join(SOUND_MODELS)} (got {model})")
    if sound == "on" and model == "kling-v2-6" and mode != "pro":
        raise invalid("sound", "on with kling-v2-6 needs mode pro (1080p)")
    return mode, sound


def _text2video(body: Json) -> Json:
    model = _enum(body, "model_name", MODEL_NAMES, "kling-v1")
    _prompts(body, prompt_required=True)
    mode, sound = _mode_and_sound(body, model)
    _enum(body, "aspect_ratio", ASPECT_RATIOS, "16:9")
    duration = _duration(body)
    _camera_control(body)
    return {
        "model_name": model,
        "mode": mode,
        "sound": sound,
        "duration": duration,
        "watermark": _watermark(body),
    }


def _duration(body: Json) -> str:
    value = body.get("duration")
    if value is None or value == "":
        return "5"
    if value not in DURATIONS or not isinstance(value, str):
        raise invalid("duration", f'must be the string "5" or "10" (got {value!r})')
    return value


def _image2video(body: Json) -> Json:
    model = _enum(body, "model_name", MODEL_NAMES, "kling-v1")
    check_image(body.get("image"), "image")
    check_image(body.get("image_tail"), "image_tail", required=False)
    _prompts(body, prompt_required=False)
    mode, sound = _mode_and_sound(body, model)
    duration = _duration(body)
    _camera_control(body)
    check_image(body.get("static_mask"), "static_mask", required=False)
    masks = body.get("dynamic_masks")
    if masks not in (None, []):
        if not isinstance(masks, list) or len(masks) > 6:
            raise invalid("dynamic_masks", "must be a list of at most 6 masks")
        for i, item in enumerate(masks):
            if not isinstance(item, dict):
                raise invalid(f"dynamic_masks[{i}]", "must be an object")
            check_image(item.get("mask"), f"dynamic_masks[{i}].mask")
            points = item.get("trajectories")
            if not isinstance(points, list) or not 2 <= len(points) <= 77:
                raise invalid(f"dynamic_masks[{i}].trajectories", "must hold 2 to 77 points")
    groups = {
        "image_tail": body.get("image_tail") not in (None, ""),
        "static_mask/dynamic_masks": body.get("static_mask") not in (None, "")
        or masks not in (None, []),
        "camera_control": body.get("camera_control") is not None,
    }
    given = [name for name, present in groups.items() if present]
    if len(given) > 1:
        raise invalid(
            "/".join(given),
            "image_tail, motion masks (static_mask/dynamic_masks) and camera_control "
            "are mutually exclusive",
        )
    return {
        "model_name": model,
        "mode": mode,
        "sound": sound,
        "duration": duration,
        "watermark": _watermark(body),
    }


def _element(body: Json, *, fetch_timeout: float = 10.0) -> Json:
    name = _str(body, "element_name", required=True, max_len=ELEMENT_NAME_MAX)
    description = _str(body, "element_description", required=True, max_len=ELEMENT_DESCRIPTION_MAX)
    reference_type = body.get("reference_type")
    if reference_type not in REFERENCE_TYPES:
        raise invalid(
            "reference_type",
            f"is required, one of {', '.join(REFERENCE_TYPES)} (got {reference_type!r})",
        )
    image_list = body.get("element_image_list")
    video_list = body.get("element_video_list")
    info: Json = {
        "element_name": name,
        "element_description": description,
        "reference_type": reference_type,
    }
    if reference_type == "image_refer":
        if video_list not in (None, {}):
            raise invalid(
                "element_video_list", "must not be given when reference_type is image_refer"
            )
        if not isinstance(image_list, dict):
            raise invalid("element_image_list", "is required when reference_type is image_refer")
        frontal = check_image(image_list.get("frontal_image"), "element_image_list.frontal_image")
        refer = image_list.get("refer_images")
        if not isinstance(refer, list) or not REFER_IMAGES_MIN <= len(refer) <= REFER_IMAGES_MAX:
            got = len(refer) if isinstance(refer, list) else "none"
            raise invalid(
                "element_image_list.refer_images",
                f"must hold {REFER_IMAGES_MIN} to {REFER_IMAGES_MAX} images (got {got})",
            )
        for i, item in enumerate(refer):
            field = f"element_image_list.refer_images[{i}]"
            if not isinstance(item, dict):
                raise invalid(field, 'must be {"image_url": ...}')
            check_image(item.get("image_url"), f"{field}.image_url")
        info["element_image_list"] = {
            "frontal_image": frontal,
            "refer_images": [{"image_url": item["image_url"]} for item in refer],
        }
    else:
        if image_list not in (None, {}):
            raise invalid(
                "element_image_list", "must not be given when reference_type is video_refer"
            )
        if not isinstance(video_list, dict):
            raise invalid("element_video_list", "is required when reference_type is video_refer")
        videos = video_list.get("refer_videos")
        if not isinstance(videos, list) or len(videos) != 1:
            got = len(videos) if isinstance(videos, list) else "none"
            raise invalid(
                "element_video_list.refer_videos", f"must hold exactly 1 video (got {got})"
            )
        item = videos[0]
        if not isinstance(item, dict):
            raise invalid("element_video_list.refer_videos[0]", 'must be {"video_url": ...}')
        url = check_video(
            item.get("video_url"),
            "element_video_list.refer_videos[0].video_url",
            timeout=fetch_timeout,
        )
        info["element_video_list"] = {"refer_videos": [{"video_url": url}]}
    info["element_voice_id"] = _str(body, "element_voice_id")
    tags = body.get("tag_list")
    tag_ids: list[str] = []
    if tags not in (None, []):
        if not isinstance(tags, list):
            raise invalid("tag_list", 'must be a list of {"tag_id": ...}')
        for i, item in enumerate(tags):
            tag = item.get("tag_id") if isinstance(item, dict) else None
            if tag not in TAG_IDS:
                raise invalid(
                    f"tag_list[{i}].tag_id",
                    f"must be one of {', '.join(TAG_IDS)} (got {tag!r})",
                )
            if tag not in tag_ids:
                tag_ids.append(tag)
    info["tag_ids"] = tag_ids
    return info


_VALIDATORS = {
    "multi_shot": _multi_shot,
    "avatar": _avatar,
    "video_extend": _video_extend,
    "text2video": _text2video,
    "image2video": _image2video,
    "element": _element,
}


def validate_create(family: str, body: Json, *, fetch_timeout: float = 10.0) -> Json:
    """Check a create ``body`` of ``family`` (a key of ``state.FAMILY_PATHS``) against
    KLING_API.md §5 and the vendor pages; return the facts the state keeps:
    ``callback_url``, ``external_task_id`` (``None`` when absent or ``""``), and per family
    ``mode``, ``duration``, ``model_name``, ``watermark``, ``audio_seconds``, ``video_id`` or
    the element fields. ``fetch_timeout``: seconds allowed to fetch an element's reference
    video. Raises ``ApiError`` (HTTP 400, code 1201, message naming the field). Unknown
    fields are ignored, as the vendor does."""
    info = _common(body)
    if family == "element":
        info.update(_element(body, fetch_timeout=fetch_timeout))
    else:
        info.update(_VALIDATORS[family](body))
    return info


def _int_param(query: dict[str, list[str]], name: str, default: int, high: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        value = int(values[-1])
    except ValueError:
        raise invalid(name, f"must be an integer in [1, {high}] (got {values[-1]!r})")
    if not 1 <= value <= high:
        raise invalid(name, f"must be in [1, {high}] (got {value})")
    return value


def validate_page(query: dict[str, list[str]]) -> tuple[int, int]:
    """``pageNum`` (1..1000, default 1) and ``pageSize`` (1..500, default 30) of a list
    query string (``parse_qs`` shape). Raises ``ApiError`` 1201 naming the parameter."""
    return (
        _int_param(query, "pageNum", 1, PAGE_NUM_MAX),
        _int_param(query, "pageSize", 30, PAGE_SIZE_MAX),
    )


def validate_costs_query(query: dict[str, list[str]]) -> str | None:
    """``GET /account/costs`` parameters (KLING_API.md §5.5): ``start_time`` and
    ``end_time`` required, integer Unix ms, start ≤ end; returns ``resource_pack_name`` or
    ``None``. Raises ``ApiError`` 1201 naming the parameter."""
    times: dict[str, int] = {}
    for name in ("start_time", "end_time"):
        values = query.get(name)
        if not values:
            raise invalid(name, "is required (Unix time in ms)")
        try:
            times[name] = int(values[-1])
        except ValueError:
            raise invalid(name, f"must be an integer Unix time in ms (got {values[-1]!r})")
        if times[name] < 0:
            raise invalid(name, "must not be negative")
    if times["start_time"] > times["end_time"]:
        raise invalid("start_time", "must not be after end_time")
    names = query.get("resource_pack_name")
    return names[-1] if names else None
