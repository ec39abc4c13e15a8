"""The vendor's published price table, as the sandbox charges it (KLING_API_2026.md §8, S21).

The sandbox's own copy, kept apart from the portal's (client and sandbox are written
independently, so a test of one against the other finds real mistakes).

Video is priced in **units per second of output** by model, resolution (``720p`` = legacy
``mode: std``, ``1080p`` = ``pro``, ``4k``), audio and video input; a few features per call.
One video unit costs **0.14 USD** (the table's bracketed dollar figures are units × 0.14).

``VIDEO_RATES[(model, variant)][resolution]`` is a decimal string, where ``model`` is the
new-design path model (``kling-3.0-turbo``, ``kling-3.0``, ``kling-3.0-omni``, ``kling-o1``,
``kling-2.6``, ``kling-2.5-turbo``) or ``avatar``, and ``variant`` one of:

- ``off``: no audio; ``native``: generated audio (no voice control);
  ``native-voice``: generated audio with voice control (2.6 only);
- ``video``: a reference video as input, no generated audio (3.0 Omni, O1);
- ``motion``: motion control.

A combination the table leaves empty ("–": 2.6 audio at 720p, Turbo/motion control at 4K)
has no entry: ``video_rate`` raises ``KeyError`` and validation refuses such a request first.

Choices where the table is silent (each says why):

- **Legacy models the table does not list** (``kling-v1``, ``-v1-5``, ``-v1-6``,
  ``-v2-master``, ``-v2-1``, ``-v2-1-master``) are charged the lowest published video row,
  2.6-without-audio / 2.5 Turbo (0.3 / 0.5 units per s for std / pro): it is the table's
  only row for the legacy std/pro tiers without audio, and a sandbox should not invent a
  premium nobody published.
- **Video extension** (only V1.x sources) charges 5 s of that same row: each extension adds
  "4 to 5 s" and the sandbox bills the upper figure, as a vendor would round up.
- **3.0 Omni with a reference video and ``audio: original``** (keeping the clip's sound) is
  charged the "video input, no audio" row: no audio is generated.
- **AI Multi-Shot** costs 0.5 video units per call (S1's figure; S21 says 20 image units):
  both are 0.07 USD, and the sandbox's account holds one video pack, so the figure in video
  units keeps ``final_unit_deduction`` and the pack's remaining quantity in one unit.
- **Element creation** is not in the table; 0.05 units per call, the rate of the closest
  published library feature (Custom Voice, which a ``video_refer`` element also creates).
"""

from __future__ import annotations

from decimal import Decimal

VIDEO_UNIT_USD = Decimal("0.14")  # USD per video unit (S21)
IMAGE_UNIT_USD = Decimal("0.0035")  # USD per image unit (S21); no sandbox family uses it
CURRENCY = "USD"

VIDEO_RATES: dict[tuple[str, str], dict[str, str]] = {
    ("kling-3.0-turbo", "native"): {"720p": "0.8", "1080p": "1.0"},
    ("kling-3.0", "off"): {"720p": "0.6", "1080p": "0.8", "4k": "3.0"},
    ("kling-3.0", "native"): {"720p": "0.9", "1080p": "1.2", "4k": "3.0"},
    ("kling-3.0", "motion"): {"720p": "0.9", "1080p": "1.2"},
    ("kling-3.0-omni", "off"): {"720p": "0.6", "1080p": "0.8", "4k": "3.0"},
    ("kling-3.0-omni", "native"): {"720p": "0.8", "1080p": "1.0", "4k": "3.0"},
    ("kling-3.0-omni", "video"): {"720p": "0.9", "1080p": "1.2", "4k": "3.0"},
    ("kling-o1", "off"): {"720p": "0.6", "1080p": "0.8"},
    ("kling-o1", "video"): {"720p": "0.9", "1080p": "1.2"},
    ("kling-2.6", "off"): {"720p": "0.3", "1080p": "0.5"},
    ("kling-2.6", "native"): {"1080p": "1.0"},
    ("kling-2.6", "native-voice"): {"1080p": "1.2"},
    ("kling-2.6", "motion"): {"720p": "0.5", "1080p": "0.8"},
    ("kling-2.5-turbo", "off"): {"720p": "0.3", "1080p": "0.5"},
    ("avatar", "off"): {"720p": "0.4", "1080p": "0.8"},
}

#: Units per call of the features priced per call (see the module docstring for choices).
PER_CALL_UNITS: dict[str, str] = {
    "multi_shot": "0.5",
    "element": "0.05",
}

#: Legacy ``model_name`` → the table's model row (unlisted old models: see the docstring).
LEGACY_MODEL_ROWS: dict[str, str] = {
    "kling-v3": "kling-3.0",
    "kling-v3-omni": "kling-3.0-omni",
    "kling-video-o1": "kling-o1",
    "kling-v2-6": "kling-2.6",
    "kling-v2-5-turbo": "kling-2.5-turbo",
    "kling-v1": "kling-2.5-turbo",
    "kling-v1-5": "kling-2.5-turbo",
    "kling-v1-6": "kling-2.5-turbo",
    "kling-v2-master": "kling-2.5-turbo",
    "kling-v2-1": "kling-2.5-turbo",
    "kling-v2-1-master": "kling-2.5-turbo",
}

#: Legacy ``mode`` → resolution (S20: "legacy 720p=std, 1080p=pro").
MODE_RESOLUTIONS = {"std": "720p", "pro": "1080p", "4k": "4k"}


def video_rate(model: str, variant: str, resolution: str) -> Decimal:
    """Units per second of output for ``model`` (a table row), ``variant`` (off, native,
    native-voice, video, motion) and ``resolution`` (720p, 1080p, 4k). Raises ``KeyError``
    where the table has no figure."""
    return Decimal(VIDEO_RATES[(model, variant)][resolution])


def per_call(feature: str) -> Decimal:
    """Units one call of ``feature`` (``multi_shot``, ``element``) costs; ``KeyError`` if
    the feature is not priced per call."""
    return Decimal(PER_CALL_UNITS[feature])


def usd(units: Decimal) -> Decimal:
    """List price in USD of ``units`` video units (units × 0.14)."""
    return units * VIDEO_UNIT_USD


def decimal_text(value: Decimal) -> str:
    """A decimal as the vendor writes it: plain notation, no trailing zeros ("1.5", "0.21",
    "0")."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text
