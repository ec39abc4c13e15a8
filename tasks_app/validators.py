"""Checks of inputs against the vendor's rules, before anything is sent (KLING_API.md §5).

Formats are decided by content (Pillow for images, mutagen for audio), never by the file
name. Sizes are in bytes, durations in seconds. Every refusal is a
``django.core.exceptions.ValidationError`` whose message names the limit that was broken,
e.g. "Image is 299×400 px; both sides must be at least 300 px."

Shared with ``elements_app`` (contract names: ``check_image_file``, ``check_audio_file``,
``check_media_url``).
"""

from __future__ import annotations

import contextlib
import io
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from PIL import Image, UnidentifiedImageError

#: Image rule (KLING_API.md §5): jpg/jpeg/png, ≤ 10 MB, ≥ 300 px a side, aspect 1:2.5..2.5:1.
IMAGE_MAX_BYTES = 10 * 1024 * 1024
IMAGE_MIN_SIDE = 300
IMAGE_MAX_RATIO = Fraction(5, 2)
IMAGE_FORMATS = {"JPEG": "jpg", "PNG": "png"}

#: Avatar sound_file rule (§5.2): mp3/wav/m4a/aac, ≤ 5 MB, 2–300 s.
AUDIO_MAX_BYTES = 5 * 1024 * 1024
AUDIO_MIN_SECONDS = 2.0
AUDIO_MAX_SECONDS = 300.0

#: Extensions a pasted URL may end in, per kind (a hint only: the vendor fetches it).
URL_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image": (".jpg", ".jpeg", ".png"),
    "audio": (".mp3", ".wav", ".m4a", ".aac"),
    "video": (".mp4", ".mov"),
}
URL_MAX_LENGTH = 2000
#: Extensions that certainly are not what a field wants when not in its list; anything else
#: (``.php``, no extension) is left to the vendor.
_KNOWN_EXTENSIONS = frozenset(
    {e for exts in URL_EXTENSIONS.values() for e in exts}
    | {".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".svg", ".avif", ".ogg", ".oga"}
    | {".flac", ".opus", ".wma", ".avi", ".webm", ".mkv", ".flv", ".wmv", ".m4v"}
    | {".html", ".htm", ".txt", ".pdf", ".zip", ".json", ".xml"}
)


@dataclass(frozen=True)
class ImageInfo:
    """What ``check_image_file`` learned: pixels, format (``"jpg"``/``"png"``), bytes."""

    width: int
    height: int
    format: str
    size: int


@dataclass(frozen=True)
class AudioInfo:
    """What ``check_audio_file`` learned: seconds, format (mp3|wav|m4a|aac), bytes."""

    duration_s: float
    format: str
    size: int


def _megabytes(size: int) -> str:
    value = size / (1024 * 1024)
    return f"{value:.1f}".rstrip("0").rstrip(".") + " MB"


def _file_size(f: Any) -> int:
    size = getattr(f, "size", None)
    if size is None:
        pos = f.tell()
        f.seek(0, io.SEEK_END)
        size = f.tell()
        f.seek(pos)
    return int(size)


def _rewind(f: Any) -> None:
    with contextlib.suppress(AttributeError, OSError, ValueError):
        f.seek(0)


def _ratio_text(width: int, height: int) -> str:
    if width >= height:
        return f"{width / height:.2f}".rstrip("0").rstrip(".") + ":1"
    return "1:" + f"{height / width:.2f}".rstrip("0").rstrip(".")


def check_image_file(f: IO[bytes] | Any) -> ImageInfo:
    """Check an uploaded image against the vendor's image rule (KLING_API.md §5).

    ``f``: an uploaded file (or any binary file object). Rules: JPEG or PNG by content,
    at most 10 MB (10 × 1024 × 1024 bytes), width and height at least 300 px, aspect ratio
    between 1:2.5 and 2.5:1 inclusive. Returns ``ImageInfo``; the file is rewound.
    Raises ``ValidationError`` naming the broken limit.
    """
    size = _file_size(f)
    if size > IMAGE_MAX_BYTES:
        raise ValidationError(
            f"Image is {_megabytes(size)} ({size} bytes); the limit is 10 MB.",
            code="image_too_large",
        )
    if size == 0:
        raise ValidationError("The image file is empty.", code="image_empty")
    _rewind(f)
    try:
        with Image.open(f) as img:
            fmt = img.format or ""
            width, height = img.size
            if fmt in IMAGE_FORMATS:
                img.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise ValidationError(
            "This file is not a JPG or PNG image (its content is not a readable image).",
            code="image_format",
        )
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValidationError(
            f"This image is damaged and cannot be read ({exc}).", code="image_bad"
        )
    finally:
        _rewind(f)
    if fmt not in IMAGE_FORMATS:
        raise ValidationError(
            f"This file is a {fmt or 'non-image'} file; only JPG and PNG images are accepted.",
            code="image_format",
        )
    if width < IMAGE_MIN_SIDE or height < IMAGE_MIN_SIDE:
        raise ValidationError(
            f"Image is {width}×{height} px; both sides must be at least {IMAGE_MIN_SIDE} px.",
            code="image_too_small",
        )
    ratio = Fraction(width, height)
    if ratio > IMAGE_MAX_RATIO or ratio < 1 / IMAGE_MAX_RATIO:
        raise ValidationError(
            f"Image is {width}×{height} px (aspect {_ratio_text(width, height)}); "
            "the aspect ratio must be between 1:2.5 and 2.5:1.",
            code="image_aspect",
        )
    return ImageInfo(width=width, height=height, format=IMAGE_FORMATS[fmt], size=size)


def _audio_candidates(header: bytes) -> list[tuple[str, type]]:
    """Mutagen classes to try, from the first bytes of the file (not from its name)."""
    from mutagen.aac import AAC
    from mutagen.mp3 import MP3
    from mutagen.mp4 import MP4
    from mutagen.wave import WAVE

    if header[:4] == b"RIFF" and header[8:12] == b"WAVE":
        return [("wav", WAVE)]
    if header[4:8] == b"ftyp":
        return [("m4a", MP4)]
    if header[:4] == b"ADIF":
        return [("aac", AAC)]
    if header[:3] == b"ID3":
        return [("mp3", MP3), ("aac", AAC)]
    if len(header) >= 2 and header[0] == 0xFF and header[1] & 0xE0 == 0xE0:
        # Frame sync. Layer bits 00 mark an ADTS (AAC) stream; anything else is MPEG audio.
        if header[1] & 0x06 == 0:
            return [("aac", AAC)]
        return [("mp3", MP3)]
    return []


def check_audio_file(f: IO[bytes] | Any) -> AudioInfo:
    """Check an uploaded sound file against the avatar ``sound_file`` rule (§5.2).

    Rules: MP3, WAV, M4A or AAC by content (read with mutagen), at most 5 MB
    (5 × 1024 × 1024 bytes), duration 2–300 s inclusive. Returns ``AudioInfo``; the file is
    rewound. Raises ``ValidationError`` naming the broken limit.
    """
    from mutagen import MutagenError

    size = _file_size(f)
    if size > AUDIO_MAX_BYTES:
        raise ValidationError(
            f"Sound file is {_megabytes(size)} ({size} bytes); the limit is 5 MB.",
            code="audio_too_large",
        )
    _rewind(f)
    data = f.read()
    _rewind(f)
    if not data:
        raise ValidationError("The sound file is empty.", code="audio_empty")
    info = None
    fmt = ""
    for candidate, kind in _audio_candidates(data[:128]):
        try:
            # A nameless buffer, so mutagen cannot lean on the file name either.
            info = kind(io.BytesIO(data)).info
        except (MutagenError, ValueError, EOFError, IndexError, KeyError):
            continue
        fmt = candidate
        break
    if info is None:
        raise ValidationError(
            "This file is not a readable MP3, WAV, M4A or AAC sound file.",
            code="audio_format",
        )
    duration = float(getattr(info, "length", 0) or 0)
    if duration < AUDIO_MIN_SECONDS or duration > AUDIO_MAX_SECONDS:
        shown = f"{duration:.2f}".rstrip("0").rstrip(".")
        if shown in ("2", "300"):
            shown = f"{duration:.3f}"
        raise ValidationError(
            f"Sound is {shown} s long; it must be between 2 and 300 s.",
            code="audio_duration",
        )
    return AudioInfo(duration_s=duration, format=fmt, size=size)


def check_media_url(url: str, kinds: Iterable[str] | str) -> str:
    """Check a pasted media URL and return it stripped.

    ``kinds``: ``"image"``, ``"audio"``, ``"video"`` or several of them. Rules: http or
    https with a host, at most 2000 characters; when the path ends in a file extension it
    must be one the vendor accepts for that kind (KLING_API.md §5) — an extension hint
    only: a known media or document extension of another kind (``.gif`` for an image) is
    refused, an unknown one (``.php``) or none is left to the vendor, which fetches and
    checks the content. Raises ``ValidationError``.
    """
    if isinstance(kinds, str):
        kinds = (kinds,)
    kinds = tuple(kinds)
    url = (url or "").strip()
    if len(url) > URL_MAX_LENGTH:
        raise ValidationError(
            f"URL is {len(url)} characters; the limit is {URL_MAX_LENGTH}.", code="url_long"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            "Enter a full http:// or https:// address the vendor can reach.", code="url_scheme"
        )
    ext = posixpath.splitext(parts.path)[1].lower()
    allowed = tuple(e for kind in kinds for e in URL_EXTENSIONS.get(kind, ()))
    if ext in _KNOWN_EXTENSIONS and allowed and ext not in allowed:
        names = ", ".join(allowed)
        raise ValidationError(
            f"This URL points to a {ext} file; accepted: {names}.", code="url_extension"
        )
    return url
