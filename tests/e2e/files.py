"""Real input files the browser tests upload: a photograph-like JPEG and a voice-like WAV."""

from __future__ import annotations

import math
import random
import struct
import wave
from pathlib import Path


def photo_jpeg(path: Path, *, width: int = 720, height: int = 900, seed: int = 7) -> Path:
    """Write a photograph-like JPEG (gradients, soft shapes, sensor noise) and return ``path``.

    Default 720×900 px (portrait 4:5), well inside the vendor's image rule (≥ 300 px each
    side, aspect 1:2.5–2.5:1, ≤ 10 MB). ``width``/``height`` make deliberately bad ones.
    """
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    sky = Image.linear_gradient("L").resize((width, height))
    base = Image.merge(
        "RGB",
        (
            sky.point(lambda v: 90 + v // 3),
            sky.point(lambda v: 120 + v // 4),
            sky.point(lambda v: 200 - v // 3),
        ),
    )
    draw = ImageDraw.Draw(base)
    # A head and shoulders, a little off-centre, as in a portrait photograph.
    cx, cy, r = width * 0.52, height * 0.42, min(width, height) * 0.2
    draw.ellipse((cx - r * 1.6, cy + r * 1.1, cx + r * 1.6, cy + r * 3.4), fill=(52, 61, 90))
    draw.ellipse((cx - r, cy - r * 1.25, cx + r, cy + r * 1.25), fill=(214, 170, 140))
    draw.ellipse((cx - r * 1.05, cy - r * 1.4, cx + r * 1.05, cy - r * 0.3), fill=(70, 45, 30))
    for dx in (-0.38, 0.38):
        draw.ellipse((cx + dx * r - 9, cy - 12, cx + dx * r + 9, cy + 4), fill=(40, 30, 25))
    draw.arc(
        (cx - r * 0.4, cy + r * 0.3, cx + r * 0.4, cy + r * 0.75),
        20,
        160,
        fill=(150, 60, 60),
        width=5,
    )
    for _ in range(25):  # out-of-focus background lights
        x, y, s = rng.uniform(0, width), rng.uniform(0, height * 0.5), rng.uniform(8, 40)
        draw.ellipse((x - s, y - s, x + s, y + s), fill=(255, 240, 200))
    image = base.filter(ImageFilter.GaussianBlur(2.5))
    noise = Image.effect_noise((width, height), 18).convert("RGB")
    image = Image.blend(image, noise, 0.08)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=88)
    return path


def voice_wav(path: Path, *, seconds: float = 3.0, rate: int = 16_000) -> Path:
    """Write a mono 16-bit PCM WAV of ``seconds`` (a voice-like tone with syllables).

    A 3 s clip is inside the vendor's audio rule (2–300 s, ≤ 5 MB).
    """
    frames = bytearray()
    for n in range(int(seconds * rate)):
        t = n / rate
        pitch = 160 + 25 * math.sin(2 * math.pi * 0.7 * t)  # intonation
        envelope = 0.55 + 0.45 * math.sin(2 * math.pi * 3.2 * t) ** 2  # syllables
        sample = sum(
            math.sin(2 * math.pi * pitch * k * t) / k for k in (1, 2, 3)
        )  # a few harmonics
        frames += struct.pack("<h", int(9000 * envelope * sample / 1.8))
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(bytes(frames))
    return path
