"""``KlingClient``: one method per Kling API endpoint the portal uses (KLING_API.md §5,
KLING_API_2026.md §3–§4).

Credentials (KLING_API_2026.md §2): an account is either an **API key** (sent as
``Authorization: Bearer <key>``, the key itself) or an **access key + secret key** pair
(an HS256 JWT, ``auth.TokenSigner``). The legacy ``/v1`` design accepts both; the 2026
design (``/{capability}/{model}`` creates and ``/tasks`` queries) accepts API keys only, so
an access-key client calling it gets a PERMISSION ``KlingError`` before anything is sent.

Transport is ``httpx`` with explicit connect and read timeouts. Every answer is unwrapped
from the vendor envelope ``{code, message, request_id, data}`` (KLING_API.md §2) and parsed
into the dataclasses of ``klingweb.kling.models``; every failure is a ``KlingError``.

Retry policy:
- Queries (GET, and the read-only ``POST /tasks``) retry retryable errors (rate limit, concurrency, server, network) up to
  ``max_retries`` times with exponential backoff and full jitter:
  ``sleep = uniform(0, min(backoff_max, backoff_base * 2**attempt))`` seconds.
- Any call of an access-key client answered 1004 (token expired) or 1003 (token not yet
  valid) is re-signed with a fresh token and sent once more; the vendor refused it before
  doing anything. An API key cannot be re-signed: 1003/1004 is raised as it comes.
- A create (POST) is never re-sent blindly. When it fails after the request may have gone
  out (read timeout, dropped connection), the task is looked up by the body's
  ``external_task_id`` (2026 design: ``options.external_task_id``, looked up with
  ``GET /tasks?external_task_ids=``): found → that task is returned; NOT_FOUND → the create is sent again
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from klingweb.kling.auth import TokenSigner
from klingweb.kling.backoff import backoff_delay
from klingweb.kling.errors import ErrorClass, KlingError, classify
from klingweb.kling.models import (
    KlingParseError,
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

# -- the 2026 design (KLING_API_2026.md §1, §4): endpoint name -> create path -------------
NEW_DESIGN_PATHS: dict[str, str] = {
    "text_to_video_3_0_turbo": "/text-to-video/kling-3.0-turbo",  # §4.1
    "image_to_video_3_0_turbo": "/image-to-video/kling-3.0-turbo",  # §4.2
    "text_to_video_3_0": "/text-to-video/kling-3.0",  # §4.3
    "image_to_video_3_0": "/image-to-video/kling-3.0",  # §4.4
    "omni_video_3_0": "/omni-video/kling-3.0-omni",  # §4.5
    "motion_control_3_0": "/motion-control/kling-3.0",  # §4.6
    "motion_control_2_6": "/motion-control/kling-2.6",  # §4.6
    "text_to_video_2_6": "/text-to-video/kling-2.6",  # §4.7
    "image_to_video_2_6": "/image-to-video/kling-2.6",  # §4.7
    "text_to_video_2_5_turbo": "/text-to-video/kling-2.5-turbo",  # §4.7
    "image_to_video_2_5_turbo": "/image-to-video/kling-2.5-turbo",  # §4.7
    "omni_video_o1": "/omni-video/kling-o1",  # §4.8
}
TASKS_PATH = "/tasks"  # GET by ids, POST by cursor (KLING_API_2026.md §3)
#: Ids per ``GET /tasks`` request. The vendor documents comma-separated batches but no
#: maximum (KLING_API_2026.md §3: "silent"); 100 keeps the URL near 2 KB even for 36-char
#: external ids (well under common 8 KB URL limits) and equals ``POST /tasks``'s default
#: ``limit``.
TASKS_BATCH_SIZE = 100
#: ``POST /tasks`` ``limit``: default 100, maximum 500 (KLING_API_2026.md §3).
TASKS_CURSOR_LIMIT_MAX = 500
TASK_STATUS_FILTERS = frozenset({"submitted", "processing", "succeeded", "failed"})
TASK_PRODUCT_TYPES = frozenset({"video", "image", "try_on"})

#: Families whose vendor page names only ``task_id`` as the single query's path parameter
#: ("Query Task (Single)": ``task_id`` *Required*; kling-docs/ai-multi-shot.txt,
#: elements.txt), where other families' pages also allow ``external_task_id`` (KLING_API.md
#: §4). A task of theirs is looked up by ``external_task_id`` on the list pages instead
#: (``get_task``), so timeout recovery never relies on an undocumented query.
EXTERNAL_ID_ON_LIST_PAGES: frozenset[str] = frozenset({"multi_shot", "element"})
#: List pages (500 tasks each, newest first) read to find such a task by ``external_task_id``:
#: the tasks looked up so are ones whose create answer was lost moments earlier, so the
#: first page holds them unless 500 newer tasks were created since.
EXTERNAL_LOOKUP_PAGES = 3

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


def new_design_path(endpoint: str) -> str:
    """Return the create path of a 2026-design ``endpoint`` (a ``NEW_DESIGN_PATHS`` key, or
    the path itself, e.g. ``"/text-to-video/kling-3.0-turbo"``). Raises ``ValueError``."""
    if endpoint in NEW_DESIGN_PATHS.values():
        return endpoint
    try:
        return NEW_DESIGN_PATHS[endpoint]
    except KeyError:
        known = ", ".join(NEW_DESIGN_PATHS)
        raise ValueError(f"Unknown Kling 2026 endpoint {endpoint!r}; one of: {known}.") from None


def _merge(body: dict | None, fields: dict[str, Any]) -> dict:
    merged = dict(body or {})
    merged.update(fields)
    return merged


def _ids(values: str | Iterable[str] | None, name: str) -> list[str]:
    """Ids for ``GET /tasks``: a single id or an iterable; blanks refused, duplicates dropped
    (first kept), an id containing a comma refused (the vendor separates ids by commas)."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    seen: dict[str, None] = {}
    for item in items:
        ident = str(item).strip() if item is not None else ""
        if not ident:
            raise ValueError(f"{name} must not contain an empty id.")
        if "," in ident:
            raise ValueError(f"{name}: an id must not contain a comma ({ident!r}).")
        seen.setdefault(ident, None)
    return list(seen)


def _masked(secret: str) -> str:
    """The last 4 characters of a credential for display (``…abcd``); nothing of a short one."""
    return f"…{secret[-4:]}" if len(secret) >= 12 else "…"


@dataclass(frozen=True)
class TaskPage:
    """One page of ``POST /tasks`` (KLING_API_2026.md §3): ``tasks`` parsed from
    ``data.result[]``, ``count`` (the vendor's, else ``len(tasks)``), ``next_cursor``
    (None when absent or empty) and ``has_more``. ``raw``: the vendor ``data``."""

    tasks: list[KlingTask]
    count: int
    next_cursor: str | None
    has_more: bool
    raw: dict = field(repr=False)


class KlingClient:
    """A client of one Kling account on one host: an API key, or an access key / secret
    key pair (exactly one of the two kinds; KLING_API_2026.md §2).

    ``base_url``: ``SINGAPORE_BASE_URL`` (default), ``BEIJING_BASE_URL`` or any URL (the
    sandbox); credentials made for one region do not work on the other.
    ``connect_timeout``/``read_timeout``: seconds (httpx.Timeout; writes use the read
    timeout, waiting for a pooled connection the connect timeout). ``max_retries``: extra
    attempts of a query (and re-sends of a create, see module doc); ``backoff_base``/
    ``backoff_max``: seconds. ``transport``: an optional ``httpx.BaseTransport``.
    ``tasks_batch_size``: ids per ``GET /tasks`` request (``TASKS_BATCH_SIZE``, ≥ 1).

    Credentials: ``api_key=`` (sent as ``Authorization: Bearer <api_key>``; works on both
    designs) or ``access_key=`` + ``secret_key=`` (HS256 JWT; legacy ``/v1`` and
    ``/account`` only). Both kinds, neither, or half a pair raise ``ValueError``. No
    secret is ever logged or shown by ``repr`` (an API key appears as its last 4
    characters).

    Thread-safe: one cached JWT (``TokenSigner``) and one connection pool per client.
    Every method raises ``KlingError`` on failure; argument mistakes raise ``ValueError``.
    Use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        base_url: str = SINGAPORE_BASE_URL,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        transport: httpx.BaseTransport | None = None,
        tasks_batch_size: int = TASKS_BATCH_SIZE,
    ) -> None:
        if not base_url:
            raise ValueError("A Kling base URL is required.")
        has_key = bool(api_key and api_key.strip())
        has_pair = bool(access_key) or bool(secret_key)
        if has_key and has_pair:
            raise ValueError(
                "Give a Kling API key, or an access key and secret key — not both kinds."
            )
        if not has_key and not has_pair:
            raise ValueError(
                "Kling credentials are required: an API key, or an access key and secret key."
            )
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key.strip() if has_key and api_key else None
        if self._api_key and not all(33 <= ord(char) <= 126 for char in self._api_key):
            # It goes into an HTTP header as is: no spaces, control or non-ASCII characters.
            raise ValueError("A Kling API key must be printable ASCII without spaces.")
        # TokenSigner refuses half a pair with its own ValueError.
        self.signer: TokenSigner | None = (
            None
            if self._api_key
            else TokenSigner(access_key=access_key or "", secret_key=secret_key or "")
        )
        if int(tasks_batch_size) < 1:
            raise ValueError("tasks_batch_size must be at least 1.")
        self.tasks_batch_size = int(tasks_batch_size)
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

    @property
    def credential_kind(self) -> str:
        """``"api_key"`` or ``"access_key"`` (an access key / secret key pair)."""
        return "api_key" if self._api_key else "access_key"

    def token(self) -> str:
        """The bearer credential sent in ``Authorization: Bearer …``: the API key itself, or
        the current JWT (HS256, ``iss``=access key, ``exp``=now+1800 s, ``nbf``=now−5 s),
        cached and re-signed 5 minutes before expiry. KLING_API.md §1, KLING_API_2026.md §2."""
        return self._bearer(force=False)

    def _bearer(self, *, force: bool) -> str:
        if self._api_key:
            return self._api_key
        assert self.signer is not None
        return self.signer.token(force=force)

    def _require_api_key(self, what: str) -> None:
        """Refuse a 2026-design call on an access-key client (KLING_API_2026.md §2: the new
        design accepts API keys only) with a PERMISSION ``KlingError``; nothing is sent."""
        if self._api_key:
            return
        raise KlingError(
            f"{what} is on Kling's 2026 API design, which accepts API keys only; this "
            "account has an access key / secret key pair. Add an API key to the account.",
            error_class=ErrorClass.PERMISSION,
        )

    def close(self) -> None:
        """Close the connection pool. The client must not be used afterwards."""
        self._http.close()

    def __enter__(self) -> KlingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._api_key:
            return f"KlingClient(base_url={self.base_url!r}, api_key={_masked(self._api_key)!r})"
        assert self.signer is not None
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

        Re-signs the JWT and sends once more on 1003/1004 (an API key cannot be re-signed:
        the error is raised). Transport failures become NETWORK ``KlingError`` with the httpx
        exception as ``__cause__``.
        """
        force = False
        for _ in range(2):
            headers = {"Authorization": f"Bearer {self._bearer(force=force)}"}
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
                if exc.code in (1003, 1004) and not force and self.signer is not None:
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

    def _query(
        self,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        method: str = "GET",
        json: Any = None,
    ) -> dict:
        """A query (GET, or a read-only POST such as ``POST /tasks``) with retries of
        retryable errors (bounded, exponential backoff, full jitter)."""
        attempt = 0
        while True:
            try:
                return self._exchange(method, path, params=params, json=json)
            except KlingError as exc:
                if not exc.retryable or attempt >= self.max_retries:
                    raise
                delay = self._backoff(attempt)
                log.info(
                    "Kling %s %s failed (%s); retry %d in %.2fs",
                    method,
                    path,
                    exc,
                    attempt + 1,
                    delay,
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

    @staticmethod
    def _task(data: dict, envelope: dict) -> KlingTask:
        """``parse_task`` whose ``KlingParseError`` (a NaN/negative charge) becomes a SERVER
        ``KlingError`` carrying the envelope's ``request_id``."""
        try:
            return parse_task(data)
        except KlingParseError as exc:
            raise KlingError(
                f"Unexpected answer: {exc}",
                http_status=200,
                request_id=envelope.get("request_id"),
                error_class=ErrorClass.SERVER,
            ) from exc

    def _tasks(self, items: list, envelope: dict) -> list[KlingTask]:
        return [self._task(item, envelope) for item in items if isinstance(item, dict)]

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
        each family; KLING_API.md §4 on ``external_task_id``. ``family`` may also be a
        2026-design endpoint (a ``NEW_DESIGN_PATHS`` key): see ``create_new_design_task``.
        """
        if not isinstance(body, dict):
            raise ValueError("The create body must be a dict.")
        if family in NEW_DESIGN_PATHS:
            return self.create_new_design_task(family, body)
        return self._create(
            family_path(family),
            body,
            body.get("external_task_id") or None,
            lambda external, strict: self._lookup_after_create(family, external, strict=strict),
        )

    def _create(
        self,
        path: str,
        body: dict,
        external: str | None,
        lookup: Callable[[str, bool], KlingTask | None],
    ) -> KlingTask:
        """POST ``body`` to ``path`` with the recovery rules of ``create_task`` (module doc).

        ``external``: the body's external task id (None: no recovery by lookup);
        ``lookup(external, strict)``: the task holding it, or None when not found.
        """
        attempt = 0
        maybe_sent = False  # an earlier attempt may have created the task
        while True:
            try:
                envelope = self._exchange("POST", path, json=body)
                return self._task(self._data(envelope, dict), envelope)
            except KlingError as exc:
                if exc.error_class is not ErrorClass.NETWORK:
                    if external and (maybe_sent or exc.error_class is ErrorClass.INVALID_REQUEST):
                        # An earlier attempt (this call's, landing after our lookup, or an
                        # earlier call's) may hold the external_task_id, which the vendor
                        # then refuses as a duplicate: the task that has it is the answer.
                        found = lookup(external, False)
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
                    found = lookup(external, True)
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

        For AI multi-shot and elements (``EXTERNAL_ID_ON_LIST_PAGES``), whose pages document
        the single query by ``task_id`` only, an ``external_task_id`` is looked up on the
        newest list pages instead (``_find_on_list_pages``; not listed there → NOT_FOUND
        ``KlingError`` with code None).

        ``family`` may also be a 2026-design endpoint (a ``NEW_DESIGN_PATHS`` key): the task
        is then asked with ``GET /tasks?task_ids=`` (or ``external_task_ids=``), and an id
        the vendor does not list raises a NOT_FOUND ``KlingError`` (code None), so a caller
        handles both designs alike (KLING_API_2026.md §3).
        """
        if (task_id is None) == (external_task_id is None):
            raise ValueError("Give exactly one of task_id and external_task_id.")
        ident = str(task_id if task_id is not None else external_task_id)
        if not ident:
            raise ValueError("The task id must not be empty.")
        if family in NEW_DESIGN_PATHS:
            found = (
                self.get_tasks([ident])
                if task_id is not None
                else self.get_tasks(external_task_ids=[ident])
            )
            attr = "task_id" if task_id is not None else "external_task_id"
            for task in found:
                if getattr(task, attr) == ident:
                    return task
            raise KlingError(
                f"Task {ident} not found by GET {TASKS_PATH} ({attr}).",
                http_status=200,
                error_class=ErrorClass.NOT_FOUND,
            )
        if external_task_id is not None and _FAMILY_ALIASES.get(family, family) in (
            EXTERNAL_ID_ON_LIST_PAGES
        ):
            return self._find_on_list_pages(family, ident)
        envelope = self._query(f"{family_path(family)}/{quote(ident, safe='')}")
        return self._task(self._data(envelope, dict), envelope)

    def _find_on_list_pages(self, family: str, external_task_id: str) -> KlingTask:
        """The task of ``family`` whose ``external_task_id`` is given, from the newest
        ``EXTERNAL_LOOKUP_PAGES`` list pages (``iter_tasks``, 500 a page): the lookup for
        families whose single query takes ``task_id`` only (``EXTERNAL_ID_ON_LIST_PAGES``).
        Raises a NOT_FOUND ``KlingError`` (code None) when those pages do not hold it, and
        the list query's own ``KlingError``."""
        for items in self.iter_tasks(family, page_size=500, max_pages=EXTERNAL_LOOKUP_PAGES):
            for item in items:
                if item.external_task_id == external_task_id:
                    return item
        raise KlingError(
            f"No {family} task with external_task_id {external_task_id} on the newest "
            f"{EXTERNAL_LOOKUP_PAGES} list pages.",
            http_status=200,
            error_class=ErrorClass.NOT_FOUND,
        )

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
        return self._tasks(self._data(envelope, list), envelope)

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
        return self._tasks(self._data(envelope, list), envelope)

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

    # -- The 2026 design: creates (KLING_API_2026.md §4) --------------------------------

    def create_new_design_task(
        self, endpoint: str, body: dict | None = None, /, **fields: Any
    ) -> KlingTask:
        """Create a task on the 2026 design: ``POST /{capability}/{model}`` with ``body``.

        ``endpoint``: a ``NEW_DESIGN_PATHS`` key (``"text_to_video_3_0_turbo"``, ...) or
        its path. ``body``/``fields``: the vendor's request, ``prompt`` or ``contents[]``
        plus ``settings{}`` and ``options{callback_url, external_task_id,
        watermark_info{enabled}}`` (KLING_API_2026.md §4 "Common rules"); sent as given,
        the vendor validates. Returns the create answer (``{id, status, create_time,
        update_time, external_id}``) parsed into ``KlingTask`` (``task_status``
        ``submitted``, ``design`` ``"2026"``).

        Same recovery as ``create_task``, keyed on ``options.external_task_id``: after a
        read timeout or dropped connection, or a refusal when that id already exists, the
        task is looked up with ``GET /tasks?external_task_ids=`` and returned if found.
        Raises ``ValueError`` for an unknown endpoint or a body that is not a dict;
        ``KlingError`` PERMISSION (nothing sent) on an access-key client, since the 2026
        design accepts API keys only (KLING_API_2026.md §2); vendor errors as they come.
        """
        path = new_design_path(endpoint)
        if body is not None and not isinstance(body, dict):
            raise ValueError("The create body must be a dict.")
        self._require_api_key(f"POST {path}")
        merged = _merge(body, fields)
        options = merged.get("options")
        external = options.get("external_task_id") if isinstance(options, dict) else None
        return self._create(path, merged, str(external) if external else None, self._find_new)

    def _find_new(self, external_task_id: str, strict: bool) -> KlingTask | None:
        """The 2026 task holding ``external_task_id`` (``GET /tasks``), or None when the
        vendor does not list it or answers NOT_FOUND. ``strict``: other failures raise."""
        try:
            tasks = self.get_tasks(external_task_ids=[external_task_id])
        except KlingError as exc:
            if exc.error_class is ErrorClass.NOT_FOUND or not strict:
                return None
            raise
        return next((task for task in tasks if task.external_task_id == external_task_id), None)

    def create_text_to_video_3_0_turbo(
        self, body: dict | None = None, /, **fields: Any
    ) -> KlingTask:
        """Kling 3.0 Turbo text-to-video: ``POST /text-to-video/kling-3.0-turbo`` (§4.1).

        Body: ``prompt`` (required, ≤ 3072 chars, shot syntax allowed), ``settings
        {resolution 720p|1080p, aspect_ratio 16:9|9:16|1:1, duration int 3–15 s}``,
        ``options``. See ``create_new_design_task``.
        """
        return self.create_new_design_task("text_to_video_3_0_turbo", body, **fields)

    def create_image_to_video_3_0_turbo(
        self, body: dict | None = None, /, **fields: Any
    ) -> KlingTask:
        """Kling 3.0 Turbo image-to-video: ``POST /image-to-video/kling-3.0-turbo`` (§4.2).

        Body: ``contents[{type: prompt, text}, {type: first_frame, url}]`` (URL or raw
        Base64; no last frame), ``settings{resolution, duration 3–15}``, ``options``. See
        ``create_new_design_task``.
        """
        return self.create_new_design_task("image_to_video_3_0_turbo", body, **fields)

    def create_text_to_video_3_0(self, body: dict | None = None, /, **fields: Any) -> KlingTask:
        """Kling 3.0 text-to-video: ``POST /text-to-video/kling-3.0`` (§4.3).

        Body: ``prompt`` (≤ 3072), ``settings{multi_shot bool, audio native|off,
        resolution 720p|1080p|4k, aspect_ratio, duration 3–15}``, ``options``. See
        ``create_new_design_task``.
        """
        return self.create_new_design_task("text_to_video_3_0", body, **fields)

    def create_image_to_video_3_0(self, body: dict | None = None, /, **fields: Any) -> KlingTask:
        """Kling 3.0 image-to-video: ``POST /image-to-video/kling-3.0`` (§4.4).

        Body: ``contents[]`` of ``prompt``, ``first_frame`` (required), ``last_frame``,
        ``element{element_id, id}`` (≤ 3); ``settings`` as 3.0 text-to-video without
        ``aspect_ratio``; ``options``. See ``create_new_design_task``.
        """
        return self.create_new_design_task("image_to_video_3_0", body, **fields)

    def create_omni_video_3_0(self, body: dict | None = None, /, **fields: Any) -> KlingTask:
        """Kling 3.0 Omni video: ``POST /omni-video/kling-3.0-omni`` (§4.5).

        Body: ``contents[]`` of ``prompt`` (cites ``@image_1``, ``@Name``, ``@video_1``),
        ``first_frame``/``last_frame``/``refer_image``, ``feature_video`` or
        ``base_video`` (URL only), ``element``; ``settings{multi_shot, audio
        native|original|off, resolution 720p|1080p|4k, aspect_ratio, duration 3–15}``;
        ``options``. See ``create_new_design_task``.
        """
        return self.create_new_design_task("omni_video_3_0", body, **fields)

    def create_motion_control_3_0(self, body: dict | None = None, /, **fields: Any) -> KlingTask:
        """Kling 3.0 motion control: ``POST /motion-control/kling-3.0`` (§4.6).

        Body: ``contents[]`` of ``prompt`` (≤ 2500), ``image``, ``video`` (URL), ``element``
        (≤ 1); ``settings{character_orientation image|video (required), audio
        original|off, resolution 720p|1080p}``; ``options``. Billed on output seconds.
        See ``create_new_design_task``.
        """
        return self.create_new_design_task("motion_control_3_0", body, **fields)

    def create_motion_control_2_6(self, body: dict | None = None, /, **fields: Any) -> KlingTask:
        """Kling 2.6 motion control: ``POST /motion-control/kling-2.6`` (§4.6); as 3.0
        without ``element``. See ``create_new_design_task``."""
        return self.create_new_design_task("motion_control_2_6", body, **fields)

    # -- The 2026 design: unified task queries (KLING_API_2026.md §3) ------------------

    def get_tasks(
        self,
        task_ids: str | Iterable[str] | None = None,
        *,
        external_task_ids: str | Iterable[str] | None = None,
    ) -> list[KlingTask]:
        """Query tasks by id: ``GET /tasks?task_ids=a,b,…`` or ``?external_task_ids=…``.

        Give exactly one of ``task_ids`` (vendor ids) and ``external_task_ids`` (ours): a
        single id or any number of them. Duplicates are dropped; the ids are sent in
        batches of ``tasks_batch_size`` (``TASKS_BATCH_SIZE`` = 100), comma-separated in
        one query parameter, so n ids take ⌈n / batch⌉ requests (none for no ids). Returns
        the tasks of every ``data[]`` in the vendor's order, parsed into ``KlingTask`` (the
        vendor answers only for ids it knows; a missing id is simply absent). Each request
        is retried like every query.

        Raises ``ValueError`` for both kinds or neither, an empty id or an id with a comma;
        ``KlingError`` PERMISSION (nothing sent) on an access-key client (API keys only),
        or the vendor's error for a batch (earlier batches' tasks are then lost to the
        caller: query again). KLING_API_2026.md §3 "GET /tasks"; it serves async tasks of
        the 2026 design (whether it serves legacy ``/v1`` tasks: silent).
        """
        if (task_ids is None) == (external_task_ids is None):
            raise ValueError("Give exactly one of task_ids and external_task_ids.")
        key = "task_ids" if task_ids is not None else "external_task_ids"
        ids = _ids(task_ids if task_ids is not None else external_task_ids, key)
        if not ids:
            return []
        self._require_api_key(f"GET {TASKS_PATH}")
        size = self.tasks_batch_size
        tasks: list[KlingTask] = []
        for start in range(0, len(ids), size):
            batch = ",".join(quote(ident, safe="") for ident in ids[start : start + size])
            envelope = self._query(f"{TASKS_PATH}?{key}={batch}")
            tasks.extend(self._tasks(self._data(envelope, list), envelope))
        return tasks

    def query_tasks(
        self,
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
        statuses: Iterable[str] | None = None,
        product_types: Iterable[str] | None = None,
    ) -> TaskPage:
        """One page of ``POST /tasks`` (the cursor query, KLING_API_2026.md §3).

        Body: ``start_time``/``end_time`` (aware datetimes, sent as Unix ms; vendor
        defaults end − 30 days / now; ignored by the vendor once ``cursor`` is set),
        ``cursor`` (the previous page's ``next_cursor``), ``limit`` (1..500, default 100),
        ``filters[{key: "status", values}, {key: "product_type", values}]`` from
        ``statuses`` (``submitted``, ``processing``, ``succeeded``, ``failed``; the legacy
        ``succeed`` is accepted for ``succeeded``) and ``product_types`` (``video``,
        ``image``, ``try_on``). Returns a ``TaskPage``. A read-only query: retried like a GET.

        Raises ``ValueError`` for a limit out of range, an unknown filter value, naive
        datetimes or ``start_time`` not before ``end_time``; ``KlingError`` PERMISSION
        (nothing sent) on an access-key client; vendor errors.
        """
        if not 1 <= int(limit) <= TASKS_CURSOR_LIMIT_MAX:
            raise ValueError(f"limit must be 1..{TASKS_CURSOR_LIMIT_MAX}, not {limit}.")
        body: dict[str, Any] = {}
        if start_time is not None:
            body["start_time"] = datetime_to_ms(start_time)
        if end_time is not None:
            body["end_time"] = datetime_to_ms(end_time)
        if "start_time" in body and "end_time" in body and body["start_time"] >= body["end_time"]:
            raise ValueError("start_time must be earlier than end_time.")
        if cursor:
            body["cursor"] = str(cursor)
        body["limit"] = int(limit)
        filters = []
        statuses = [statuses] if isinstance(statuses, str) else statuses
        product_types = [product_types] if isinstance(product_types, str) else product_types
        if statuses is not None:
            values = ["succeeded" if s == "succeed" else str(s) for s in statuses]
            unknown = sorted(set(values) - TASK_STATUS_FILTERS)
            if unknown:
                raise ValueError(
                    f"Unknown task status filter {unknown}; one of: "
                    f"{', '.join(sorted(TASK_STATUS_FILTERS))}."
                )
            if values:
                filters.append({"key": "status", "values": values})
        if product_types is not None:
            values = [str(p) for p in product_types]
            unknown = sorted(set(values) - TASK_PRODUCT_TYPES)
            if unknown:
                raise ValueError(
                    f"Unknown product_type filter {unknown}; one of: "
                    f"{', '.join(sorted(TASK_PRODUCT_TYPES))}."
                )
            if values:
                filters.append({"key": "product_type", "values": values})
        if filters:
            body["filters"] = filters
        self._require_api_key(f"POST {TASKS_PATH}")
        envelope = self._query(TASKS_PATH, method="POST", json=body)
        data = self._data(envelope, dict)
        items = data.get("result")
        tasks = self._tasks(items if isinstance(items, list) else [], envelope)
        try:
            count = int(data.get("count", len(tasks)))
        except (TypeError, ValueError):
            count = len(tasks)
        next_cursor = data.get("next_cursor")
        return TaskPage(
            tasks=tasks,
            count=count,
            next_cursor=str(next_cursor) if next_cursor not in (None, "") else None,
            has_more=data.get("has_more") is True,
            raw=data,
        )

    def iter_task_pages(
        self,
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        limit: int = 100,
        statuses: Iterable[str] | None = None,
        product_types: Iterable[str] | None = None,
        max_pages: int = 1000,
    ) -> Iterator[TaskPage]:
        """Yield the ``POST /tasks`` cursor pages (``query_tasks``) one by one.

        The first page is asked with the times and filters; each next page with the same
        filters and ``limit`` plus the previous ``next_cursor``. Stops after a page whose
        ``has_more`` is not true, that has no ``next_cursor``, whose ``next_cursor`` repeats
        the one just used, or after ``max_pages`` pages. A page is requested only when the
        caller asks for it (break out to stop early). Raises as ``query_tasks`` (pages
        already yielded stay valid). KLING_API_2026.md §3.
        """
        statuses = [statuses] if isinstance(statuses, str) else statuses
        product_types = [product_types] if isinstance(product_types, str) else product_types
        statuses = list(statuses) if statuses is not None else None  # read once, reused
        product_types = list(product_types) if product_types is not None else None
        cursor: str | None = None
        for _ in range(max(1, int(max_pages))):
            page = self.query_tasks(
                start_time=start_time,
                end_time=end_time,
                cursor=cursor,
                limit=limit,
                statuses=statuses,
                product_types=product_types,
            )
            yield page
            if not page.has_more or not page.next_cursor or page.next_cursor == cursor:
                return
            cursor = page.next_cursor

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
