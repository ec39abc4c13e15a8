"""Reference videos given by URL: fetched (size limit, timeout) and inspected with PyAV.

The vendor takes reference videos by URL only (element ``video_url``,
kling-docs/elements.txt; Omni ``feature_video``/``base_video`` and motion-control ``video``,
KLING_API_2026.md §4.5, §4.6), and so does the sandbox: it downloads the file like the vendor
would and checks what it got. Any failure is a 1201 naming the field.
"""

from __future__ import annotations

import io
import posixpath
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from .errors import ApiError, invalid

MB = 1024 * 1024
VIDEO_EXTENSIONS = (".mp4", ".mov")
MAX_REDIRECTS = 3


@dataclass(frozen=True)
class VideoFacts:
    """What PyAV read from a fetched video: ``size`` (bytes), ``width``/``height`` (px),
    ``seconds`` (container duration), ``fps`` (average frame rate, 0 when unknown)."""

    size: int
    width: int
    height: int
    seconds: float
    fps: float


def require_video_url(value: object, field: str) -> str:
    """``value`` must be an http(s) URL whose path ends in .mp4/.mov (or has no
    extension). Base64 (anything not a URL) is refused: reference videos are taken "through
    URLs" only. Raises ``ApiError`` 1201."""
    if value is None or value == "":
        raise invalid(field, "must not be empty (a video URL)")
    if not isinstance(value, str):
        raise invalid(field, "must be a string (a video URL)")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise invalid(field, "must be an http(s) URL of a .mp4/.mov video (Base64 is not accepted)")
    ext = posixpath.splitext(posixpath.basename(parts.path))[1].lower()
    if ext and ext not in VIDEO_EXTENSIONS:
        raise invalid(field, f"URL must point to a .mp4/.mov file (got {ext})")
    return value


def fetch_bytes(url: str, field: str, *, max_bytes: int, timeout: float) -> bytes:
    """Download ``url`` (at most ``MAX_REDIRECTS`` redirects, ``timeout`` seconds in all),
    stopping as soon as more than ``max_bytes`` arrive. Raises ``ApiError`` 1201 naming
    ``field`` when the answer is not HTTP 200, not a ``video/*`` ``Content-Type``, too
    large, too slow or unreachable. (The vendor pages say only ".mp4/.mov"; a server that
    answers an HTML error page or a generic type with 200 is refused here, so a portal that
    serves its inputs without their type fails in the tests instead of on the vendor.)"""
    deadline = time.monotonic() + timeout
    limit_mb = max_bytes // MB
    try:
        with (
            httpx.Client(
                timeout=timeout,
                trust_env=False,
                follow_redirects=True,
                max_redirects=MAX_REDIRECTS,
            ) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise invalid(field, f"could not be fetched (HTTP {response.status_code})")
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            if not content_type.lower().startswith("video/"):
                raise invalid(
                    field,
                    f"did not answer with a video (Content-Type {content_type or 'missing'})",
                )
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise invalid(field, f"file size must not exceed {limit_mb} MB")
            chunks: list[bytes] = []
            total = 0
            for chunk in response.iter_bytes(256 * 1024):
                total += len(chunk)
                if total > max_bytes:
                    raise invalid(field, f"file size must not exceed {limit_mb} MB")
                if time.monotonic() > deadline:
                    raise invalid(field, f"could not be fetched within {timeout:g} s")
                chunks.append(chunk)
    except ApiError:
        raise
    except httpx.TimeoutException:
        raise invalid(field, f"could not be fetched within {timeout:g} s")
    except httpx.HTTPError as exc:
        raise invalid(field, f"could not be fetched ({type(exc).__name__})")
    data = b"".join(chunks)
    if not data:
        raise invalid(field, "the fetched file is empty")
    return data


def probe_video(data: bytes, field: str) -> VideoFacts:
    """Read an MP4/MOV with PyAV. Raises ``ApiError`` 1201 when it is not one or has no
    video stream."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            name = container.format.name
            if "mp4" not in name and "mov" not in name:
                raise invalid(field, "video format must be mp4 or mov")
            streams = container.streams.video
            if not streams:
                raise invalid(field, "has no video stream")
            stream = streams[0]
            rate = stream.average_rate
            return VideoFacts(
                size=len(data),
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                seconds=(container.duration or 0) / 1_000_000,
                fps=float(rate) if rate else 0.0,
            )
    except ApiError:
        raise
    except Exception:  # noqa: BLE001 - PyAV raises many kinds of errors on bad files
        raise invalid(field, "is not a decodable video (mp4 or mov)")


def fetch_video(value: object, field: str, *, max_bytes: int, timeout: float) -> VideoFacts:
    """``require_video_url`` + ``fetch_bytes`` + ``probe_video``: the facts of the video at
    ``value``. Raises ``ApiError`` 1201 naming ``field``."""
    url = require_video_url(value, field)
    return probe_video(fetch_bytes(url, field, max_bytes=max_bytes, timeout=timeout), field)
