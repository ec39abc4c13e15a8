"""``KlingClient``: one method per Kling API endpoint the portal uses (KLING_API.md §5).

Transport is ``httpx`` with explicit connect and read timeouts. Every answer is unwrapped
from the vendor envelope ``{code, message, request_id, data}`` (KLING_API.md §2) and parsed
into the dataclasses of ``klingweb.kling.models``; every failure is a ``KlingError``.

Retry policy:
- Queries (GET) retry retryable errors (rate limit, concurrency, server, network) up to
  ``max_retries`` times with exponential backoff and full jitter:
  ``sleep = uniform(0, min(backoff_max, backoff_base * 2**attempt))`` seconds.
- Any call answered 1004 (token expired) or 1003 (token not yet valid) is re-signed with a
  fresh token and sent once more; the vendor refused it before doing anything.
- A create (POST) is never re-sent blindly. When it fails after the request may have gone
  out (read timeout, dropped connection), the task is looked up by the body's
  ``external_task_id``: found → that task is returned; NOT_FOUND → the create is sent again
  (at most ``max_retries`` times). Without an ``external_task_id`` the NETWORK error is
  raised. When the connection could not even be opened, nothing reached the vendor and
  the create is simply sent again (bounded). Vendor error answers to a create (1303, 5000,
  1201, ...) are raised for the caller to handle — except a refusal (1200/1201) when a task
  with the body's ``external_task_id`` already exists: that task is returned, which makes
  a create idempotent by ``external_task_id``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from klingweb.kling.auth import TokenSigner
from klingweb.kling.backoff import backoff_delay
from klingweb.kling.errors import ErrorClass, KlingError, classify
from klingweb.kling.models import (
    KlingTask,
    ResourcePack,
    datetime_to_ms,
    parse_resource_pack,
    parse_task,
)

log = logging.getLogger("klingweb.kling")

SINGAPORE_BASE_URL = "https://api-singapore.klingai.com"
BEIJING_BASE_URL = "https://api-beijing.klingai.com"

# Family name (the ``family`` argument of the generic methods) -> create/query/list path.
FAMILY_PATHS: dict[str, str] = {
    "multi_shot": "/v1/general/ai-multi-shot",
    "avatar": "/v1/videos/avatar/image2video",
    "video_extend": "/v1/videos/video-extend",
    "text2video": "/v1/videos/text2video",
    "image2video": "/v1/videos/image2video",
    "element": "/v1/general/advanced-custom-elements",
}
PRESET_ELEMENTS_PATH = "/v1/general/advanced-presets-elements"
DELETE_ELEMENTS_PATH = "/v1/general/delete-elements"
ACCOUNT_COSTS_PATH = "/account/costs"

_FAMILY_ALIASES = {
    "elements": "element",
    "custom_elements": "element",
    "ai_multi_shot": "multi_shot",
}

# Failures where the request certainly never reached the vendor: re-sending is safe.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def family_path(family: str) -> str:
    """Return the API path of ``family`` (a ``FAMILY_PATHS`` key; ``-`` may stand for ``_``).

    Raises ``ValueError`` for an unknown family.
    """
    key = family.strip().lower().replace("-", "_")
    key = _FAMILY_ALIASES.get(key, key)
    try:
        return FAMILY_PATHS[key]
    except KeyError:
        known = ", ".join(FAMILY_PATHS)
        raise ValueError(f"Unknown Kling task family {family!r}; one of: {known}.") from None


def _merge(body: dict | None, fields: dict[str, Any]) -> dict:
    merged = dict(body or {})
    merged.update(fields)
    return merged


class KlingClient:
    """A client of one Kling account (one access key / secret key pair on one host).

    ``base_url``: ``SINGAPORE_BASE_URL`` (default), ``BEIJING_BASE_URL`` or any URL (the
    sandbox); credentials made for one region do not work on the other.
    ``connect_timeout``/``read_timeout``: seconds (httpx.Timeout; writes use the read
    timeout, waiting for a pooled connection the connect timeout). ``max_retries``: extra
    attempts of a query (and re-sends of a create, see module doc); ``backoff_base``/
    ``backoff_max``: seconds. ``transport``: an optional ``httpx.BaseTransport``.

    Thread-safe: one cached JWT (``TokenSigner``) and one connection pool per client.
    Every method raises ``KlingError`` on failure; argument mistakes raise ``ValueError``.
    Use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        *,
        access_key: str,
        secret_key: str,
        base_url: str = SINGAPORE_BASE_URL,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url:
            raise ValueError("A Kling base URL is required.")
        self.base_url = base_url.rstrip("/")
        self.signer = TokenSigner(access_key=access_key, secret_key=secret_key)
        self.max_retries = max(0, int(max_retries))
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
        )
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=self.timeout,
            transport=transport,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            follow_redirects=False,
        )
        self._random = random.Random()

    # -- plumbing -----------------------------------------------------------------------

    def token(self) -> str:
        """The current bearer JWT (HS256, ``iss``=access key, ``exp``=now+1800 s,
        ``nbf``=now−5 s), cached and re-signed 5 minutes before expiry. KLING_API.md §1."""
        return self.signer.token()

    def close(self) -> None:
        """Close the connection pool. The client must not be used afterwards."""
        self._http.close()

    def __enter__(self) -> KlingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KlingClient(base_url={self.base_url!r}, access_key={self.signer.access_key!r})"

    def _backoff(self, attempt: int) -> float:
        """Full-jitter delay in seconds before retry number ``attempt`` (0-based)."""
        return backoff_delay(
            attempt + 1,
            base=self.backoff_base,
            cap=self.backoff_max,
            jitter=(0.0, 1.0),
            rng=self._random,
        )

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> dict:
        """Send one call and return the vendor envelope (``code`` 0).

        Re-signs the token and sends once more on 1003/1004. Transport failures become
        NETWORK ``KlingError`` with the httpx exception as ``__cause__``.
        """
        force = False
        for _ in range(2):
            headers = {"Authorization": f"Bearer {self.signer.token(force=force)}"}
            try:
                response = self._http.request(
                    method, path, params=params, json=json, headers=headers
                )
            except httpx.TransportError as exc:
                detail = str(exc) or "no detail"
                raise KlingError(
                    f"{method} {self.base_url}{path}: {type(exc).__name__}: {detail}",
                    error_class=ErrorClass.NETWORK,
                ) from exc
            try:
                return self._unwrap(response)
            except KlingError as exc:
                if exc.code in (1003, 1004) and not force:
                    log.info("Kling answered %s (%s); re-signing the token", exc.code, exc.message)
                    force = True
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _unwrap(response: httpx.Response) -> dict:
        """Return the envelope of a successful answer; raise ``KlingError`` otherwise."""
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "code" not in body:
            snippet = " ".join(response.text[:200].split())
            raise KlingError(
                f"HTTP {status}: not a Kling answer: {snippet or '(empty body)'}",
                http_status=status,
                # Garbage with a success status is the server's fault, not ours.
                error_class=ErrorClass.SERVER if status < 400 else classify(None, status),
            )
        request_id = body.get("request_id")
        request_id = str(request_id) if request_id not in (None, "") else None
        try:
            code = int(body["code"])
        except (TypeError, ValueError):
            code = None
        message = str(body.get("message") or body.get("msg") or f"HTTP {status}")
        if code == 0 and 200 <= status < 300:
            return body
        raise KlingError(
            message,
            http_status=status,
            code=code if code != 0 else None,
            request_id=request_id,
        )

    def _query(self, path: str, *, params: dict[str, Any] | None = None) -> dict:
        """GET with retries of retryable errors (bounded, exponential backoff, full jitter)."""
        attempt = 0
        while True:
            try:
                return self._exchange("GET", path, params=params)
            except KlingError as exc:
                if not exc.retryable or attempt >= self.max_retries:
                    raise
                delay = self._backoff(attempt)
                log.info(
                    "Kling GET %s failed (%s); retry %d in %.2fs", path, exc, attempt + 1, delay
                )
            time.sleep(delay)
            attempt += 1

    @staticmethod
    def _data(envelope: dict, kind: type) -> Any:
        """The envelope's ``data``, checked to be a ``kind`` (None → empty ``kind``)."""
        data = envelope.get("data")
        if data is None:
            return kind()
        if not isinstance(data, kind):
            raise KlingError(
                f"Unexpected answer: data is {type(data).__name__}, expected {kind.__name__}",
                http_status=200,
                request_id=envelope.get("request_id"),
                error_class=ErrorClass.SERVER,
            )
        return data

    # -- generic task endpoints ---------------------------------------------------------

    def create_task(self, family: str, body: dict) -> KlingTask:
        """Create a task: ``POST <family path>`` with the JSON ``body``.

        ``family``: a ``FAMILY_PATHS`` key. ``body``: the vendor's request fields (KLING_API.md
        §5), ideally with ``external_task_id`` (our own id) so a lost answer can be
        recovered. Returns the create answer parsed (``task_status`` usually ``submitted``).

        Never re-sent blindly: after a read timeout or dropped connection the task is looked
        up by ``external_task_id`` and returned if the vendor has it; only a NOT_FOUND
        lookup leads to sending again (at most ``max_retries`` times). Idempotent by
        ``external_task_id``: when the vendor refuses the create as an invalid request (a
        reused ``external_task_id`` is refused with 1201) and a task with that
        ``external_task_id`` exists, that task is returned.

        Raises ``KlingError``: vendor answers as they come (e.g. 1201 INVALID_REQUEST, 1303
        CONCURRENCY, 5000 SERVER — not retried here), NETWORK when the outcome stays unknown
        or there is no ``external_task_id`` to look it up with. Vendor doc: "Create Task" of
        each family; KLING_API.md §4 on ``external_task_id``.
        """
        if not isinstance(body, dict):
            raise ValueError("The create body must be a dict.")
        path = family_path(family)
        external = body.get("external_task_id") or None
        attempt = 0
        maybe_sent = False  # an earlier attempt may have created the task
        while True:
            try:
                envelope = self._exchange("POST", path, json=body)
                return parse_task(self._data(envelope, dict))
            except KlingError as exc:
                if exc.error_class is not ErrorClass.NETWORK:
                    if external and (maybe_sent or exc.error_class is ErrorClass.INVALID_REQUEST):
                        # An earlier attempt (this call's, landing after our lookup, or an
                        # earlier call's) may hold the external_task_id, which the vendor
                        # then refuses as a duplicate: the task that has it is the answer.
                        found = self._lookup_after_create(family, external)
                        if found is not None:
                            log.warning(
                                "Kling create %s refused (%s); external_task_id=%s exists: "
                                "returning task %s",
                                path,
                                exc,
                                external,
                                found.task_id,
                            )
                            return found
                    raise
                if isinstance(exc.__cause__, _NOT_SENT):
                    pass  # the connection never opened: nothing reached the vendor
                elif not external:
                    raise
                else:
                    maybe_sent = True
                    log.warning(
                        "Kling create %s: %s; looking up external_task_id=%s", path, exc, external
                    )
                    found = self._lookup_after_create(family, external, strict=True)
                    if found is not None:
                        return found
                if attempt >= self.max_retries:
                    raise
                delay = self._backoff(attempt)
            time.sleep(delay)
            attempt += 1

    def _lookup_after_create(
        self, family: str, external_task_id: str, *, strict: bool = False
    ) -> KlingTask | None:
        """Find the task a create may have made; None when the vendor answers NOT_FOUND.

        ``strict``: other lookup failures are raised (the outcome stays unknown);
        otherwise they count as not found.
        """
        try:
            return self.get_task(family, external_task_id=external_task_id)
        except KlingError as exc:
            if exc.error_class is ErrorClass.NOT_FOUND or not strict:
                return None
            raise

    def get_task(
        self,
        family: str,
        *,
        task_id: str | None = None,
        external_task_id: str | None = None,
    ) -> KlingTask:
        """Query one task: ``GET <family path>/{task_id}`` or ``/{external_task_id}``.

        Give exactly one of ``task_id`` (vendor id) and ``external_task_id`` (ours); both go
        in the same path position (kling-docs "Query Task (Single)", Path Parameters), URL
        encoded. Raises ``ValueError`` unless exactly one is given; ``KlingError`` (1203
        NOT_FOUND for an unknown task; retryable errors after ``max_retries`` retries).
        """
        if (task_id is None) == (external_task_id is None):
            raise ValueError("Give exactly one of task_id and external_task_id.")
        ident = str(task_id if task_id is not None else external_task_id)
        if not ident:
            raise ValueError("The task id must not be empty.")
        envelope = self._query(f"{family_path(family)}/{quote(ident, safe='')}")
        return parse_task(self._data(envelope, dict))

    def iter_tasks(
        self, family: str, *, page_size: int = 500, max_pages: int = 1000
    ) -> Iterator[list[KlingTask]]:
        """Yield the family's list pages, newest first: ``list_tasks`` for page 1, 2, ...

        Each item is one page (a list of ``KlingTask``, at most ``page_size`` long; 1..500).
        Stops after a short page (the list's end) or after ``max_pages`` pages (the vendor's
        ``pageNum`` goes up to 1000). The caller stops early by breaking out of the loop, so a
        page is requested only when the caller asks for it. ``family`` is a client family
        name, or ``"preset_elements"`` for the vendor's ready-made elements. Raises
        ``KlingError`` from the page that failed (pages already yielded stay valid).
        Vendor doc: "Query Task (List)" of each family (KLING_API.md §5).
        """
        for page in range(1, max(1, min(int(max_pages), 1000)) + 1):
            if family == "preset_elements":
                items = self.list_preset_elements(page=page, page_size=page_size)
            else:
                items = self.list_tasks(family, page=page, page_size=page_size)
            yield items
            if len(items) < page_size:
                return

    def list_tasks(self, family: str, *, page: int = 1, page_size: int = 30) -> list[KlingTask]:
        """Query one page of tasks: ``GET <family path>?pageNum=&pageSize=``, newest first.

        ``page``: 1..1000; ``page_size``: 1..500 (vendor ranges; out of range the vendor
        answers 1201). Raises ``KlingError``. Vendor doc: "Query Task (List)".
        """
        envelope = self._query(family_path(family), params={"pageNum": page, "pageSize": page_size})
        return [parse_task(item) for item in self._data(envelope, list) if isinstance(item, dict)]

    # -- AI multi-shot (kling-docs/ai-multi-shot.txt) -----------------------------------

    def create_multi_shot(self, body: dict | None = None, /, **fields: Any) -> KlingTask:
        """Create an AI multi-shot task (``POST /v1/general/ai-multi-shot``).

        Fields: ``element_frontal_image`` (URL or raw Base64, image rule), optional
        ``callback_url``, ``external_task_id``; given as a dict and/or keywords.
        Result: ``images[]`` with ``urls`` = [url_1, url_2, url_3]. See ``create_task``.
        """
        return self.create_task("multi_shot", _merge(body, fields))

    def get_multi_shot(
        self, task_id: str | None = None, *, external_task_id: str | None = None
    ) -> KlingTask:
        """Query one AI multi-shot task by ``task_id`` or ``external_task_id``. See ``get_task``."""
        return self.get_task("multi_shot", task_id=task_id, external_task_id=external_task_id)

    def list_multi_shot(self, page: int = 1, page_size: int = 30) -> list[KlingTask]:
        """List AI multi-shot tasks, one page, newest first. See ``list_tasks``."""
        return self.list_tasks("multi_shot", page=page, page_size=page_size)

    # -- Avatar (kling-docs/avatar-image2video.txt) -------------------------------------

    def create_avatar(self, body: dict | None = None, /, **fields: Any) -> KlingTask:
        """Create an avatar video (``POST /v1/videos/avatar/image2video``).

        Fields: ``image`` (required, image rule), exactly one of ``audio_id`` /
        ``sound_file`` (mp3/wav/m4a/aac, ≤ 5 MB, 2–300 s), optional ``prompt`` (≤ 2500
        chars), ``mode`` (``std``|``pro``), ``watermark_info``, ``callback_url``,
        ``external_task_id``. Result: ``videos[]``. See ``create_task``.
        """
        return self.create_task("avatar", _merge(body, fields))

    def get_avatar(
        self, task_id: str | None = None, *, external_task_id: str | None = None
    ) -> KlingTask:
        """Query one avatar task by ``task_id`` or ``external_task_id``. See ``get_task``."""
        return self.get_task("avatar", task_id=task_id, external_task_id=external_task_id)

    def list_avatar(self, page: int = 1, page_size: int = 30) -> list[KlingTask]:
        """List avatar tasks, one page, newest first. See ``list_tasks``."""
        return self.list_tasks("avatar", page=page, page_size=page_size)

    # -- Video extension (kling-docs/video-extend.txt) ----------------------------------

    def create_video_extend(self, body: dict | None = None, /, **fields: Any) -> KlingTask:
        """Extend a video by 4–5 s (``POST /v1/videos/video-extend``).

        Fields: ``video_id`` (required; a text/image-to-video or extension result),
        optional ``prompt``/``negative_prompt`` (≤ 2500 chars), ``cfg_scale`` [0, 1],
        ``watermark_info``, ``callback_url``, ``external_task_id``. Results carry
        ``parent_video`` and ``videos[]``. See ``create_task``.
        """
        return self.create_task("video_extend", _merge(body, fields))

    def get_video_extend(
        self, task_id: str | None = None, *, external_task_id: str | None = None
    ) -> KlingTask:
        """Query one video-extension task by ``task_id`` or ``external_task_id``."""
        return self.get_task("video_extend", task_id=task_id, external_task_id=external_task_id)

    def list_video_extend(self, page: int = 1, page_size: int = 30) -> list[KlingTask]:
        """List video-extension tasks, one page, newest first. See ``list_tasks``."""
        return self.list_tasks("video_extend", page=page, page_size=page_size)

    # -- Text to video (KLING_API.md §5.6, public docs) ---------------------------------

    def create_text2video(self, body: dict | None = None, /, **fields: Any) -> KlingTask:
        """Create a text-to-video task (``POST /v1/videos/text2video``).

        Fields: ``prompt`` (required, ≤ 2500 chars), ``model_name``, ``negative_prompt``,
        ``cfg_scale`` [0, 1], ``mode`` std|pro, ``aspect_ratio`` 16:9|9:16|1:1,
        ``duration`` "5"|"10" (seconds, string), ``camera_control``, ``watermark_info``,
        ``callback_url``, ``external_task_id``. Result: ``videos[]``. See ``create_task``.
        """
        return self.create_task("text2video", _merge(body, fields))

    def get_text2video(
        self, task_id: str | None = None, *, external_task_id: str | None = None
    ) -> KlingTask:
        """Query one text-to-video task by ``task_id`` or ``external_task_id``."""
        return self.get_task("text2video", task_id=task_id, external_task_id=external_task_id)

    def list_text2video(self, page: int = 1, page_size: int = 30) -> list[KlingTask]:
        """List text-to-video tasks, one page, newest first. See ``list_tasks``."""
        return self.list_tasks("text2video", page=page, page_size=page_size)

    # -- Image to video (KLING_API.md §5.6, public docs) --------------------------------

    def create_image2video(self, body: dict | None = None, /, **fields: Any) -> KlingTask:
        """Create an image-to-video task (``POST /v1/videos/image2video``).

        Fields: as text-to-video plus ``image`` (required, image rule) and optional
        ``image_tail``. Result: ``videos[]``. See ``create_task``.
        """
        return self.create_task("image2video", _merge(body, fields))

    def get_image2video(
        self, task_id: str | None = None, *, external_task_id: str | None = None
    ) -> KlingTask:
        """Query one image-to-video task by ``task_id`` or ``external_task_id``."""
        return self.get_task("image2video", task_id=task_id, external_task_id=external_task_id)

    def list_image2video(self, page: int = 1, page_size: int = 30) -> list[KlingTask]:
        """List image-to-video tasks, one page, newest first. See ``list_tasks``."""
        return self.list_tasks("image2video", page=page, page_size=page_size)

    # -- Elements (kling-docs/elements.txt) ---------------------------------------------

    def create_element(self, body: dict | None = None, /, **fields: Any) -> KlingTask:
        """Create a custom element (``POST /v1/general/advanced-custom-elements``); a task.

        Fields: ``element_name`` (≤ 20 chars), ``element_description`` (≤ 100 chars),
        ``reference_type`` ``image_refer``|``video_refer``, ``element_image_list``
        ``{frontal_image, refer_images: [{image_url}] (1–3)}`` or ``element_video_list``
        ``{refer_videos: [{video_url}]}``, optional ``element_voice_id``, ``tag_list``,
        ``callback_url``, ``external_task_id``. Result: ``elements[]``. See ``create_task``.
        """
        return self.create_task("element", _merge(body, fields))

    def get_element(
        self, task_id: str | None = None, *, external_task_id: str | None = None
    ) -> KlingTask:
        """Query one element-creation task by ``task_id`` or ``external_task_id``."""
        return self.get_task("element", task_id=task_id, external_task_id=external_task_id)

    def list_element(self, page: int = 1, page_size: int = 30) -> list[KlingTask]:
        """List custom-element tasks (``GET /v1/general/advanced-custom-elements``), one page."""
        return self.list_tasks("element", page=page, page_size=page_size)

    def list_preset_elements(self, page: int = 1, page_size: int = 30) -> list[KlingTask]:
        """List the vendor's ready-made elements (``GET /v1/general/advanced-presets-elements``).

        Same list shape as custom elements: task objects whose ``elements[]`` have
        ``owned_by`` ``"kling"``. ``page`` 1..1000, ``page_size`` 1..500. Raises ``KlingError``.
        """
        envelope = self._query(
            PRESET_ELEMENTS_PATH, params={"pageNum": page, "pageSize": page_size}
        )
        return [parse_task(item) for item in self._data(envelope, list) if isinstance(item, dict)]

    def delete_element(self, element_id: str) -> dict:
        """Delete a custom element (``POST /v1/general/delete-elements``, body ``{element_id}``).

        Returns the vendor's ``data`` (``{task_id, task_status}``); the element then shows
        ``status`` ``"deleted"``. Not retried (only re-signed on 1004). Raises ``KlingError``
        (e.g. NOT_FOUND / INVALID_REQUEST for an unknown or preset element).
        """
        if element_id in (None, ""):
            raise ValueError("element_id must not be empty.")
        envelope = self._exchange(
            "POST", DELETE_ELEMENTS_PATH, json={"element_id": str(element_id)}
        )
        return self._data(envelope, dict)

    # -- Account (KLING_API.md §5.5, public docs) ---------------------------------------

    def account_costs(
        self,
        *,
        start_time: datetime,
        end_time: datetime,
        resource_pack_name: str | None = None,
    ) -> list[ResourcePack]:
        """The account's resource packs: ``GET /account/costs?start_time=&end_time=`` (ms).

        ``start_time``/``end_time``: aware datetimes (sent as Unix ms; naive ones raise
        ``ValueError``); ``resource_pack_name`` filters by name. Returns
        ``data.resource_pack_subscribe_infos`` parsed. Free, but call at most once a second;
        the remaining quantity lags up to 12 hours. Raises ``KlingError``.
        """
        params: dict[str, Any] = {
            "start_time": datetime_to_ms(start_time),
            "end_time": datetime_to_ms(end_time),
        }
        if resource_pack_name:
            params["resource_pack_name"] = resource_pack_name
        data = self._data(self._query(ACCOUNT_COSTS_PATH, params=params), dict)
        infos = data.get("resource_pack_subscribe_infos") or []
        if not isinstance(infos, list):
            infos = []
        return [parse_resource_pack(item) for item in infos if isinstance(item, dict)]
