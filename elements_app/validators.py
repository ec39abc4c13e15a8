"""The reference-video rule of elements (KLING_API.md §5.4, kling-docs/elements.txt).

A video element takes exactly one ``.mp4``/``.mov`` video, 3–8 s long, 1080p, 16:9 or 9:16,
at most 200 MB. Everything is read from the content with PyAV (libav's demuxers), never
from the file name. (Images go through ``tasks_app.validators.check_image_file``.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import av
from django.core.exceptions import ValidationError

VIDEO_MAX_BYTES = 200 * 1024 * 1024
VIDEO_MIN_SECONDS = 3.0
VIDEO_MAX_SECONDS = 8.0
#: (width, height) of 1080p at 16:9 and at 9:16.
VIDEO_SIZES = ((1920, 1080), (1080, 1920))
#: ISO base media brands that are not MP4/QuickTime video files (3GPP, Motion JPEG 2000).
_FOREIGN_BRANDS = ("3g", "mj2", "mjp2")


@dataclass(frozen=True)
class VideoInfo:
    """What PyAV read: ``container`` (``"mp4"`` or ``"mov"``), ``duration_s`` (seconds),
    ``width`` × ``height`` (pixels, as stored), ``size`` (bytes)."""

    container: str
    duration_s: float
    width: int
    height: int
    size: int


def _ratio(width: int, height: int) -> str:
    divisor = math.gcd(width, height) or 1
    return f"{width // divisor}:{height // divisor}"


def _open_target(f):
    path = getattr(f, "temporary_file_path", None)
    if callable(path):
        return path()
    f.seek(0)
    return f


def check_element_video(f) -> VideoInfo:
    """Check an uploaded reference video against the element video rule.

    ``f``: a Django ``UploadedFile`` (or any seekable binary file with ``size``).
    Returns ``VideoInfo``. Raises ``django.core.exceptions.ValidationError`` whose message
    names the limit that failed: size (≤ 200 MB), container (MP4 or MOV by content),
    a video stream, duration (3–8 s), resolution (1920×1080 or 1080×1920: 1080p at 16:9 or
    9:16). Leaves ``f`` rewound to the start.
    """
    size = getattr(f, "size", None)
    if size is None:
        f.seek(0, 2)
        size = f.tell()
    if size > VIDEO_MAX_BYTES:
        raise ValidationError(
            f"The video is {size / 1024 / 1024:.0f} MB; the limit is 200 MB.", code="too_big"
        )
    try:
        with av.open(_open_target(f), mode="r") as container:
            format_names = set((container.format.name or "").split(","))
            brand = str(container.metadata.get("major_brand", "")).strip().lower()
            if not format_names & {"mp4", "mov"} or brand.startswith(_FOREIGN_BRANDS):
                raise ValidationError("The video must be an MP4 or MOV file.", code="container")
            kind = "mov" if brand == "qt" else "mp4"
            if not container.streams.video:
                raise ValidationError("The file holds no video stream.", code="no_video")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if container.duration is not None:
                duration = container.duration / av.time_base
            elif stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * Fraction(stream.time_base))
            else:
                raise ValidationError("The video's duration cannot be read.", code="duration")
    except ValidationError:
        raise
    except (av.error.FFmpegError, ValueError, OSError):
        raise ValidationError(
            "The file cannot be read as a video; it must be an MP4 or MOV file.", code="unreadable"
        ) from None
    finally:
        if hasattr(f, "seek"):
            f.seek(0)

    if not VIDEO_MIN_SECONDS <= duration <= VIDEO_MAX_SECONDS:
        raise ValidationError(
            f"The video lasts {duration:.1f} s; it must last 3 to 8 seconds.", code="duration"
        )
    if (width, height) not in VIDEO_SIZES:
        raise ValidationError(
            f"The video is {width}×{height} ({_ratio(width, height)}); it must be 1080p at "
            "16:9 or 9:16 (1920×1080 or 1080×1920).",
            code="resolution",
        )
    return VideoInfo(container=kind, duration_s=duration, width=width, height=height, size=size)
