"""Result media the sandbox serves itself: real PNG images and one real H.264 MP4.

Everything is generated once per name and cached in memory (thread-safe). The sandbox never
fetches anything from the internet.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading

from PIL import Image, ImageDraw

PNG_SIZE = (480, 360)  # pixels: width, height (aspect 4:3, inside the vendor's image rule)
VIDEO_SIZE = (320, 240)  # pixels
VIDEO_FPS = 24
VIDEO_FRAMES = 24  # one second

_lock = threading.Lock()
_png_cache: dict[str, bytes] = {}
_mp4_cache: bytes | None = None


def colour_for(name: str) -> tuple[int, int, int]:
    """A stable, fairly saturated RGB colour derived from ``name``."""
    digest = hashlib.sha256(name.encode()).digest()
    return (40 + digest[0] % 200, 40 + digest[1] % 200, 40 + digest[2] % 200)


def png_bytes(name: str) -> bytes:
    """A ``PNG_SIZE`` PNG whose colour and label depend on ``name`` (cached)."""
    with _lock:
        cached = _png_cache.get(name)
    if cached is not None:
        return cached
    colour = colour_for(name)
    image = Image.new("RGB", PNG_SIZE, colour)
    draw = ImageDraw.Draw(image)
    inverse = tuple(255 - c for c in colour)
    draw.ellipse([140, 80, 340, 280], outline=inverse, width=8)
    draw.text((16, 16), f"Kling sandbox {name[-24:]}", fill=inverse)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data = buf.getvalue()
    with _lock:
        _png_cache[name] = data
    return data


def _encode_mp4() -> bytes:
    import av  # PyAV; imported lazily so the server starts fast

    fd, path = tempfile.mkstemp(suffix=".mp4", prefix="kling-sandbox-")
    os.close(fd)
    try:
        # A real file, not BytesIO: +faststart rewrites the file to put moov in front.
        with av.open(path, "w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=VIDEO_FPS)
            stream.width, stream.height = VIDEO_SIZE
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "30", "profile": "main"}
            for i in range(VIDEO_FRAMES):
                image = Image.new("RGB", VIDEO_SIZE, (30, 50, 110))
                draw = ImageDraw.Draw(image)
                x = (i * 12) % (VIDEO_SIZE[0] - 24)
                draw.rectangle([x, 0, x + 24, VIDEO_SIZE[1]], fill=(235, 200, 40))
                draw.text((10, 10), "Kling sandbox", fill=(255, 255, 255))
                for packet in stream.encode(av.VideoFrame.from_image(image)):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


def mp4_bytes() -> bytes:
    """A ~1 s, 320x240, H.264 (yuv420p, main profile) MP4 with moov at the front (cached)."""
    global _mp4_cache
    with _lock:
        if _mp4_cache is None:
            _mp4_cache = _encode_mp4()
        return _mp4_cache
