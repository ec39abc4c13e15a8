"""The vendor's published prices, as the portal estimates them, and money for people.

ONE table of the vendor's published video prices (KLING_API_2026.md §8, vendor page
``/pricing/base/video``; per-call figures from the same section and §7): units of Kling
credit **per second of output** by model row, variant (audio, video input, motion control)
and resolution (``720p`` = legacy ``mode: std``, ``1080p`` = ``pro``, ``4k``), and a few
features priced **per call**. The sandbox keeps its own copy (``klingweb.sandbox.prices``);
the two are written apart on purpose so that a test of one against the other finds mistakes.

``task_estimate(family, data)`` turns a task's request body (``Task.params`` as
``TaskFamily.build_params`` made it) or a create form's current values (the HTMX estimate
partial) into units. It reads the facts the price depends on — ``model_name`` (or a 2026
path ``model``), ``mode``/``resolution``, ``duration`` (seconds), ``sound``, a reference
video — and looks the rate up in ``VIDEO_RATES`` keyed by ``(model row, variant)`` and
resolution. A family is described by one ``FAMILY_PRICING`` entry (per call, or per second
with a default model and default seconds), so a new family (the 3.0 ones) adds a row there
and, when needed, rows to ``VIDEO_RATES`` / ``MODEL_ROWS``.

Choices where the vendor is silent (each says why):

- **Old models the table does not list** (``kling-v1``, ``-v1-5``, ``-v1-6``,
  ``-v2-master``, ``-v2-1``, ``-v2-1-master``) are estimated at the lowest published video
  row, 2.6 without audio / 2.5 Turbo (0.3 / 0.5 units per s for std / pro): it is the only
  row for the legacy std/pro tiers without audio, and nothing published says they cost more.
- **Video extension** (V1.x sources only; model and mode follow the source) is estimated at
  5 s of that row: an extension adds "4 to 5 s", and a budget check should take the upper
  figure.
- **Avatar** is billed per second of output, which follows the audio's length; the body
  does not carry it, so the estimate is for ``AVATAR_DEFAULT_SECONDS`` (5 s) unless the data
  carries ``duration``.
- **AI Multi-Shot** is 0.5 video units per call (S1; S21 says 20 image units — both are
  0.07 USD): the portal's ledger counts video units, so the figure in video units is used.
- **Element creation** is not priced by the vendor; 0.05 units per call, the rate of the
  closest published library feature (Custom Voice).
- A combination the table leaves empty ("–") has no figure: ``task_estimate`` raises
  ``NoPrice`` (the forms refuse such combinations before this is reached).

Money: one video unit is **0.14 USD** on the vendor's price list (§8 "a video unit =
$0.14"); ``settings.KLING_UNIT_PRICE`` (money per unit, default that figure) and
``settings.KLING_CURRENCY`` (default ``"USD"``) convert units to money for estimates and for
ledger rows charged in units.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings

#: The vendor's list price of one video unit, USD (KLING_API_2026.md §8).
VENDOR_UNIT_PRICE_USD = Decimal("0.14")

#: Units per second of output: ``VIDEO_RATES[(model row, variant)][resolution]``.
#: Variants: ``off`` (no audio), ``native`` (generated audio), ``native-voice`` (generated
#: audio with voice control), ``video`` (a reference video as input), ``motion`` (motion
#: control). Rows are the 2026 path models; legacy names map to them via ``MODEL_ROWS``.
VIDEO_RATES: dict[tuple[str, str], dict[str, Decimal]] = {
    ("kling-3.0-turbo", "native"): {"720p": Decimal("0.8"), "1080p": Decimal("1.0")},
    ("kling-3.0", "off"): {"720p": Decimal("0.6"), "1080p": Decimal("0.8"), "4k": Decimal("3")},
    ("kling-3.0", "native"): {
        "720p": Decimal("0.9"),
        "1080p": Decimal("1.2"),
        "4k": Decimal("3"),
    },
    ("kling-3.0", "motion"): {"720p": Decimal("0.9"), "1080p": Decimal("1.2")},
    ("kling-3.0-omni", "off"): {
        "720p": Decimal("0.6"),
        "1080p": Decimal("0.8"),
        "4k": Decimal("3"),
    },
    ("kling-3.0-omni", "native"): {
        "720p": Decimal("0.8"),
        "1080p": Decimal("1.0"),
        "4k": Decimal("3"),
    },
    ("kling-3.0-omni", "video"): {
        "720p": Decimal("0.9"),
        "1080p": Decimal("1.2"),
        "4k": Decimal("3"),
    },
    ("kling-o1", "off"): {"720p": Decimal("0.6"), "1080p": Decimal("0.8")},
    ("kling-o1", "video"): {"720p": Decimal("0.9"), "1080p": Decimal("1.2")},
    ("kling-2.6", "off"): {"720p": Decimal("0.3"), "1080p": Decimal("0.5")},
    ("kling-2.6", "native"): {"1080p": Decimal("1.0")},
    ("kling-2.6", "native-voice"): {"1080p": Decimal("1.2")},
    ("kling-2.6", "motion"): {"720p": Decimal("0.5"), "1080p": Decimal("0.8")},
    ("kling-2.5-turbo", "off"): {"720p": Decimal("0.3"), "1080p": Decimal("0.5")},
    ("avatar", "off"): {"720p": Decimal("0.4"), "1080p": Decimal("0.8")},
}

#: Units per call of the features priced per call (§8; choices in the module docstring).
PER_CALL_UNITS: dict[str, Decimal] = {
    "multi_shot": Decimal("0.5"),
    "element": Decimal("0.05"),
    "tts": Decimal("0.05"),
    "face_recognition": Decimal("0.05"),
    "custom_voice": Decimal("0.05"),
    "text_to_audio": Decimal("0.25"),
    "image_recognition": Decimal("0.1"),
}

#: Model name (legacy ``model_name`` or 2026 path model) → the table's row.
MODEL_ROWS: dict[str, str] = {
    "kling-3.0-turbo": "kling-3.0-turbo",
    "kling-3.0": "kling-3.0",
    "kling-v3": "kling-3.0",
    "kling-3.0-omni": "kling-3.0-omni",
    "kling-v3-omni": "kling-3.0-omni",
    "kling-o1": "kling-o1",
    "kling-video-o1": "kling-o1",
    "kling-2.6": "kling-2.6",
    "kling-v2-6": "kling-2.6",
    "kling-2.5-turbo": "kling-2.5-turbo",
    "kling-v2-5-turbo": "kling-2.5-turbo",
    # Not in the table: the lowest published row (module docstring).
    "kling-v1": "kling-2.5-turbo",
    "kling-v1-5": "kling-2.5-turbo",
    "kling-v1-6": "kling-2.5-turbo",
    "kling-v2-master": "kling-2.5-turbo",
    "kling-v2-1": "kling-2.5-turbo",
    "kling-v2-1-master": "kling-2.5-turbo",
    "avatar": "avatar",
}

#: Legacy ``mode`` → resolution (§7: "legacy 720p=std, 1080p=pro"); 2026 resolutions as is.
RESOLUTIONS: dict[str, str] = {
    "std": "720p",
    "pro": "1080p",
    "4k": "4k",
    "720p": "720p",
    "1080p": "1080p",
}

#: The request/form fields ``task_estimate`` reads (the create forms' estimate element sends
#: only these, ``hx-params``): model, mode/resolution, duration, audio, a reference video.
ESTIMATE_FIELDS = (
    "model_name",
    "model",
    "mode",
    "resolution",
    "duration",
    "sound",
    "audio",
    "video_sound",
    "voice_control",
    "video_url",
    "reference_video",
    "feature_video",
    "base_video",
)

AVATAR_DEFAULT_SECONDS = Decimal("5")
EXTEND_SECONDS = Decimal("5")


@dataclass(frozen=True)
class FamilyPricing:
    """How one task family is priced: ``per_call`` (a ``PER_CALL_UNITS`` key) or per second
    of output with ``model`` (the model when the data names none), ``variant`` (the default
    variant, e.g. ``motion``), ``seconds`` (fixed billed seconds, e.g. an extension's 5 s;
    None = the data's ``duration``) and ``default_seconds`` (when the data has none)."""

    per_call: str = ""
    model: str = ""
    variant: str = "off"
    seconds: Decimal | None = None
    default_seconds: Decimal = Decimal("5")


#: One entry per task family (``Task.family``). New families add an entry.
FAMILY_PRICING: dict[str, FamilyPricing] = {
    "text2video": FamilyPricing(model="kling-v1"),
    "image2video": FamilyPricing(model="kling-v1"),
    "video_extend": FamilyPricing(model="kling-v1", seconds=EXTEND_SECONDS),
    "avatar": FamilyPricing(model="avatar", default_seconds=AVATAR_DEFAULT_SECONDS),
    "multi_shot": FamilyPricing(per_call="multi_shot"),
    "element": FamilyPricing(per_call="element"),
    # The 3.0 family (2026 design). Turbo always generates audio (its only row is "native").
    "t2v_3_0_turbo": FamilyPricing(model="kling-3.0-turbo", variant="native"),
    "i2v_3_0_turbo": FamilyPricing(model="kling-3.0-turbo", variant="native"),
    "t2v_3_0": FamilyPricing(model="kling-3.0"),
    "i2v_3_0": FamilyPricing(model="kling-3.0"),
    "omni_video_3_0": FamilyPricing(model="kling-3.0-omni"),
    # Motion control is billed per second of output, which follows the reference video's
    # length; the body does not carry it, so the estimate is for 5 s unless ``duration`` is
    # given (as for avatar).
    "motion_3_0": FamilyPricing(model="kling-3.0", variant="motion"),
    "motion_2_6": FamilyPricing(model="kling-2.6", variant="motion"),
}


class NoPrice(KeyError):
    """The price table has no figure for this family / model / variant / resolution."""


def _text(data: Mapping[str, Any], *names: str) -> str:
    for name in names:
        value = data.get(name)
        if isinstance(value, list):  # a QueryDict's getlist or a repeated key
            value = value[-1] if value else None
        if value not in (None, ""):
            return str(value).strip()
    return ""


def _settings_of(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The 2026 body's ``settings{}`` merged over the flat fields (flat legacy bodies and
    form values have none)."""
    inner = data.get("settings")
    if isinstance(inner, dict):
        return {**data, **inner}
    return data


def _variant(data: Mapping[str, Any], default: str) -> str:
    """``motion`` for motion control; ``native`` when audio is generated (``sound: on`` legacy,
    ``sound``/``audio`` true or ``native``), ``video`` with a reference video and no generated
    audio (a form's video field, or a ``video``/``feature_video``/``base_video`` item of a
    2026 body's ``contents[]``, KLING_API_2026.md §4), else ``default``."""
    if default == "motion":  # motion control has its own row, reference video included
        return default
    sound = _text(data, "sound", "audio", "video_sound").lower()
    voice = _text(data, "voice_control").lower() in ("1", "true", "on", "yes")
    if sound in ("on", "true", "1", "native", "yes"):
        return "native-voice" if voice else "native"
    if _text(data, "video_url", "reference_video", "feature_video", "base_video"):
        return "video"
    contents = data.get("contents")  # a 2026 body: the reference video is a contents[] item
    if isinstance(contents, list | tuple) and any(
        isinstance(item, dict) and item.get("type") in ("video", "feature_video", "base_video")
        for item in contents
    ):
        return "video"
    return default


def task_estimate(family: str, data: Mapping[str, Any]) -> Decimal:
    """Estimated units of Kling credit for a task of ``family`` with request body or form
    values ``data`` (a dict or a ``QueryDict``), from the vendor's published table.

    Per-second families: rate(model row, variant, resolution) × seconds, where the model is
    ``model_name``/``model`` (else the family's default), the resolution comes from ``mode``
    or ``resolution`` (default ``std`` = 720p), seconds from ``duration`` (else the family's
    default; fixed for a video extension). Per-call families: their per-call figure.
    Times ``settings.TASK_COST_MULTIPLIER`` (default 1). Raises ``NoPrice`` for a family
    without a pricing entry or a combination the table leaves empty, ``ValueError`` for a
    ``duration`` that is not a positive number.
    """
    try:
        pricing = FAMILY_PRICING[family]
    except KeyError:
        raise NoPrice(f"no price for family {family!r}") from None
    multiplier = Decimal(str(getattr(settings, "TASK_COST_MULTIPLIER", 1) or 1))
    if pricing.per_call:
        return PER_CALL_UNITS[pricing.per_call] * multiplier
    data = _settings_of(data)
    model = _text(data, "model_name", "model") or pricing.model
    row = MODEL_ROWS.get(model)
    resolution = RESOLUTIONS.get(_text(data, "resolution", "mode").lower() or "std")
    variant = _variant(data, pricing.variant)
    try:
        rate = VIDEO_RATES[(row, variant)][resolution]  # type: ignore[index]
    except KeyError:
        raise NoPrice(
            f"no published price for {model} ({variant}, {resolution or 'unknown resolution'})"
        ) from None
    if pricing.seconds is not None:
        seconds = pricing.seconds
    else:
        try:
            seconds = Decimal(_text(data, "duration") or pricing.default_seconds)
        except InvalidOperation:
            raise ValueError("duration must be a number of seconds") from None
        if not seconds.is_finite() or seconds <= 0:
            raise ValueError("duration must be a positive number of seconds")
    return rate * seconds * multiplier


def task_estimate_or_none(family: str, data: Mapping[str, Any]) -> Decimal | None:
    """``task_estimate``, or None when the table has no figure or the data is incomplete."""
    try:
        return task_estimate(family, data)
    except (NoPrice, ValueError):
        return None


# --- money ---------------------------------------------------------------------------------


def unit_price() -> Decimal:
    """Money per Kling unit (``settings.KLING_UNIT_PRICE``, in ``KLING_CURRENCY``)."""
    return Decimal(str(getattr(settings, "KLING_UNIT_PRICE", VENDOR_UNIT_PRICE_USD)))


def currency() -> str:
    """The portal's currency code (``settings.KLING_CURRENCY``, default ``"USD"``)."""
    return str(getattr(settings, "KLING_CURRENCY", "USD") or "USD")


def units_money(units: Decimal | None) -> Decimal | None:
    """``units`` × ``unit_price()`` (None for None): money in ``currency()``."""
    if units is None:
        return None
    return Decimal(units) * unit_price()


def money_units(money: Decimal | None) -> Decimal | None:
    """Money in ``currency()`` as Kling units (÷ ``unit_price()``; None for None or a zero
    price)."""
    price = unit_price()
    if money is None or not price:
        return None
    return Decimal(money) / price


def number_text(value: Decimal | int | float | None, *, places: int | None = None) -> str:
    """A number for people: thousands grouped with a comma, trailing zeros trimmed
    (``Decimal("12345.500")`` → ``"12,345.5"``, ``"0.333300"`` → ``"0.3333"``, ``-0`` →
    ``"0"``); rounded half-up to ``places`` first when given; ``"—"`` for None."""
    if value is None:
        return "—"
    value = Decimal(str(value)) if not isinstance(value, Decimal) else value
    if places is not None:
        value = value.quantize(Decimal(1).scaleb(-places))
    text = f"{value:,f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


CURRENCY_SIGNS = {"USD": "$", "EUR": "€", "GBP": "£", "CNY": "¥"}


def money_text(value: Decimal | None, code: str | None = None) -> str:
    """Money for people: ``$0.56``, ``¥3.5``, ``12.5 CHF``: at least 2 places and at most 4
    beyond them when they carry (``0.0035`` stays), thousands grouped; ``"—"`` for None.
    ``code``: ISO currency, default ``currency()``."""
    if value is None:
        return "—"
    code = code or currency()
    value = Decimal(value)
    places = 2 if value == value.quantize(Decimal("0.01")) else 6
    text = number_text(value, places=places)
    if places == 2 and "." not in text:
        text += ".00"
    elif places == 2 and len(text.split(".")[1]) == 1:
        text += "0"
    sign = CURRENCY_SIGNS.get(code)
    if sign:
        return f"-{sign}{text[1:]}" if text.startswith("-") else f"{sign}{text}"
    return f"{text} {code}"


def estimate_text(units: Decimal | None) -> str:
    """``"about 4 units ≈ $0.56"`` for an estimate (``"1 unit"`` in the singular); ``""``
    for None."""
    if units is None:
        return ""
    word = "unit" if Decimal(units) == 1 else "units"
    return f"about {number_text(units)} {word} ≈ {money_text(units_money(units))}"
