"""The sandbox HTTP server: a Kling look-alike on a real socket (stdlib ``http.server``).

Speaks the legacy vendor API of KLING_API.md §5 and the new design of KLING_API_2026.md
§3–§4 (envelope ``{code, message, request_id, data}``, bearer API keys or AK/SK JWTs, error
codes of §2), serves its generated media under ``/sandbox-media/``, runs tasks on its own
clock and POSTs callbacks (kling-docs/callback-protocol.txt; KLING_API_2026.md §6).
Imports nothing from ``klingweb.kling`` or Django.
"""

from __future__ import annotations

import json
import queue
import socket
import sys
import threading
import time
import traceback
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from . import media
from .auth import JWT, authenticate_any
from .config import SandboxConfig
from .errors import ApiError, invalid
from .newdesign import NEW_ENDPOINTS, validate_new
from .state import FAMILY_PATHS, SandboxState
from .unified import encode_cursor, parse_ids, parse_page
from .validation import validate_costs_query, validate_create, validate_page

PRESET_ELEMENTS_PATH = "/v1/general/advanced-presets-elements"
DELETE_ELEMENTS_PATH = "/v1/general/delete-elements"
ACCOUNT_COSTS_PATH = "/account/costs"
TASKS_PATH = "/tasks"  # the new design's unified task query
MEDIA_PREFIX = "/sandbox-media/"
MAX_BODY_BYTES = 300 * 1024 * 1024  # room for a Base64 video of 200 MB
CALLBACK_TIMEOUT = 2.0  # seconds, connect and read
CALLBACK_WORKERS = 4
TICK_SECONDS = 0.05
CALLBACK_LOG_MAX = 50_000  # attempts kept in memory (oldest dropped first)

Json = dict[str, Any]


#: Account errors of KLING_API.md §2 that the ``account_error_code`` knob can inject.
_ACCOUNT_ERRORS = {
    1100: "Account exception",
    1101: "Account in arrears (post-paid)",
    1102: "Resource pack used up or expired",
}
#: 1304 (IP allow-list policy) refuses every API request, queries included.
IP_ALLOW_LIST_CODE = 1304


def _task_id(body: Json) -> Any:
    """The task id of a callback body of either design (``task_id`` legacy, ``id`` new)."""
    return body.get("task_id", body.get("id"))


class CallbackDispatcher:
    """Delivers callbacks from worker threads with httpx, keeping each task's order.

    A job goes to the worker ``crc32(task_id) % CALLBACK_WORKERS``, so callbacks of one task
    arrive in status order while a slow receiver does not hold up every other task. Each
    attempt is appended to ``log`` as ``{url, body, task_id, task_status, http_status (int |
    None), dropped (bool), error (str | None), at (Unix s)}`` (for a new-design body,
    ``task_id``/``task_status`` are its ``id``/``status``). ``callback_drop_rate`` skips a
    delivery (logged with ``dropped=True``); ``callback_duplicate_rate`` sends it twice.
    Delivery is attempted once (no retries: the vendor documents none). The log keeps the
    last ``CALLBACK_LOG_MAX`` attempts.
    """

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.log: list[Json] = []
        self.log_lock = threading.Lock()
        self._queues: list[queue.Queue] = [queue.Queue() for _ in range(CALLBACK_WORKERS)]
        self._threads = [
            threading.Thread(
                target=self._run, args=(q,), name=f"kling-sandbox-callback-{i}", daemon=True
            )
            for i, q in enumerate(self._queues)
        ]
        self._pending = 0
        self._pending_cond = threading.Condition()

    def start(self) -> None:
        """Start the worker threads."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Ask the workers to finish (queued jobs after the sentinel are dropped)."""
        for q in self._queues:
            q.put(None)
        for thread in self._threads:
            thread.join(timeout=CALLBACK_TIMEOUT * 2 + 1)

    def enqueue(self, url: str, body: Json) -> None:
        """Queue one callback (never blocks; called under the state lock)."""
        with self._pending_cond:
            self._pending += 1
        index = zlib.crc32(str(_task_id(body)).encode()) % CALLBACK_WORKERS
        self._queues[index].put((url, body))

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued callback has been attempted; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._pending_cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._pending_cond.wait(left)
        return True

    def _run(self, jobs: queue.Queue) -> None:
        client = httpx.Client(timeout=CALLBACK_TIMEOUT, trust_env=False)
        try:
            while True:
                job = jobs.get()
                if job is None:
                    return
                try:
                    self._deliver(client, *job)
                finally:
                    with self._pending_cond:
                        self._pending -= 1
                        self._pending_cond.notify_all()
        finally:
            client.close()

    def _deliver(self, client: httpx.Client, url: str, body: Json) -> None:
        config = self.state.config
        if self.state.chance(config.callback_drop_rate):
            self._record(url, body, None, dropped=True, error=None)
            return
        times = 2 if self.state.chance(config.callback_duplicate_rate) else 1
        for _ in range(times):
            status, error = None, None
            try:
                response = client.post(url, json=body)
                status = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            self._record(url, body, status, dropped=False, error=error)

    def _record(
        self, url: str, body: Json, status: int | None, *, dropped: bool, error: str | None
    ) -> None:
        entry = {
            "url": url,
            "body": body,
            "task_id": _task_id(body),
            "task_status": body.get("task_status", body.get("status")),
            "http_status": status,
            "dropped": dropped,
            "error": error,
            "at": time.time(),
        }
        with self.log_lock:
            self.log.append(entry)
            if len(self.log) > CALLBACK_LOG_MAX:
                del self.log[: len(self.log) - CALLBACK_LOG_MAX]


class _Handler(BaseHTTPRequestHandler):
    """One HTTP request; the owning ``SandboxServer`` is ``self.server.sandbox``."""

    protocol_version = "HTTP/1.1"
    server_version = "KlingSandbox/1.0"
    timeout = 60  # seconds a keep-alive connection may idle

    # ----- plumbing ----------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle + delayed ACK
        # add ~40 ms to every answer on a keep-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.sandbox.log_requests:
            sys.stderr.write(f"[kling-sandbox] {self.address_string()} {format % args}\n")

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            size = int(length)
        except ValueError:
            raise invalid("Content-Length", "must be an integer")
        if size > MAX_BODY_BYTES:
            self.close_connection = True
            raise invalid("request body", f"larger than {MAX_BODY_BYTES} bytes")
        return self.rfile.read(size)

    def _send(self, status: int, payload: bytes, content_type: str, extra=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _send_envelope(
        self, status: int, code: int, message: str, request_id: str, data: Any
    ) -> None:
        body = {"code": code, "message": message, "request_id": request_id, "data": data}
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self._send(status, payload, "application/json; charset=utf-8")

    # ----- dispatch ----------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        sandbox: SandboxServer = self.server.sandbox
        parts = urlsplit(self.path)
        path = parts.path
        if path.startswith(MEDIA_PREFIX) and method in ("GET", "HEAD"):
            self._serve_media(sandbox, path[len(MEDIA_PREFIX) :])
            return
        request_id = str(uuid.uuid4())
        status, code, message, data = 200, 0, "SUCCEED", None
        try:
            raw = self._read_body()
            config = sandbox.config
            account, kind = authenticate_any(
                self.headers.get("Authorization"), config.accounts, config.api_keys
            )
            if config.account_error_code == IP_ALLOW_LIST_CODE:
                raise ApiError(
                    429,
                    IP_ALLOW_LIST_CODE,
                    "IP allow-list policy: this address is not allowed for the account "
                    "(sandbox fault injection)",
                )
            if sandbox.state.chance(config.error_rate):
                if sandbox.state.choice([True, False]):
                    raise ApiError(500, 5000, "Server internal error (sandbox fault injection)")
                raise ApiError(503, 5001, "Server under maintenance (sandbox fault injection)")
            data = self._route(sandbox, method, path, parse_qs(parts.query), raw, account, kind)
        except ApiError as exc:
            status, code, message, data = exc.http_status, exc.code, exc.message, None
        except Exception:  # noqa: BLE001 - any bug must still answer with the envelope
            traceback.print_exc()
            status, code, message, data = 500, 5000, "Server internal error", None
        latency = sandbox.config.latency or 0.0
        if latency > 0:
            time.sleep(latency)
        self._send_envelope(status, code, message, request_id, data)

    def _route(
        self,
        sandbox: SandboxServer,
        method: str,
        path: str,
        query: dict[str, list[str]],
        raw: bytes,
        account: str,
        kind: str,
    ) -> Any:
        state = sandbox.state
        path = path.rstrip("/") or "/"
        if path in NEW_ENDPOINTS or path == TASKS_PATH:
            if kind == JWT:
                # KLING_API_2026.md §2: AK/SK JWTs are "only applicable to legacy version
                # design standards"; the new design accepts API keys only.
                raise ApiError(
                    401,
                    1000,
                    "Authentication failed: the new API design accepts API keys only "
                    "(AK/SK tokens work on the legacy /v1 endpoints)",
                )
            if path == TASKS_PATH and method == "GET":
                ids, external = parse_ids(query, sandbox.config.tasks_batch_max)
                return state.tasks_by_ids(account, ids, external=external)
            if path == TASKS_PATH and method == "POST":
                page = parse_page(
                    _json_body(raw) if raw.strip() else {},
                    now_ms=int(state.now() * 1000),  # the sandbox clock, as tasks are stamped
                )
                items, last_seq = state.tasks_page(
                    account,
                    start_ms=page.start_ms,
                    end_ms=page.end_ms,
                    before_seq=page.before_seq,
                    limit=page.limit,
                    statuses=page.statuses,
                    product_types=page.product_types,
                )
                return {
                    "result": items,
                    "count": len(items),
                    "next_cursor": (
                        encode_cursor(page.start_ms, page.end_ms, last_seq)
                        if last_seq is not None
                        else ""
                    ),
                    "has_more": last_seq is not None,
                }
            if path in NEW_ENDPOINTS and method == "POST":
                return self._create_new(sandbox, path, raw, account)
            raise ApiError(404, 1202, f"invalid method or path: {method} {path}")
        for family, base in FAMILY_PATHS.items():
            if path == base:
                if method == "GET":
                    page, size = validate_page(query)
                    return state.list_tasks(account, family, page, size)
                if method == "POST":
                    return self._create(sandbox, family, raw, account)
                break
            if path.startswith(base + "/") and method == "GET":
                ident = path[len(base) + 1 :]
                if ident and "/" not in ident:
                    # The id is one percent-encoded path segment (it may hold "/", " ", ...).
                    return state.get(account, family, unquote(ident))
        if path == PRESET_ELEMENTS_PATH and method == "GET":
            page, size = validate_page(query)
            return state.presets(page, size)
        if path == DELETE_ELEMENTS_PATH and method == "POST":
            body = _json_body(raw)
            return state.delete_element(account, body.get("element_id"))
        if path == ACCOUNT_COSTS_PATH and method == "GET":
            name = validate_costs_query(query)
            return {
                "code": 0,
                "msg": "success",
                "resource_pack_subscribe_infos": state.resource_packs(account, name),
            }
        raise ApiError(404, 1202, f"invalid method or path: {method} {path}")

    def _create(self, sandbox: SandboxServer, family: str, raw: bytes, account: str) -> Json:
        self._create_faults(sandbox)
        body = _json_body(raw)
        info = validate_create(family, body, fetch_timeout=sandbox.config.fetch_timeout)
        return sandbox.state.create(account, family, body, info)

    def _create_new(self, sandbox: SandboxServer, path: str, raw: bytes, account: str) -> Json:
        self._create_faults(sandbox)
        body = _json_body(raw)
        state = sandbox.state
        info = validate_new(
            path,
            body,
            elements=lambda element_id: state.element_for(account, element_id),
            fetch_timeout=sandbox.config.fetch_timeout,
        )
        return state.create_new(account, path, body, info)

    def _create_faults(self, sandbox: SandboxServer) -> None:
        """The create-only fault knobs: account errors 1100–1102, 1302, 1303."""
        config = sandbox.config
        state = sandbox.state
        if config.account_error_code in _ACCOUNT_ERRORS:
            code = config.account_error_code
            raise ApiError(429, code, f"{_ACCOUNT_ERRORS[code]} (sandbox fault injection)")
        if state.chance(config.create_rate_limit_rate):
            raise ApiError(429, 1302, "Request rate too high (sandbox fault injection)")
        if state.chance(config.create_concurrency_rate):
            raise ApiError(
                429, 1303, "Concurrency over the resource pack limit (sandbox fault injection)"
            )

    # ----- media -------------------------------------------------------------------------

    def _serve_media(self, sandbox: SandboxServer, rest: str) -> None:
        owner, _, name = rest.partition("/")
        not_found = json.dumps(
            {
                "code": 1203,
                "message": "media not found",
                "request_id": str(uuid.uuid4()),
                "data": None,
            }
        ).encode()
        if not owner or not name or "/" in name or not sandbox.state.media_available(owner):
            self._send(404, not_found, "application/json")
            return
        if name.endswith(".png"):
            payload, content_type = media.png_bytes(f"{owner}/{name}"), "image/png"
        elif name.endswith(".mp4"):
            payload, content_type = media.mp4_bytes(), "video/mp4"
        else:
            self._send(404, not_found, "application/json")
            return
        extra = {"Accept-Ranges": "bytes", "Cache-Control": "public, max-age=86400"}
        byte_range = _parse_range(self.headers.get("Range"), len(payload))
        if byte_range is None:
            self._send(200, payload, content_type, extra)
            return
        start, end = byte_range
        if start >= len(payload):
            extra["Content-Range"] = f"bytes */{len(payload)}"
            self._send(416, b"", content_type, extra)
            return
        extra["Content-Range"] = f"bytes {start}-{end}/{len(payload)}"
        self._send(206, payload[start : end + 1], content_type, extra)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` → inclusive (start, end); else None."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes=") :].strip().partition("-")
    try:
        if first == "":
            length = int(last)
            return max(size - length, 0), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if end < start:
        return None
    return start, min(end, size - 1)


def _json_body(raw: bytes) -> Json:
    """The request body as a JSON object; 1201 if it is not one."""
    if not raw.strip():
        raise invalid("request body", "must be a JSON object")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid("request body", f"invalid JSON ({exc})")
    if not isinstance(body, dict):
        raise invalid("request body", "must be a JSON object")
    return body


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address, handler, sandbox: SandboxServer) -> None:
        self.sandbox = sandbox
        super().__init__(address, handler)

    def handle_error(self, request, client_address) -> None:
        """Stay quiet when a client hung up first (its timeout fired); report the rest."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class SandboxServer:
    """A running Kling look-alike of both API designs (issue 2 §3, issue 13 §10).

    ``SandboxServer(config, host="127.0.0.1", port=0)`` binds at once (port 0: a free port);
    ``start()`` serves in daemon threads and returns ``self``. ``public_url`` overrides the
    base of the media URLs it hands out (when clients reach it under another name).
    Set ``log_requests = True`` to print one line per request on stderr.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        public_url: str | None = None,
    ) -> None:
        self.state = SandboxState(config or SandboxConfig())
        self.log_requests = False
        self._httpd = _HTTPServer((host, port), _Handler, self)
        bound_host, bound_port = self._httpd.server_address[:2]
        if bound_host in ("0.0.0.0", "::", ""):  # noqa: S104 - only naming the address
            bound_host = "127.0.0.1"
        if ":" in str(bound_host):
            bound_host = f"[{bound_host}]"
        self._base_url = f"http://{bound_host}:{bound_port}"
        self.state.base_url = (public_url or self._base_url).rstrip("/")
        self.state.refresh_preset_urls()
        self._dispatcher = CallbackDispatcher(self.state)
        self.state.on_callback = self._dispatcher.enqueue
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ----- contract ------------------------------------------------------------------------

    def start(self) -> SandboxServer:
        """Serve in a daemon thread, with the ticker and callback workers; returns ``self``."""
        self._dispatcher.start()
        serve = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="kling-sandbox-http",
            daemon=True,
        )
        ticker = threading.Thread(target=self._tick_loop, name="kling-sandbox-ticker", daemon=True)
        self._threads = [serve, ticker]
        for thread in self._threads:
            thread.start()
        return self

    @property
    def base_url(self) -> str:
        """``http://<host>:<port>`` the server listens on (no trailing slash)."""
        return self._base_url

    @property
    def config(self) -> SandboxConfig:
        """The live configuration; change its fault knobs at runtime."""
        return self.state.config

    @config.setter
    def config(self, value: SandboxConfig) -> None:
        self.state.config = value

    def reset_faults(self) -> None:
        """Put every fault knob back to none (error/limit rates 0, latency 0, no limit)."""
        self.state.config.reset_faults()

    def advance(self, seconds: float) -> None:
        """Move the sandbox clock ``seconds`` forward: due status changes happen at once
        and their callbacks are queued (delivered asynchronously; see ``wait_callbacks``)."""
        self.state.advance(seconds)

    def forget(self, task_id: str) -> None:
        """Fault knob: answer "not found" for task ``task_id`` from now on (1203 on the legacy
        query, absent from lists and the 2026 ``GET /tasks``), as the vendor does for a task
        it lost; ``SandboxState.forget``. Raises ``KeyError`` for an unknown task_id."""
        self.state.forget(task_id)

    def remember(self, task_id: str) -> None:
        """Undo ``forget``: the task is answered again in whatever status it reached."""
        self.state.remember(task_id)

    def tasks_snapshot(self) -> list[Json]:
        """Every task of every account, oldest first: ``account, family, task_id,
        external_task_id, task_status, final_unit_deduction (str), created_at, updated_at
        (ms), callback_url, forgotten``."""
        return self.state.snapshot()

    @property
    def callbacks_log(self) -> list[Json]:
        """A copy of the callback delivery attempts so far: ``{url, body, task_id,
        task_status, http_status (int | None), dropped (bool), error (str | None), at}``."""
        with self._dispatcher.log_lock:
            return list(self._dispatcher.log)

    def wait_callbacks(self, timeout: float = 5.0) -> bool:
        """Block until every queued callback has been attempted; False on timeout."""
        return self._dispatcher.wait_idle(timeout)

    def stop(self) -> None:
        """Stop serving, the ticker and the callback workers; closes the socket."""
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._dispatcher.stop()
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _tick_loop(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.state.tick()
            except Exception:  # noqa: BLE001 - the ticker must survive a bug in one tick
                traceback.print_exc()
