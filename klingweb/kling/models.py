"""Typed views of the vendor's task and resource-pack objects, parsed at the boundary.

Every object keeps the vendor's dict in ``raw``, so fields the vendor adds later are never
lost. Parsing is lenient about shape (a missing or malformed optional field becomes None /
empty) because the same parser reads create answers, single queries, list items and
callback bodies, which carry different subsets of the fields (KLING_API.md §4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

_URL_N = re.compile(r"^url_(\d+)$")


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

    KLING_API.md §4, kling-docs/*.txt "Query Task (Single)" and callback-protocol.txt.
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

    @property
    def is_finished(self) -> bool:
        """True once the vendor status is ``succeed`` or ``failed``."""
        return self.task_status in ("succeed", "failed")


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


def parse_task(data: dict) -> KlingTask:
    """Parse a vendor task dict into a ``KlingTask``.

    Accepts every shape the vendor sends for a task: the create answer (no result yet), a
    single query, a list item, and a callback body (same fields; KLING_API.md §4). Unknown
    fields are kept in ``raw``. Raises ``TypeError`` if ``data`` is not a dict.
    """
    if not isinstance(data, dict):
        raise TypeError(f"A Kling task must be a JSON object, not {type(data).__name__}.")
    task_info = _dict(data.get("task_info"))
    task_result = _dict(data.get("task_result"))
    external = task_info.get("external_task_id") or data.get("external_task_id")
    parent = task_info.get("parent_video")
    return KlingTask(
        task_id=_str(data.get("task_id")),
        task_status=_str(data.get("task_status")),
        task_status_msg=_str(data.get("task_status_msg")),
        external_task_id=str(external) if external else None,
        created_at=ms_to_datetime(data.get("created_at")),
        updated_at=ms_to_datetime(data.get("updated_at")),
        final_unit_deduction=to_decimal(data.get("final_unit_deduction")),
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
