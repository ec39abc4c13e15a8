"""Typed views of the vendor's task and resource-pack objects, parsed at the boundary.

Every object keeps the vendor's dict in ``raw``, so fields the vendor adds later are never
lost. Parsing is lenient about shape (a missing or malformed optional field becomes None /
empty) because the same parser reads create answers, single queries, list items and
callback bodies, which carry different subsets of the fields (KLING_API.md §4).

Two task designs are read into the one ``KlingTask`` (KLING_API_2026.md §1, §3): the legacy
``/v1`` shape (``task_id``, ``task_status``, ``task_result``, ``final_unit_deduction``) and
the 2026 shape (``id``, ``status``, ``outputs[]``, ``billing[]``). Money is strict: a
charge that is not a finite, non-negative decimal raises ``KlingParseError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

_URL_N = re.compile(r"^url_(\d+)$")

#: ``KlingTask.design`` values.
DESIGN_LEGACY = "legacy"
DESIGN_2026 = "2026"
#: The 2026 design's status word for success, and the legacy one every caller sees.
_NEW_STATUS_TO_LEGACY = {"succeeded": "succeed"}


class KlingParseError(ValueError):
    """A vendor object the client refuses to read: a money or unit figure that is not a
    finite, non-negative decimal (``NaN``, ``Infinity``, ``-1``, ``"abc"`` where money is
    due). ``str(error)`` names the field and the value sent."""


def ms_to_datetime(value: Any) -> datetime | None:
    """Vendor Unix time in **milliseconds** (int, float or numeric string) → aware UTC datetime.

    None, "" or anything not a number gives None.
    """
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        millis = float(value)
        return datetime.fromtimestamp(millis / 1000.0, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def datetime_to_ms(value: datetime) -> int:
    """Aware datetime → Unix time in milliseconds (int). Raises ``ValueError`` if naive."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("Kling times must be timezone-aware datetimes.")
    return int(value.timestamp() * 1000)


def to_decimal(value: Any) -> Decimal | None:
    """A vendor number sent as string or number (``"12.5"``, ``5``) → ``Decimal``; else None."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        result = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return result if result.is_finite() else None


def strict_decimal(value: Any, field_name: str) -> Decimal:
    """A vendor charge (``"0.3333"``, ``5``) → ``Decimal`` exactly as sent, never rounded.

    Strings keep every digit and the exponent they were sent with (``"1.50"`` stays
    ``Decimal("1.50")``); JSON numbers are read through their shortest ``str``. Raises
    ``KlingParseError`` naming ``field_name`` for None, "", a bool, a non-number, ``NaN``,
    an infinity or a negative value. KLING_API_2026.md §7 (``amount`` is a decimal string).
    """
    if value is None or value == "" or isinstance(value, bool | dict | list):
        raise KlingParseError(f"{field_name} must be a decimal number, not {value!r}.")
    try:
        result = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise KlingParseError(f"{field_name} must be a decimal number, not {value!r}.") from None
    if not result.is_finite():
        raise KlingParseError(f"{field_name} must be finite, not {value!r}.")
    if result < 0:
        raise KlingParseError(f"{field_name} must not be negative, not {value!r}.")
    return result


def _optional_strict_decimal(value: Any, field_name: str) -> Decimal | None:
    """``strict_decimal`` where the field may be absent (None or "" → None)."""
    if value is None or value == "":
        return None
    return strict_decimal(value, field_name)


def _units_deduction(value: Any) -> Decimal | None:
    """``final_unit_deduction`` (units, a string): absent or not a number → None (unknown);
    a number that is ``NaN``, infinite or negative → ``KlingParseError`` (never charged)."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        result = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    if not result.is_finite() or result < 0:
        raise KlingParseError(f"final_unit_deduction must be a finite number ≥ 0, not {value!r}.")
    return result


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return "" if value is None else str(value)


@dataclass(frozen=True)
class ResultImage:
    """One generated image entry of ``task_result.images``.

    ``index``: the vendor's image index (0..2 for AI multi-shot). ``urls``: the image URLs
    in order — ``[url]`` for the callback/general shape ``{index, url}``, ``[url_1, url_2,
    url_3]`` for the AI multi-shot shape (kling-docs/ai-multi-shot.txt, Query Task).
    Vendor URLs expire 30 days after generation. ``raw``: the vendor dict.
    """

    index: int
    urls: list[str]
    raw: dict = field(repr=False)


@dataclass(frozen=True)
class ResultVideo:
    """One video: an entry of ``task_result.videos`` or ``task_info.parent_video``.

    ``id``: the vendor video id (input of video extension); ``url``: download URL (expires
    after 30 days); ``watermark_url``: watermarked copy or None; ``duration``: length in
    **seconds** (vendor sends a string) or None. kling-docs/avatar-image2video.txt,
    video-extend.txt.
    """

    id: str
    url: str
    watermark_url: str | None
    duration: Decimal | None
    raw: dict = field(repr=False)


@dataclass(frozen=True)
class ResultElement:
    """One element of ``task_result.elements`` (kling-docs/elements.txt, Query Custom Element).

    ``element_id`` is kept as a string (the vendor's example shows a number);
    ``owned_by`` is ``"kling"`` for official (preset) elements, else the creator id;
    ``status`` is ``"succeed"``, or ``"deleted"`` once removed. ``element_voice_info`` is
    ``{voice_id, voice_name, trial_url, owned_by}`` or None when empty/absent.
    """

    element_id: str
    element_name: str
    element_description: str
    reference_type: str
    element_image_list: dict
    element_video_list: dict
    element_voice_info: dict | None
    tag_list: list[dict]
    owned_by: str
    status: str
    raw: dict = field(repr=False)


@dataclass(frozen=True)
class BillingEntry:
    """One charge of a task: an entry of the 2026 design's ``billing[]`` (KLING_API_2026.md
    §3, §7), or one synthesised from a legacy task's ``final_unit_deduction`` /
    ``final_balance_deduction`` so that callers read money one way whatever the design.

    - ``charge_type``: ``"unit"`` (a resource pack was charged) or ``"cash"`` (the balance).
    - ``amount``: ``Decimal`` exactly as sent: Kling **units** for ``unit``; for ``cash`` the
      discounted price taken from the balance, in ``currency``.
    - ``currency``: ``"CNY"`` | ``"USD"`` for cash (None on legacy cash, which names none).
    - ``list_price``: cash only, the undiscounted price (``Decimal``) or None.
    - ``cash_type``: cash only, ``"balance"`` | ``"test_balance"`` or None.
    - ``package_type``: unit only, ``"video"`` | ``"image"`` | ``"audio"`` or None.
    - ``raw``: the vendor dict (for a synthesised entry, the legacy fields it came from).
    """

    charge_type: str
    amount: Decimal
    currency: str | None
    list_price: Decimal | None
    cash_type: str | None
    package_type: str | None
    raw: dict = field(repr=False)


@dataclass(frozen=True)
class BalanceDeduction:
    """Money a task took from a cash balance: legacy ``final_balance_deduction{quota,
    list_price}`` (KLING_API_2026.md §5–§7; no currency in that shape), or the 2026 design's
    ``billing[charge_type=cash]`` folded into the same two figures.

    ``quota``: the amount charged (discounted price), ``Decimal`` as sent; ``list_price``:
    the undiscounted price or None; ``currency``: ``"CNY"``/``"USD"`` when the vendor named
    one (2026 design only), else None. ``raw``: the vendor dict.
    """

    quota: Decimal
    list_price: Decimal | None
    currency: str | None
    raw: dict = field(repr=False)


@dataclass(frozen=True)
class KlingTask:
    """A vendor task object (create answer, single query, list item or callback body).

    - ``task_id``: vendor id; ``task_status``: ``submitted`` | ``processing`` | ``succeed`` |
      ``failed`` (the vendor's spelling); ``task_status_msg``: failure reason or "".
    - ``external_task_id``: our own id from ``task_info.external_task_id``, or None.
    - ``created_at``/``updated_at``: aware UTC datetimes (vendor sends Unix ms), or None.
    - ``final_unit_deduction``: units the task cost (vendor sends a string), or None while
      unfinished. Failed tasks can cost units too.
    - ``task_info``/``task_result``: the raw sub-dicts (``{}`` when absent).
    - ``images``/``videos``/``elements``: parsed ``task_result`` entries; ``parent_video``:
      ``task_info.parent_video`` of a video extension, or None.
    - ``raw``: the whole vendor dict, unknown fields included.
    - ``design``: ``"legacy"`` (``/v1`` shape) or ``"2026"`` (``id``/``status``/``outputs``
      shape); callers need not look at it: a 2026 answer is read into the legacy fields
      (``id``→``task_id``, ``status`` ``succeeded``→``task_status`` ``succeed``,
      ``message``→``task_status_msg``, ``external_id``→``external_task_id``,
      ``create_time``/``update_time``→``created_at``/``updated_at``, ``outputs[]``→
      ``task_result`` ``{videos, images, elements, audios, voices}`` in the legacy entry
      shapes (``audios`` as sent: no legacy query shape is documented), the sum of ``billing[charge_type=unit].amount``→``final_unit_deduction``).
    - ``outputs``: the 2026 ``outputs[]`` as sent (``[]`` for legacy answers).
    - ``billing``: every charge as ``BillingEntry`` (2026 ``billing[]`` as sent; for legacy,
      a ``unit`` entry from ``final_unit_deduction`` and a ``cash`` entry from
      ``final_balance_deduction``); ``[]`` while nothing is charged.
    - ``final_balance_deduction``: ``BalanceDeduction`` when a cash balance was charged
      (legacy field, or the 2026 cash entries summed), else None.

    Money and units are exact ``Decimal`` values; ``parse_task`` raises ``KlingParseError``
    for a charge that is NaN, infinite or negative. KLING_API.md §4, kling-docs/*.txt
    "Query Task (Single)" and callback-protocol.txt; KLING_API_2026.md §3, §6, §7.
    """

    task_id: str
    task_status: str
    task_status_msg: str
    external_task_id: str | None
    created_at: datetime | None
    updated_at: datetime | None
    final_unit_deduction: Decimal | None
    task_info: dict
    task_result: dict
    images: list[ResultImage]
    videos: list[ResultVideo]
    elements: list[ResultElement]
    parent_video: ResultVideo | None
    raw: dict = field(repr=False)
    design: str = DESIGN_LEGACY
    outputs: list[dict] = field(default_factory=list, repr=False)
    billing: list[BillingEntry] = field(default_factory=list)
    final_balance_deduction: BalanceDeduction | None = None

    @property
    def is_finished(self) -> bool:
        """True once the vendor status is ``succeed`` or ``failed``."""
        return self.task_status in ("succeed", "failed")

    @property
    def cash_charges(self) -> list[BillingEntry]:
        """The ``billing`` entries with ``charge_type`` ``"cash"`` (money, see ``currency``)."""
        return [entry for entry in self.billing if entry.charge_type == "cash"]


@dataclass(frozen=True)
class ResourcePack:
    """One prepaid resource pack of ``GET /account/costs`` (KLING_API.md §5.5).

    ``resource_pack_type``: ``decreasing_total`` | ``constant_period``; quantities in Kling
    units as ``Decimal``; ``purchase_time``/``effective_time``/``invalid_time``: aware UTC
    datetimes (vendor sends ms) or None; ``status``: ``toBeOnline`` | ``online`` |
    ``expired`` | ``runOut``. The remaining quantity lags by up to 12 hours.
    """

    resource_pack_name: str
    resource_pack_id: str
    resource_pack_type: str
    total_quantity: Decimal
    remaining_quantity: Decimal
    purchase_time: datetime | None
    effective_time: datetime | None
    invalid_time: datetime | None
    status: str
    raw: dict = field(repr=False)


def parse_image(data: dict, position: int = 0) -> ResultImage:
    """Parse one image entry, either shape: ``{index, url}`` or ``{index, url_1..url_3}``.

    ``position`` is used as the index when the vendor sends none. ``url`` comes first, then
    ``url_N`` in numeric order; empty values are skipped.
    """
    data = _dict(data)
    urls: list[str] = []
    if data.get("url"):
        urls.append(str(data["url"]))
    numbered = sorted(
        (int(match.group(1)), key) for key in data if (match := _URL_N.match(str(key)))
    )
    urls.extend(str(data[key]) for _, key in numbered if data[key])
    try:
        index = int(data.get("index", position))
    except (TypeError, ValueError):
        index = position
    return ResultImage(index=index, urls=urls, raw=data)


def parse_video(data: dict) -> ResultVideo:
    """Parse ``{id, url, watermark_url?, duration?}`` (duration: seconds as a string)."""
    data = _dict(data)
    return ResultVideo(
        id=_str(data.get("id")),
        url=_str(data.get("url")),
        watermark_url=str(data["watermark_url"]) if data.get("watermark_url") else None,
        duration=to_decimal(data.get("duration")),
        raw=data,
    )


def parse_element(data: dict) -> ResultElement:
    """Parse one ``task_result.elements`` entry (kling-docs/elements.txt)."""
    data = _dict(data)
    voice = data.get("element_voice_info")
    return ResultElement(
        element_id=_str(data.get("element_id")),
        element_name=_str(data.get("element_name")),
        element_description=_str(data.get("element_description")),
        reference_type=_str(data.get("reference_type")),
        element_image_list=_dict(data.get("element_image_list")),
        element_video_list=_dict(data.get("element_video_list")),
        element_voice_info=voice if isinstance(voice, dict) and voice else None,
        tag_list=[tag for tag in _list(data.get("tag_list")) if isinstance(tag, dict)],
        owned_by=_str(data.get("owned_by")),
        status=_str(data.get("status")),
        raw=data,
    )


def parse_billing_entry(data: dict, position: int = 0) -> BillingEntry:
    """Parse one 2026 ``billing[]`` entry (KLING_API_2026.md §3, §7).

    ``charge_type`` must be ``"unit"`` or ``"cash"`` and ``amount`` a finite, non-negative
    decimal (``list_price`` too when present); otherwise ``KlingParseError`` naming
    ``billing[position]``. Amounts are kept exactly as sent.
    """
    where = f"billing[{position}]"
    if not isinstance(data, dict):
        raise KlingParseError(f"{where} must be an object, not {type(data).__name__}.")
    charge_type = _str(data.get("charge_type"))
    if charge_type not in ("unit", "cash"):
        raise KlingParseError(f"{where}.charge_type must be unit or cash, not {charge_type!r}.")
    return BillingEntry(
        charge_type=charge_type,
        amount=strict_decimal(data.get("amount"), f"{where}.amount"),
        currency=_str(data.get("currency")) or None,
        list_price=_optional_strict_decimal(data.get("list_price"), f"{where}.list_price"),
        cash_type=_str(data.get("cash_type")) or None,
        package_type=_str(data.get("package_type")) or None,
        raw=data,
    )


def parse_balance_deduction(data: Any) -> BalanceDeduction | None:
    """Parse legacy ``final_balance_deduction{quota, list_price}`` (KLING_API_2026.md §6, §7).

    None, ``{}`` or a dict without ``quota`` → None (nothing taken from a balance). A
    ``quota`` or ``list_price`` that is not a finite, non-negative decimal, or a value that
    is not an object → ``KlingParseError``. Figures are kept exactly as sent.
    """
    if data is None or data == {} or data == "":
        return None
    if not isinstance(data, dict):
        raise KlingParseError(
            f"final_balance_deduction must be an object, not {type(data).__name__}."
        )
    if data.get("quota") in (None, ""):
        return None
    return BalanceDeduction(
        quota=strict_decimal(data.get("quota"), "final_balance_deduction.quota"),
        list_price=_optional_strict_decimal(
            data.get("list_price"), "final_balance_deduction.list_price"
        ),
        currency=None,
        raw=data,
    )


def _sum(values: list[Decimal]) -> Decimal:
    """Exact sum that leaves a single value untouched (``Decimal("1.50")`` stays so)."""
    total = values[0]
    for value in values[1:]:
        total += value
    return total


def is_new_design(data: dict) -> bool:
    """True when ``data`` is a 2026-design task (``id``/``status``), False for the legacy
    ``task_id``/``task_status`` shape (KLING_API_2026.md §1 table "create reply")."""
    if "task_id" in data or "task_status" in data:
        return False
    return "id" in data or "status" in data


def parse_task(data: dict) -> KlingTask:
    """Parse a vendor task dict, either design, into a ``KlingTask``.

    Accepts every shape the vendor sends for a task: the create answer (no result yet), a
    single query, a list item, and a callback body (same fields; KLING_API.md §4); and the
    2026 design's create answer, ``/tasks`` item and callback body (KLING_API_2026.md §3,
    §6), read into the same fields (see ``KlingTask``). Unknown fields are kept in ``raw``.
    Raises ``TypeError`` if ``data`` is not a dict, ``KlingParseError`` for a charge that is
    not a finite, non-negative decimal.
    """
    if not isinstance(data, dict):
        raise TypeError(f"A Kling task must be a JSON object, not {type(data).__name__}.")
    if is_new_design(data):
        return _parse_new_design_task(data)
    task_info = _dict(data.get("task_info"))
    task_result = _dict(data.get("task_result"))
    external = task_info.get("external_task_id") or data.get("external_task_id")
    parent = task_info.get("parent_video")
    units = _units_deduction(data.get("final_unit_deduction"))
    balance = parse_balance_deduction(data.get("final_balance_deduction"))
    billing: list[BillingEntry] = []
    if units is not None:
        billing.append(
            BillingEntry(
                charge_type="unit",
                amount=units,
                currency=None,
                list_price=None,
                cash_type=None,
                package_type=None,
                raw={"final_unit_deduction": data.get("final_unit_deduction")},
            )
        )
    if balance is not None:
        billing.append(
            BillingEntry(
                charge_type="cash",
                amount=balance.quota,
                currency=None,
                list_price=balance.list_price,
                cash_type=None,
                package_type=None,
                raw={"final_balance_deduction": balance.raw},
            )
        )
    return KlingTask(
        task_id=_str(data.get("task_id")),
        task_status=_str(data.get("task_status")),
        task_status_msg=_str(data.get("task_status_msg")),
        external_task_id=str(external) if external else None,
        created_at=ms_to_datetime(data.get("created_at")),
        updated_at=ms_to_datetime(data.get("updated_at")),
        final_unit_deduction=units,
        task_info=task_info,
        task_result=task_result,
        images=[
            parse_image(item, position)
            for position, item in enumerate(_list(task_result.get("images")))
            if isinstance(item, dict)
        ],
        videos=[
            parse_video(item) for item in _list(task_result.get("videos")) if isinstance(item, dict)
        ],
        elements=[
            parse_element(item)
            for item in _list(task_result.get("elements"))
            if isinstance(item, dict)
        ],
        parent_video=parse_video(parent) if isinstance(parent, dict) and parent else None,
        raw=data,
        design=DESIGN_LEGACY,
        outputs=[],
        billing=billing,
        final_balance_deduction=balance,
    )


def _legacy_element(output: dict) -> dict:
    """A 2026 ``outputs[type=element]`` entry in the legacy ``task_result.elements[]`` shape.

    ``id``→``element_id``, ``name``→``element_name``, ``description``→
    ``element_description``, ``element_type``→``reference_type``, ``references[]`` (query
    shape, roles ``frontal``/``reference``) or ``materials[]`` (callback shape, roles
    ``frontal``/``refer``; KLING_API_2026.md §6) → ``element_image_list{frontal_image,
    refer_images[{image_url}]}`` and ``element_video_list{refer_videos[{video_url}]}``,
    the voice material → ``element_voice_info``, ``tags[]``→``tag_list``, ``status``
    ``succeeded``→``succeed``. The 2026 dict stays under ``"outputs_entry"``.
    """
    materials = [
        m for m in _list(output.get("references") or output.get("materials")) if isinstance(m, dict)
    ]
    frontal = next(
        (
            m.get("url")
            for m in materials
            if m.get("type") == "image" and m.get("role") == "frontal"
        ),
        None,
    )
    refer_images = [
        {"image_url": m.get("url")}
        for m in materials
        if m.get("type") == "image" and m.get("role") != "frontal" and m.get("url")
    ]
    refer_videos = [
        {"video_url": m.get("url")} for m in materials if m.get("type") == "video" and m.get("url")
    ]
    voice = next((m for m in materials if m.get("type") == "voice"), None)
    image_list: dict = {}
    if frontal or refer_images:
        image_list = {"frontal_image": frontal or "", "refer_images": refer_images}
    status = _str(output.get("status"))
    return {
        "element_id": _str(output.get("id")),
        "element_name": _str(output.get("name")),
        "element_description": _str(output.get("description")),
        "reference_type": _str(output.get("element_type")),
        "element_image_list": image_list,
        "element_video_list": {"refer_videos": refer_videos} if refer_videos else {},
        "element_voice_info": _voice_fields(voice) if voice else None,
        "tag_list": [
            {"tag_id": _str(tag.get("id")), "tag_name": _str(tag.get("name"))}
            for tag in _list(output.get("tags"))
            if isinstance(tag, dict)
        ],
        "owned_by": _str(output.get("owned_by")),
        "status": _NEW_STATUS_TO_LEGACY.get(status, status),
        "outputs_entry": output,
    }


def _legacy_voice(output: dict) -> dict:
    """A 2026 ``outputs[type=voice]`` entry (``{id, name, url, owned_by, status}``,
    KLING_API_2026.md §3, §6) in the legacy ``task_result.voices[]`` shape of the custom-voice
    queries (``{voice_id, voice_name, trial_url, owned_by}``, S15): ``id``→``voice_id``,
    ``name``→``voice_name``, ``url``→``trial_url``, ``owned_by`` as is, and ``status``
    (``succeeded``→``succeed``, ``deleted``). The 2026 dict stays under ``"outputs_entry"``.
    """
    status = _str(output.get("status"))
    return {
        **_voice_fields(output),
        "status": _NEW_STATUS_TO_LEGACY.get(status, status),
        "outputs_entry": output,
    }


def _voice_fields(voice: dict) -> dict:
    """A 2026 voice (``{id, name, url, owned_by}``: an ``outputs[type=voice]`` entry or an
    element's ``materials[type=voice]``) as the legacy voice fields (``voice_id``,
    ``voice_name``, ``trial_url``, ``owned_by``; S15), each a string ("" when absent)."""
    return {
        "voice_id": _str(voice.get("id")),
        "voice_name": _str(voice.get("name")),
        "trial_url": _str(voice.get("url")),
        "owned_by": _str(voice.get("owned_by")),
    }


def _legacy_result(outputs: list[dict]) -> dict:
    """2026 ``outputs[]`` → a legacy-shaped ``task_result`` (KLING_API_2026.md §3, §6).

    ``video`` → ``videos[{id, url, watermark_url, duration}]``; ``image`` →
    ``images[{index (position among images), url, watermark_url, group_id}]``; ``element``
    → ``elements[]`` (see ``_legacy_element``); ``voice`` → ``voices[]`` (see
    ``_legacy_voice``); ``audio`` → ``audios[]`` as sent. Keys are present only when that
    type occurs.
    """
    result: dict[str, list] = {}
    for output in outputs:
        kind = output.get("type")
        if kind == "video":
            entry = {
                key: output[key]
                for key in ("id", "url", "watermark_url", "duration")
                if key in output
            }
            result.setdefault("videos", []).append(entry)
        elif kind == "image":
            images = result.setdefault("images", [])
            entry = {"index": len(images)}
            entry.update(
                {key: output[key] for key in ("url", "watermark_url", "group_id") if key in output}
            )
            images.append(entry)
        elif kind == "element":
            result.setdefault("elements", []).append(_legacy_element(output))
        elif kind == "audio":
            result.setdefault("audios", []).append(output)
        elif kind == "voice":
            result.setdefault("voices", []).append(_legacy_voice(output))
    return result


def _parse_new_design_task(data: dict) -> KlingTask:
    """The 2026 shape ``{id, status, message, create_time, update_time, external_id,
    outputs[], billing[]}`` (KLING_API_2026.md §3) → ``KlingTask`` (see its docstring)."""
    outputs = [item for item in _list(data.get("outputs")) if isinstance(item, dict)]
    raw_billing = data.get("billing")
    if raw_billing is not None and not isinstance(raw_billing, list):
        raise KlingParseError(f"billing must be a list, not {type(raw_billing).__name__}.")
    billing = [parse_billing_entry(item, n) for n, item in enumerate(raw_billing or [])]
    units = [entry.amount for entry in billing if entry.charge_type == "unit"]
    cash = [entry for entry in billing if entry.charge_type == "cash"]
    balance = None
    if cash:
        prices = [entry.list_price for entry in cash]
        currencies = {entry.currency for entry in cash}
        balance = BalanceDeduction(
            quota=_sum([entry.amount for entry in cash]),
            list_price=_sum(prices) if all(p is not None for p in prices) else None,
            currency=currencies.pop() if len(currencies) == 1 else None,
            raw={"billing": [entry.raw for entry in cash]},
        )
    task_result = _legacy_result(outputs)
    status = _str(data.get("status"))
    external = data.get("external_id")
    return KlingTask(
        task_id=_str(data.get("id")),
        task_status=_NEW_STATUS_TO_LEGACY.get(status, status),
        task_status_msg=_str(data.get("message")),
        external_task_id=str(external) if external else None,
        created_at=ms_to_datetime(data.get("create_time")),
        updated_at=ms_to_datetime(data.get("update_time")),
        final_unit_deduction=_sum(units) if units else None,
        task_info={"external_task_id": str(external)} if external else {},
        task_result=task_result,
        images=[parse_image(item, n) for n, item in enumerate(task_result.get("images", []))],
        videos=[parse_video(item) for item in task_result.get("videos", [])],
        elements=[parse_element(item) for item in task_result.get("elements", [])],
        parent_video=None,
        raw=data,
        design=DESIGN_2026,
        outputs=outputs,
        billing=billing,
        final_balance_deduction=balance,
    )


def parse_resource_pack(data: dict) -> ResourcePack:
    """Parse one ``resource_pack_subscribe_infos`` entry of ``GET /account/costs``.

    Missing quantities become ``Decimal(0)``. Raises ``TypeError`` if ``data`` is not a dict.
    """
    if not isinstance(data, dict):
        raise TypeError(f"A resource pack must be a JSON object, not {type(data).__name__}.")
    return ResourcePack(
        resource_pack_name=_str(data.get("resource_pack_name")),
        resource_pack_id=_str(data.get("resource_pack_id")),
        resource_pack_type=_str(data.get("resource_pack_type")),
        total_quantity=to_decimal(data.get("total_quantity")) or Decimal(0),
        remaining_quantity=to_decimal(data.get("remaining_quantity")) or Decimal(0),
        purchase_time=ms_to_datetime(data.get("purchase_time")),
        effective_time=ms_to_datetime(data.get("effective_time")),
        invalid_time=ms_to_datetime(data.get("invalid_time")),
        status=_str(data.get("status")),
        raw=data,
    )
