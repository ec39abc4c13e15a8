"""The sandbox's memory: tasks, generated videos, elements, resource packs, and its clock.

One ``SandboxState`` per server; every public method takes the state's lock, so the HTTP
handler threads, the ticker and tests can call it at the same time. Times inside are seconds
on the *sandbox clock* (the wall clock plus whatever ``advance`` added); the API shows them as
Unix milliseconds (KLING_API.md §4).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .config import SandboxConfig
from .costs import cash_figures, legacy_units, new_design_units
from .errors import ApiError, invalid, not_found
from .prices import CURRENCY, decimal_text

FAMILY_PATHS: dict[str, str] = {
    "multi_shot": "/v1/general/ai-multi-shot",
    "avatar": "/v1/videos/avatar/image2video",
    "video_extend": "/v1/videos/video-extend",
    "text2video": "/v1/videos/text2video",
    "image2video": "/v1/videos/image2video",
    "element": "/v1/general/advanced-custom-elements",
}
VIDEO_FAMILIES = frozenset({"avatar", "video_extend", "text2video", "image2video"})
# Videos video-extend accepts: made by these families with these models (video-extend page).
EXTENDABLE_FAMILIES = frozenset({"text2video", "image2video", "video_extend"})
EXTENDABLE_MODELS = frozenset({"kling-v1", "kling-v1-5", "kling-v1-6"})
MAX_EXTENDED_SECONDS = Decimal(180)  # "total video duration cannot exceed 3 minutes"
EXTEND_ADDS_SECONDS = Decimal("4.5")  # "each extension can add 4 to 5 seconds"
MEDIA_LIFETIME_SECONDS = 30 * 24 * 3600  # vendor deletes results after 30 days
RESOURCE_PACK_TOTAL = Decimal(10000)
#: Families whose "Query Task (Single)" page documents the ``task_id`` path parameter only
#: (kling-docs/ai-multi-shot.txt, elements.txt: "task_id Required"): their single query does
#: not look an ``external_task_id`` up, as the vendor documents none.
TASK_ID_ONLY_FAMILIES = frozenset({"multi_shot", "element"})
FAIL_MARK = "sandbox:fail"
FAIL_CHARGED_MARK = "sandbox:fail-charged"
TAG_NAMES = {
    "o_101": "Hottest",
    "o_102": "Character",
    "o_103": "Animal",
    "o_104": "Item",
    "o_105": "Costume",
    "o_106": "Scene",
    "o_107": "Effect",
    "o_108": "Others",
}

Json = dict[str, Any]
CallbackSink = Callable[[str, Json], None]  # (callback_url, body) -> None, must not block


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _contains_string(value: Any, needle: str) -> bool:
    if isinstance(value, str):
        return needle in value
    if isinstance(value, dict):
        return any(_contains_string(v, needle) for v in value.values())
    if isinstance(value, list):
        return any(_contains_string(v, needle) for v in value)
    return False


@dataclass
class Task:
    """One task of one account (internal; the API shape comes from ``SandboxState``)."""

    seq: int
    account: str
    family: str
    task_id: str
    external_task_id: str | None
    callback_url: str | None
    info: Json  # validated request facts: mode, duration, model_name, watermark, ...
    created: float  # sandbox seconds
    processing_at: float
    finish_at: float
    outcome: str  # "succeed" | "failed"
    charged: bool  # whether a failed outcome still costs units
    status: str = "submitted"
    status_msg: str = ""
    updated: float = 0.0
    units: Decimal = Decimal(0)
    result: Json = field(default_factory=dict)
    parent_video: Json | None = None
    design: str = "legacy"  # "legacy" (/v1, model_name) or "new" (model in the path)
    cash: tuple[str, str] | None = None  # (charged, list_price) in USD on a cash account

    @property
    def finished(self) -> bool:
        """True once ``succeed`` or ``failed``."""
        return self.status in ("succeed", "failed")


class SandboxState:
    """All the sandbox's data, behind one lock.

    ``config`` is read live (the fault knobs and ``task_seconds`` may change at runtime);
    ``base_url`` is set by the server once it has a port and is used to build media URLs.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.base_url = ""
        self.lock = threading.RLock()
        self.rng = random.Random(config.seed)  # noqa: S311 - simulation, not security
        self.offset = 0.0  # seconds added by advance()
        self.started = time.time()
        self._seq = 0
        self._tasks: dict[str, Task] = {}  # task_id -> task, in creation order
        # Indexes, so a long soak run stays fast:
        self._unfinished: dict[str, Task] = {}
        self._by_external: dict[tuple[str, str], Task] = {}  # (account, external id)
        self._by_family: dict[tuple[str, str], list[Task]] = {}  # (account, family), oldest first
        self._new_by_account: dict[str, list[Task]] = {}  # new-design tasks, oldest first
        self._used: dict[str, Decimal] = {}  # account -> units of finished tasks
        self._ids: set[str] = set()
        self._forgotten: set[str] = set()  # task_ids answered "not found" (``forget``)
        self._videos: dict[str, Json] = {}  # video_id -> facts of a generated video
        self._elements: dict[str, Json] = {}  # str(element_id) -> element (owner in "_account")
        self._owner_ids: dict[str, str] = {}  # access key -> numeric creator id
        self._pack_ids: dict[str, str] = {}
        self._presets = self._make_presets()
        self.on_callback: CallbackSink | None = None  # set by the server's dispatcher

    # ----- clock and randomness -------------------------------------------------------

    def now(self) -> float:
        """Sandbox clock, Unix seconds (wall clock + ``advance``d seconds)."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the sandbox clock ``seconds`` forward and apply the status changes now due
        (their callbacks are handed to ``on_callback``). Raises ``ValueError`` if negative."""
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        with self.lock:
            self.offset += seconds
            self.tick()

    def chance(self, probability: float | None) -> bool:
        """True with ``probability`` (0 or ``None``: never), from the seeded generator."""
        if not probability:
            return False
        with self.lock:
            return self.rng.random() < probability

    def choice(self, options: list[Any]) -> Any:
        """One of ``options`` from the seeded generator."""
        with self.lock:
            return self.rng.choice(options)

    def new_id(self) -> str:
        """A fresh, unique 18-digit id string (task, video and element ids look like this)."""
        with self.lock:
            while True:
                candidate = str(self.rng.randrange(10**17, 10**18))
                if candidate not in self._ids:
                    self._ids.add(candidate)
                    return candidate

    def media_url(self, owner: str, name: str) -> str:
        """Public URL of a generated medium: ``<base_url>/sandbox-media/<owner>/<name>``."""
        return f"{self.base_url}/sandbox-media/{owner}/{name}"

    # ----- fault knob: tasks the vendor no longer knows ---------------------------------

    def forget(self, task_id: str) -> None:
        """Fault knob: from now on answer for task ``task_id`` as for an unknown task —
        1203 "not found" on the legacy single query (KLING_API.md §4), absent from the list
        pages, absent from the 2026 design's ``GET /tasks`` and ``POST /tasks`` answers
        (KLING_API_2026.md §3) — as after a vendor-side loss or a sandbox restart. The task
        keeps running unseen and sends no callbacks until ``remember``. Raises ``KeyError``
        for a task_id the sandbox never made."""
        with self.lock:
            if task_id not in self._tasks:
                raise KeyError(task_id)
            self._forgotten.add(task_id)

    def remember(self, task_id: str) -> None:
        """Undo ``forget``: the task is answered again, in whatever status it reached (a
        "late answer"); callbacks resume with its next change."""
        with self.lock:
            self._forgotten.discard(task_id)

    def _known(self, task: Task | None) -> Task | None:
        """``task``, or None when it was ``forget``-ed."""
        return None if task is None or task.task_id in self._forgotten else task

    # ----- life cycle -----------------------------------------------------------------

    def tick(self) -> None:
        """Apply every status change due on the sandbox clock; each change of a task with a
        ``callback_url`` is handed to ``on_callback`` (in order).

        A task that jumps over ``processing`` (a big ``advance``) still passes through it,
        so a callback receiver sees every status in order.
        """
        jobs: list[tuple[str, Json]] = []
        with self.lock:
            now = self.now()
            for task in list(self._unfinished.values()):
                if task.status == "submitted" and now >= task.processing_at:
                    task.status = "processing"
                    task.updated = max(task.processing_at, task.created)
                    if task.callback_url and task.task_id not in self._forgotten:
                        jobs.append((task.callback_url, self.callback_body(task)))
                if task.status == "processing" and now >= task.finish_at:
                    self._finish(task)
                    del self._unfinished[task.task_id]
                    if task.cash is None:  # a cash account pays from its balance
                        self._used[task.account] = (
                            self._used.get(task.account, Decimal(0)) + task.units
                        )
                    if task.callback_url and task.task_id not in self._forgotten:
                        jobs.append((task.callback_url, self.callback_body(task)))
            sink = self.on_callback
            if sink is not None:
                for url, body in jobs:
                    sink(url, body)

    def _finish(self, task: Task) -> None:
        task.updated = task.finish_at
        info = task.info
        if task.outcome == "failed":
            task.status = "failed"
            # Uploaded Base64 (element pictures) is not needed any more.
            task.info = {
                k: v
                for k, v in info.items()
                if k not in ("element_image_list", "element_video_list")
            }
            if task.charged:
                self._charge(task, self._output_seconds(task))
                task.status_msg = (
                    "Generation failed after it was charged (forced by 'sandbox:fail-charged')"
                )
            else:
                task.status_msg = (
                    "Failure forced by 'sandbox:fail' in the request "
                    "(simulates the platform's content risk control)"
                )
            return
        task.status = "succeed"
        task.result = self._make_result(task)
        self._charge(task, self._output_seconds(task))

    def _output_seconds(self, task: Task) -> Decimal | None:
        if task.design == "new":
            return task.info["output_seconds"]
        if task.family == "avatar":
            return self._video_duration(task)
        return None

    def _charge(self, task: Task, seconds: Decimal | None) -> None:
        """Price a finished task from the published table (``costs``); on a cash account
        keep the money figures too (KLING_API_2026.md §7, §8)."""
        if task.design == "new":
            task.units = new_design_units(task.info, seconds or Decimal(0))
        else:
            task.units = legacy_units(task.family, task.info, seconds)
        if self.config.cash:
            task.cash = cash_figures(task.units, self.config.cash_discount)

    def _make_result(self, task: Task) -> Json:
        tid = task.task_id
        if task.design == "new":
            video_id = self.new_id()
            watermark = task.info.get("watermark")
            return {
                "outputs": [
                    {
                        "type": "video",
                        "id": video_id,
                        "url": self.media_url(tid, f"{video_id}.mp4"),
                        "watermark_url": (
                            self.media_url(tid, f"{video_id}-watermark.mp4") if watermark else ""
                        ),
                        "duration": decimal_text(task.info["output_seconds"]),
                    }
                ]
            }
        if task.family == "multi_shot":
            images = [
                {
                    "index": index,
                    "url_1": self.media_url(tid, f"shot-{index}-1.png"),
                    "url_2": self.media_url(tid, f"shot-{index}-2.png"),
                    "url_3": self.media_url(tid, f"shot-{index}-3.png"),
                }
                for index in range(3)
            ]
            return {"images": images}
        if task.family in VIDEO_FAMILIES:
            video_id = self.new_id()
            duration = self._video_duration(task)
            url = self.media_url(tid, f"{video_id}.mp4")
            watermark_url = (
                self.media_url(tid, f"{video_id}-watermark.mp4")
                if task.info.get("watermark")
                else None
            )
            self._videos[video_id] = {
                "id": video_id,
                "account": task.account,
                "task_id": tid,
                "family": task.family,
                "url": url,
                "duration": duration,
                "model_name": task.info.get("model_name"),
                "mode": task.info.get("mode") or "std",
                "created": task.finish_at,
            }
            video = {
                "id": video_id,
                "url": url,
                "watermark_url": watermark_url,
                "duration": str(duration),
            }
            return {"videos": [video]}
        if task.family == "element":
            element = self._make_element(task)
            return {"elements": [element]}
        return {}

    def _video_duration(self, task: Task) -> Decimal:
        if task.family in ("text2video", "image2video"):
            return Decimal(task.info.get("duration") or "5") + Decimal("0.1")
        if task.family == "video_extend":
            parent = self._videos[task.info["video_id"]]
            return parent["duration"] + EXTEND_ADDS_SECONDS
        seconds = task.info.get("audio_seconds")
        return Decimal(str(round(seconds, 1))) if seconds else Decimal("5.0")

    def _make_element(self, task: Task) -> Json:
        info = task.info
        element_id = int(self.new_id())
        image_list = info.get("element_image_list") or {}
        if image_list:
            # The vendor keeps its own copy of the pictures and answers with its URLs.
            image_list = {
                "frontal_image": self._keep_image(task, image_list["frontal_image"], "frontal"),
                "refer_images": [
                    {"image_url": self._keep_image(task, item["image_url"], f"refer-{i}")}
                    for i, item in enumerate(image_list.get("refer_images") or [])
                ],
            }
        video_list = info.get("element_video_list") or {}
        if video_list:
            video_list = {
                "refer_videos": [
                    {"video_url": self._keep_video(task, item["video_url"])}
                    for item in video_list["refer_videos"]
                ]
            }
        voice_id = info.get("element_voice_id")
        voice = (
            {
                "voice_id": voice_id,
                "voice_name": f"Voice {voice_id}",
                "trial_url": "",
                "owned_by": self._owner_id(task.account),
            }
            if voice_id
            else {}
        )
        element = {
            "element_id": element_id,
            "element_name": info["element_name"],
            "element_description": info["element_description"],
            "reference_type": info["reference_type"],
            "element_image_list": image_list,
            "element_video_list": video_list,
            "element_voice_info": voice,
            "tag_list": [
                {"tag_id": tag, "tag_name": TAG_NAMES[tag]} for tag in info.get("tag_ids", [])
            ],
            "owned_by": self._owner_id(task.account),
            "status": "succeed",
        }
        self._elements[str(element_id)] = {"account": task.account, "element": element}
        # Drop the uploaded Base64 now that the element holds URLs.
        task.info = {**info, "element_image_list": image_list, "element_video_list": video_list}
        return element

    def _keep_image(self, task: Task, value: str, name: str) -> str:
        if value.startswith(("http://", "https://")):
            return value
        return self.media_url(task.task_id, f"{name}.png")

    def _keep_video(self, task: Task, value: str) -> str:
        # The vendor fetched the clip (the portal's signed URL expires) and serves its copy.
        return self.media_url(task.task_id, "refer-video.mp4")

    def _owner_id(self, account: str) -> str:
        if account not in self._owner_ids:
            self._owner_ids[account] = str(100000 + len(self._owner_ids) + 1)
        return self._owner_ids[account]

    # ----- API operations ---------------------------------------------------------------

    def create(self, account: str, family: str, body: Json, info: Json) -> Json:
        """Create a legacy task from a validated ``body`` (``info``: facts from validation).

        Raises ``ApiError``: 1201 for a reused ``external_task_id`` or an unusable
        ``video_id``; 1303 (HTTP 429) when ``config.concurrency_limit`` unfinished tasks of the
        account already run. Returns the create answer's ``data`` (KLING_API.md §4).
        """
        with self.lock:
            parent = None
            if family == "video_extend":
                self.tick()
                parent = self._check_extendable(account, info["video_id"])
                info = {**info, "mode": parent["mode"], "model_name": parent["model_name"]}
            task = self._add_task(account, family, body, info, design="legacy")
            if parent is not None:
                task.parent_video = {
                    "id": parent["id"],
                    "url": parent["url"],
                    "duration": str(parent["duration"]),
                }
            return {
                "task_id": task.task_id,
                "task_status": task.status,
                "task_info": {"external_task_id": task.external_task_id or ""},
                "created_at": _ms(task.created),
                "updated_at": _ms(task.updated),
            }

    def create_new(self, account: str, path: str, body: Json, info: Json) -> Json:
        """Create a new-design task (model in ``path``) from a validated ``body``.

        Same rules as ``create`` (unique ``external_task_id`` per account across both
        designs, ``concurrency_limit``, the ``sandbox:fail`` marks). Returns the create
        answer's ``data``: ``{id, status, create_time, update_time (ms), external_id}``
        (KLING_API_2026.md §1).
        """
        with self.lock:
            task = self._add_task(account, path, body, info, design="new")
            return {
                "id": task.task_id,
                "status": task.status,
                "create_time": _ms(task.created),
                "update_time": _ms(task.updated),
                "external_id": task.external_task_id or "",
            }

    def _add_task(self, account: str, family: str, body: Json, info: Json, *, design: str) -> Task:
        self.tick()
        external = info.get("external_task_id")
        field_name = "options.external_task_id" if design == "new" else "external_task_id"
        if external is not None and (account, external) in self._by_external:
            raise invalid(
                field_name,
                f"'{external}' is already used by another task of this account "
                "(must be unique within the account)",
            )
        limit = self.config.concurrency_limit
        if limit is not None:
            running = sum(1 for t in self._unfinished.values() if t.account == account)
            if running >= limit:
                raise ApiError(
                    429,
                    1303,
                    f"Concurrency limit reached: {running} unfinished tasks "
                    f"(limit {limit}); try again later",
                )
        now = self.now()
        seconds = max(float(self.config.task_seconds), 0.0)
        if _contains_string(body, FAIL_CHARGED_MARK):
            outcome, charged = "failed", True
        elif _contains_string(body, FAIL_MARK):
            outcome, charged = "failed", False
        else:
            outcome, charged = "succeed", False
        self._seq += 1
        task = Task(
            seq=self._seq,
            account=account,
            family=family,
            task_id=self.new_id(),
            external_task_id=external,
            callback_url=info.get("callback_url"),
            info=info,
            created=now,
            processing_at=now + seconds / 3,
            finish_at=now + seconds,
            outcome=outcome,
            charged=charged,
            updated=now,
            design=design,
        )
        self._tasks[task.task_id] = task
        self._unfinished[task.task_id] = task
        self._by_family.setdefault((account, family), []).append(task)
        if design == "new":
            self._new_by_account.setdefault(account, []).append(task)
        if external is not None:
            self._by_external[(account, external)] = task
        return task

    def _check_extendable(self, account: str, video_id: str) -> Json:
        video = self._videos.get(video_id)
        if video is None or video["account"] != account:
            raise invalid("video_id", f"'{video_id}' is not a video generated by this account")
        if video["family"] not in EXTENDABLE_FAMILIES:
            raise invalid(
                "video_id",
                "only videos made by text-to-video, image-to-video or video extension "
                "can be extended",
            )
        if video["model_name"] not in EXTENDABLE_MODELS:
            raise invalid(
                "video_id",
                f"only videos of V1.0/V1.5/V1.6 models can be extended "
                f"(this one was made by {video['model_name']})",
            )
        if self.now() - video["created"] > MEDIA_LIFETIME_SECONDS:
            raise invalid("video_id", "the video is older than 30 days and has been cleared")
        if video["duration"] + EXTEND_ADDS_SECONDS > MAX_EXTENDED_SECONDS:
            raise invalid("video_id", "the extended video would be longer than 3 minutes")
        return video

    def get(self, account: str, family: str, ident: str) -> Json:
        """One task of ``account`` in ``family``: ``ident`` is looked up as a ``task_id``,
        then as an ``external_task_id`` of the account — except for the families whose
        vendor page names ``task_id`` alone as the path parameter (``TASK_ID_ONLY_FAMILIES``:
        AI multi-shot, elements). Raises ``ApiError`` 404/1203 when nothing matches
        (another account's or another family's task is not found)."""
        with self.lock:
            self.tick()
            task = self._tasks.get(ident)
            if task is None or task.account != account or task.family != family:
                task = None
                if family not in TASK_ID_ONLY_FAMILIES:
                    task = self._by_external.get((account, ident))
            task = self._known(task)
            if task is None or task.family != family:
                raise not_found(f"task not found: no task_id or external_task_id '{ident}'")
            return self.task_json(task)

    def list_tasks(self, account: str, family: str, page: int, size: int) -> list[Json]:
        """Page ``page`` (1-based) of ``size`` tasks of ``account`` in ``family``, newest
        first."""
        with self.lock:
            self.tick()
            tasks = self._by_family.get((account, family), [])
            # Newest first: walk the creation-ordered list from its end.
            stop = len(tasks) - (page - 1) * size
            start = max(stop - size, 0)
            return [
                self.task_json(t)
                for t in reversed(tasks[start : max(stop, 0)])
                if t.task_id not in self._forgotten
            ]

    def presets(self, page: int, size: int) -> list[Json]:
        """Page of the official (``owned_by: "kling"``) elements, in the list shape."""
        start = (page - 1) * size
        return [dict(p) for p in self._presets[start : start + size]]

    def delete_element(self, account: str, element_id: Any) -> Json:
        """Mark a custom element of ``account`` ``deleted``; returns the answer's ``data``.

        Raises ``ApiError`` 1201 for a missing id or a preset element, 404/1203 for an
        unknown one (or another account's). Deleting twice is harmless.
        """
        if element_id is None or element_id == "" or isinstance(element_id, bool | dict | list):
            raise invalid("element_id", "required (the id of a custom element)")
        key = str(element_id)
        with self.lock:
            if key in self._preset_ids:
                raise invalid("element_id", "only custom elements can be deleted, not presets")
            entry = self._elements.get(key)
            if entry is None or entry["account"] != account:
                raise not_found(f"element not found: '{key}'")
            entry["element"]["status"] = "deleted"
            return {"task_id": self.new_id(), "task_status": "succeed"}

    def resource_packs(self, account: str, name: str | None) -> list[Json]:
        """The account's resource pack(s) (KLING_API.md §5.5); remaining drops as tasks
        finish; filtered by exact ``resource_pack_name`` when given."""
        with self.lock:
            self.tick()
            used = self._used.get(account, Decimal(0))
            remaining = max(RESOURCE_PACK_TOTAL - used, Decimal(0))
            if account not in self._pack_ids:
                self._pack_ids[account] = uuid.UUID(int=self.rng.getrandbits(128)).hex
            bought = self.started - 24 * 3600
            pack = {
                "resource_pack_name": "Sandbox video pack",
                "resource_pack_id": self._pack_ids[account],
                "resource_pack_type": "decreasing_total",
                "total_quantity": float(RESOURCE_PACK_TOTAL),
                "remaining_quantity": float(remaining),
                "purchase_time": _ms(bought),
                "effective_time": _ms(bought),
                "invalid_time": _ms(bought + 365 * 24 * 3600),
                "status": "online" if remaining > 0 else "runOut",
            }
            packs = [pack]
            if name is not None:
                packs = [p for p in packs if p["resource_pack_name"] == name]
            return packs

    def media_available(self, owner: str) -> bool:
        """True if media under ``/sandbox-media/<owner>/`` exist: the presets, or a task that
        succeeded less than 30 days ago (sandbox clock), as the vendor deletes them then."""
        if owner == "presets":
            return True
        with self.lock:
            self.tick()
            task = self._tasks.get(owner)
            return (
                task is not None
                and task.status == "succeed"
                and self.now() - task.finish_at <= MEDIA_LIFETIME_SECONDS
            )

    # ----- shapes -------------------------------------------------------------------------

    def _deductions(self, task: Task, data: Json) -> None:
        """Legacy cost fields: ``final_unit_deduction`` (units, a string) and, on a cash
        account, ``final_unit_deduction "0"`` plus ``final_balance_deduction{quota,
        list_price}`` (USD strings; the legacy design names no currency). On a unit
        account ``final_balance_deduction`` is left out (the digest is silent on what a unit
        account gets; leaving it out cannot be mistaken for a money charge)."""
        if task.cash is None:
            data["final_unit_deduction"] = decimal_text(task.units)
            return
        charged, list_price = task.cash
        data["final_unit_deduction"] = "0"
        data["final_balance_deduction"] = {"quota": charged, "list_price": list_price}

    def task_json(self, task: Task) -> Json:
        """The legacy query shape of a task (pages "Query Task (Single)")."""
        task_info: Json = {"external_task_id": task.external_task_id or ""}
        if task.parent_video is not None:
            task_info = {"parent_video": dict(task.parent_video), **task_info}
        data: Json = {
            "task_id": task.task_id,
            "task_status": task.status,
            "task_status_msg": task.status_msg,
            "task_info": task_info,
            "task_result": _copy(task.result),
        }
        self._deductions(task, data)
        data["created_at"] = _ms(task.created)
        data["updated_at"] = _ms(task.updated)
        if task.family in VIDEO_FAMILIES:
            data["watermark_info"] = {"enabled": bool(task.info.get("watermark"))}
        return data

    def callback_body(self, task: Task) -> Json:
        """The callback body of a task: the new-design ``/tasks`` item for a new-design task
        (KLING_API_2026.md §6), else the legacy callback shape with exactly the documented
        subset (kling-docs/callback-protocol.txt, §6): ``task_result`` holds only
        ``images[{index, url}]`` or ``videos[{id, url, duration}]`` — no ``watermark_url``,
        no ``url_1``–``url_3`` (a multi-shot callback carries ``url`` = the query's
        ``url_1`` of each index), no ``elements`` (an element task's callback has an empty
        ``task_result``), and no ``watermark_info``."""
        if task.design == "new":
            return self.new_task_json(task)
        task_info: Json = {"external_task_id": task.external_task_id or ""}
        if task.parent_video is not None:
            task_info = {"parent_video": dict(task.parent_video), **task_info}
        result: Json = {}
        if task.result.get("images"):
            result["images"] = [
                {"index": image["index"], "url": image.get("url") or image.get("url_1")}
                for image in task.result["images"]
            ]
        if task.result.get("videos"):
            result["videos"] = [
                {"id": video["id"], "url": video["url"], "duration": video["duration"]}
                for video in task.result["videos"]
            ]
        body: Json = {
            "task_id": task.task_id,
            "task_status": task.status,
            "task_status_msg": task.status_msg,
            "created_at": _ms(task.created),
            "updated_at": _ms(task.updated),
        }
        self._deductions(task, body)
        body["task_info"] = task_info
        body["task_result"] = result
        return body

    def new_task_json(self, task: Task) -> Json:
        """The new design's task item (``GET /tasks`` ``data[]``, ``POST /tasks``
        ``data.result[]``, callbacks; a legacy task's, with ``config.unified_serves_legacy``,
        outputs from ``_legacy_outputs``): ``{id, status (submitted|processing|succeeded|
        failed), message, create_time, update_time (ms), external_id, outputs[],
        billing[]}``. ``billing`` is empty until the task is charged; then one entry:
        unit account ``{charge_type "unit", amount (units), package_type "video" ("image"
        for multi-shot)}``, cash
        account ``{charge_type "cash", cash_type "balance", amount (USD charged), currency
        "USD", list_price (USD)}`` (KLING_API_2026.md §7)."""
        billing: list[Json] = []
        if task.finished and (task.status == "succeed" or task.charged):
            if task.cash is None:
                billing.append(
                    {
                        "charge_type": "unit",
                        "amount": decimal_text(task.units),
                        "package_type": "image" if task.family == "multi_shot" else "video",
                    }
                )
            else:
                charged, list_price = task.cash
                billing.append(
                    {
                        "charge_type": "cash",
                        "cash_type": "balance",
                        "amount": charged,
                        "currency": CURRENCY,
                        "list_price": list_price,
                    }
                )
        return {
            "id": task.task_id,
            "status": "succeeded" if task.status == "succeed" else task.status,
            "message": task.status_msg,
            "create_time": _ms(task.created),
            "update_time": _ms(task.updated),
            "external_id": task.external_task_id or "",
            "outputs": (
                _copy(task.result.get("outputs", []))
                if task.design == "new"
                else self._legacy_outputs(task)
            ),
            "billing": billing,
        }

    def _legacy_outputs(self, task: Task) -> list[Json]:
        """A legacy task's ``task_result`` as the new design's ``outputs[]`` (only served with
        ``config.unified_serves_legacy``; the vendor documents no such mapping, so this is the
        plain one, KLING_API_2026.md §3 item shapes): each video → ``{type "video", id, url,
        watermark_url ("" without one), duration}``; each multi-shot image index → one
        ``{type "image", url, group_id (the index)}`` per ``url_1``–``url_3``; an element →
        ``{type "element", id, name, description, element_type, references[] (query roles
        ``frontal``/``reference``/``refer``), owned_by, status, tags[]}``."""
        result = task.result
        outputs: list[Json] = []
        for video in result.get("videos") or []:
            outputs.append(
                {
                    "type": "video",
                    "id": video["id"],
                    "url": video["url"],
                    "watermark_url": video.get("watermark_url") or "",
                    "duration": video["duration"],
                }
            )
        for image in result.get("images") or []:
            for key in ("url", "url_1", "url_2", "url_3"):
                if image.get(key):
                    outputs.append(
                        {"type": "image", "url": image[key], "group_id": str(image["index"])}
                    )
        for element in result.get("elements") or []:
            images = element.get("element_image_list") or {}
            references: list[Json] = []
            if images.get("frontal_image"):
                references.append(
                    {"type": "image", "role": "frontal", "url": images["frontal_image"]}
                )
            references += [
                {"type": "image", "role": "reference", "url": item["image_url"]}
                for item in images.get("refer_images") or []
            ]
            references += [
                {"type": "video", "role": "refer", "url": item["video_url"]}
                for item in (element.get("element_video_list") or {}).get("refer_videos") or []
            ]
            voice = element.get("element_voice_info") or {}
            if voice:
                references.append(
                    {
                        "type": "voice",
                        "role": "refer",
                        "url": voice.get("trial_url", ""),
                        "id": voice["voice_id"],
                        "name": voice.get("voice_name", ""),
                        "owned_by": voice.get("owned_by", ""),
                    }
                )
            outputs.append(
                {
                    "type": "element",
                    "id": str(element["element_id"]),
                    "name": element["element_name"],
                    "description": element["element_description"],
                    "element_type": element["reference_type"],
                    "references": references,
                    "owned_by": element["owned_by"],
                    "status": "succeeded" if element["status"] == "succeed" else "deleted",
                    "tags": [
                        {"id": tag["tag_id"], "name": tag["tag_name"], "description": ""}
                        for tag in element.get("tag_list") or []
                    ],
                }
            )
        return outputs

    # ----- the unified task queries (KLING_API_2026.md §3) ----------------------------------

    def tasks_by_ids(self, account: str, ids: list[str], *, external: bool) -> list[Json]:
        """``GET /tasks``: the account's new-design tasks with these ``task_ids`` (or
        ``external_task_ids``), in the order asked, each once. Unknown ids and other
        accounts' tasks are left out; so are legacy tasks (whether ``/tasks`` serves them is
        silent in the docs, so by default the sandbox does not), unless
        ``config.unified_serves_legacy``: then they are answered too, in the new design's
        shape (``new_task_json``)."""
        with self.lock:
            self.tick()
            out: list[Json] = []
            seen: set[str] = set()
            for ident in ids:
                if external:
                    task = self._by_external.get((account, ident))
                else:
                    task = self._tasks.get(ident)
                task = self._known(task)
                if task is None or task.account != account:
                    continue
                if task.design != "new" and not self.config.unified_serves_legacy:
                    continue
                if task.task_id in seen:
                    continue
                seen.add(task.task_id)
                out.append(self.new_task_json(task))
            return out

    def tasks_page(
        self,
        account: str,
        *,
        start_ms: int,
        end_ms: int,
        before_seq: int | None,
        limit: int,
        statuses: set[str] | None,
        product_types: set[str] | None,
    ) -> tuple[list[Json], int | None]:
        """``POST /tasks``: up to ``limit`` of the account's new-design tasks created in
        [``start_ms``, ``end_ms``], newest first, older than ``before_seq`` (a cursor),
        matching the filters (``statuses`` in the new design's words; every sandbox task is
        ``product_type`` video). Returns ``(items, seq of the last item if more follow)``."""
        with self.lock:
            self.tick()
            if product_types is not None and "video" not in product_types:
                return [], None
            matches: list[Task] = []
            for task in reversed(self._new_by_account.get(account, [])):
                if before_seq is not None and task.seq >= before_seq:
                    continue
                if task.task_id in self._forgotten:
                    continue
                created = _ms(task.created)
                if not start_ms <= created <= end_ms:
                    continue
                status = "succeeded" if task.status == "succeed" else task.status
                if statuses is not None and status not in statuses:
                    continue
                matches.append(task)
                if len(matches) > limit:
                    break
            more = len(matches) > limit
            page = matches[:limit]
            return [self.new_task_json(t) for t in page], (page[-1].seq if more else None)

    def element_for(self, account: str, element_id: str) -> tuple[str, str] | None:
        """``(element_name, reference_type)`` of a usable element: a preset, or one of the
        account's custom elements that is not deleted; ``None`` otherwise."""
        with self.lock:
            if element_id in self._preset_ids:
                for preset in self._presets:
                    element = preset["task_result"]["elements"][0]
                    if str(element["element_id"]) == element_id:
                        return element["element_name"], element["reference_type"]
            entry = self._elements.get(element_id)
            if entry is None or entry["account"] != account:
                return None
            element = entry["element"]
            if element["status"] != "succeed":
                return None
            return element["element_name"], element["reference_type"]

    def snapshot(self) -> list[Json]:
        """Every task (all accounts), oldest first: account, family (a legacy family key or
        the new design's path), task_id, external_task_id, task_status (legacy words),
        design ("legacy"|"new"), final_unit_deduction (units as a string, also on cash
        accounts), cash ((charged, list_price) USD strings or None), created_at/updated_at
        (ms), callback_url, forgotten (bool: ``forget``-ed, answered as unknown)."""
        with self.lock:
            self.tick()
            return [
                {
                    "account": t.account,
                    "family": t.family,
                    "task_id": t.task_id,
                    "external_task_id": t.external_task_id,
                    "task_status": t.status,
                    "design": t.design,
                    "final_unit_deduction": decimal_text(t.units),
                    "cash": t.cash,
                    "created_at": _ms(t.created),
                    "updated_at": _ms(t.updated),
                    "callback_url": t.callback_url,
                    "forgotten": t.task_id in self._forgotten,
                }
                for t in self._tasks.values()
            ]

    def _make_presets(self) -> list[Json]:
        presets = [
            ("Astronaut", "A friendly astronaut in a white suit", "o_102"),
            ("Corgi", "A corgi puppy with a red scarf", "o_103"),
            ("Red sneakers", "A pair of red canvas sneakers", "o_104"),
            ("Neon street", "A rainy street with neon signs at night", "o_106"),
        ]
        created = _ms(self.started - 7 * 24 * 3600)
        out: list[Json] = []
        self._preset_ids: set[str] = set()
        for index, (name, description, tag) in enumerate(presets, start=1):
            element_id = 9000000000 + index
            self._preset_ids.add(str(element_id))
            element = {
                "element_id": element_id,
                "element_name": name,
                "element_description": description,
                "reference_type": "image_refer",
                "element_image_list": {
                    "frontal_image": self.media_url("presets", f"{index}-frontal.png"),
                    "refer_images": [
                        {"image_url": self.media_url("presets", f"{index}-refer-1.png")}
                    ],
                },
                "element_video_list": {},
                "element_voice_info": {},
                "tag_list": [{"tag_id": tag, "tag_name": TAG_NAMES[tag]}],
                "owned_by": "kling",
                "status": "succeed",
            }
            out.append(
                {
                    "task_id": str(8000000000 + index),
                    "task_status": "succeed",
                    "task_status_msg": "",
                    "task_info": {"external_task_id": ""},
                    "task_result": {"elements": [element]},
                    "final_unit_deduction": "0",
                    "created_at": created,
                    "updated_at": created,
                }
            )
        return out

    def refresh_preset_urls(self) -> None:
        """Rebuild the presets once ``base_url`` is known (their image URLs embed it)."""
        with self.lock:
            self._presets = self._make_presets()


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
