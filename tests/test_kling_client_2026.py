"""The client on Kling's 2026 API: API-key credentials, the new-design creates, the unified
``/tasks`` queries and money (``billing[]``, ``final_balance_deduction``).

The sandbox on this branch does not speak the 2026 design yet, so these tests talk over real
HTTP on loopback to ``FakeKling``: a small ``http.server`` thread that answers with the
shapes the vendor documents (KLING_API_2026.md §3, §4, §7; vendor pages
/api/video/3-0-turbo/text-to-video and siblings) and records every request exactly as it
arrived (method, raw path with query, headers, JSON body). Each test asserts the request the
vendor documents and the typed ``KlingTask`` the client makes of the answer.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from klingweb.kling import (
    DESIGN_2026,
    DESIGN_LEGACY,
    NEW_DESIGN_PATHS,
    TASKS_BATCH_SIZE,
    BalanceDeduction,
    BillingEntry,
    ErrorClass,
    KlingClient,
    KlingError,
    KlingParseError,
    TaskPage,
    parse_task,
)

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

API_KEY = "kling-api-key-0123456789abcdefWXYZ"
CREATE_MS = 1781080778802
UPDATE_MS = 1781080794151


# -- the fake vendor ----------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the fake vendor received it."""

    method: str
    path: str  # without the query
    raw_path: str  # with the query, exactly as sent on the request line
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: object  # parsed JSON, or None


Reply = tuple[int, dict]
Handler = Callable[[Seen], Reply]


def envelope(data: object, *, code: int = 0, message: str = "SUCCEED") -> dict:
    """The vendor envelope ``{code, message, request_id, data}`` (KLING_API.md §2)."""
    return {
        "code": code,
        "message": message,
        "request_id": f"req-{time.monotonic_ns()}",
        "data": data,
    }


class FakeKling:
    """A loopback HTTP server with scripted routes ``(METHOD, path) -> handler(seen)``.

    Unrouted requests answer 404 / code 1202. ``seen`` lists every request in order.
    """

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        fake = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(
                    method=self.command,
                    path=parts.path,
                    raw_path=self.path,
                    query=parse_qs(parts.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(raw) if raw else None,
                )
                with fake._lock:
                    fake.seen.append(seen)
                handler = fake.routes.get((self.command, parts.path))
                if handler is None:
                    status, payload = 404, envelope(None, code=1202, message="no such method")
                else:
                    status, payload = handler(seen)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (read timeout tests)

            do_GET = _serve
            do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeKling:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def requests(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path == path]


@pytest.fixture
def fake():
    server = FakeKling().start()
    yield server
    server.stop()


def key_client(base_url: str, **overrides) -> KlingClient:
    options = {
        "api_key": API_KEY,
        "base_url": base_url,
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
        "max_retries": 2,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
    }
    options.update(overrides)
    return KlingClient(**options)


def pair_client(base_url: str) -> KlingClient:
    return KlingClient(
        access_key="ak-0123456789", secret_key="sk-abcdefghijklmnopqrstuvwxyz", base_url=base_url
    )


# -- vendor-shaped objects (KLING_API_2026.md §3; the vendor's Query Task example) --------

VIDEO_SUCCEEDED = {
    "id": "893605946402811985",
    "status": "succeeded",
    "message": "",
    "create_time": CREATE_MS,
    "update_time": UPDATE_MS,
    "external_id": "ours-1",
    "outputs": [
        {
            "type": "video",
            "id": "vid-1",
            "url": "https://cdn/v.mp4",
            "watermark_url": "https://cdn/v-wm.mp4",
            "duration": "5.041",
        }
    ],
    "billing": [{"charge_type": "unit", "amount": "0.3333", "package_type": "video"}],
}

CASH_FAILED = {
    "id": "893605946402811986",
    "status": "failed",
    "message": "Content risk control triggered",
    "create_time": CREATE_MS,
    "update_time": UPDATE_MS,
    "external_id": "",
    "outputs": [],
    "billing": [
        {
            "charge_type": "cash",
            "cash_type": "balance",
            "amount": "0.0840",
            "currency": "USD",
            "list_price": "0.1120",
        }
    ],
}

ELEMENT_AND_IMAGES = {
    "id": "e-1",
    "status": "succeeded",
    "message": "",
    "create_time": CREATE_MS,
    "update_time": UPDATE_MS,
    "outputs": [
        {"type": "image", "url": "https://cdn/i0.png", "watermark_url": "https://cdn/i0-wm.png"},
        {"type": "image", "url": "https://cdn/i1.png", "group_id": "g-1"},
        {
            "type": "element",
            "id": "881",
            "name": "Pink boy",
            "description": "A boy in pink",
            "element_type": "multi_image_elements",
            "references": [
                {"type": "image", "role": "frontal", "url": "https://cdn/front.png"},
                {"type": "image", "role": "reference", "url": "https://cdn/side.png"},
                {
                    "type": "voice",
                    "role": "refer",
                    "url": "https://cdn/voice.mp3",
                    "id": "vo-1",
                    "name": "Boy",
                    "owned_by": "kling",
                },
            ],
            "owned_by": "1234",
            "status": "succeeded",
            "tags": [{"id": 2, "name": "Character", "description": ""}],
        },
        {
            "type": "audio",
            "id": "au-1",
            "mp3_url": "https://cdn/a.mp3",
            "wav_url": "https://cdn/a.wav",
        },
    ],
    "billing": [
        {"charge_type": "unit", "amount": "8", "package_type": "image"},
        {"charge_type": "unit", "amount": "0.5", "package_type": "video"},
    ],
}


# -- parsing: both designs into one KlingTask ----------------------------------------------


def test_new_design_answer_reads_into_the_legacy_fields():
    task = parse_task(VIDEO_SUCCEEDED)
    assert task.design == DESIGN_2026
    assert task.task_id == "893605946402811985"
    assert task.task_status == "succeed"  # the legacy word, so callers need not know
    assert task.is_finished
    assert task.external_task_id == "ours-1"
    assert task.task_info == {"external_task_id": "ours-1"}
    assert task.created_at == datetime.fromtimestamp(CREATE_MS / 1000, tz=UTC)
    assert task.updated_at == datetime.fromtimestamp(UPDATE_MS / 1000, tz=UTC)
    (video,) = task.videos
    assert (video.id, video.url, video.watermark_url) == (
        "vid-1",
        "https://cdn/v.mp4",
        "https://cdn/v-wm.mp4",
    )
    assert video.duration == Decimal("5.041")
    # task_result has the legacy shape the portal stores and downloads from.
    assert task.task_result == {
        "videos": [
            {
                "id": "vid-1",
                "url": "https://cdn/v.mp4",
                "watermark_url": "https://cdn/v-wm.mp4",
                "duration": "5.041",
            }
        ]
    }
    assert task.outputs == VIDEO_SUCCEEDED["outputs"]
    # 0.3333 units stay 0.3333: not rounded to 0.333.
    assert task.final_unit_deduction == Decimal("0.3333")
    assert str(task.final_unit_deduction) == "0.3333"
    assert task.billing == [
        BillingEntry(
            charge_type="unit",
            amount=Decimal("0.3333"),
            currency=None,
            list_price=None,
            cash_type=None,
            package_type="video",
            raw=VIDEO_SUCCEEDED["billing"][0],
        )
    ]
    assert task.final_balance_deduction is None
    assert task.cash_charges == []


def test_new_design_cash_charge_keeps_amount_currency_and_list_price_exactly():
    task = parse_task(CASH_FAILED)
    assert task.task_status == "failed"
    assert task.task_status_msg == "Content risk control triggered"
    assert task.external_task_id is None  # "" means none
    assert task.final_unit_deduction is None  # no units charged: money only
    (cash,) = task.cash_charges
    assert (cash.charge_type, cash.cash_type, cash.currency) == ("cash", "balance", "USD")
    assert str(cash.amount) == "0.0840" and str(cash.list_price) == "0.1120"  # trailing 0 kept
    balance = task.final_balance_deduction
    assert isinstance(balance, BalanceDeduction)
    assert (str(balance.quota), str(balance.list_price), balance.currency) == (
        "0.0840",
        "0.1120",
        "USD",
    )


def test_new_design_images_elements_audio_and_summed_units():
    task = parse_task(ELEMENT_AND_IMAGES)
    assert [(image.index, image.urls) for image in task.images] == [
        (0, ["https://cdn/i0.png"]),
        (1, ["https://cdn/i1.png"]),
    ]
    assert task.task_result["images"][0]["watermark_url"] == "https://cdn/i0-wm.png"
    assert task.task_result["images"][1]["group_id"] == "g-1"
    (element,) = task.elements
    assert element.element_id == "881"
    assert element.element_name == "Pink boy"
    assert element.element_description == "A boy in pink"
    assert element.reference_type == "multi_image_elements"
    assert element.element_image_list == {
        "frontal_image": "https://cdn/front.png",
        "refer_images": [{"image_url": "https://cdn/side.png"}],
    }
    assert element.element_voice_info == {
        "voice_id": "vo-1",
        "voice_name": "Boy",
        "trial_url": "https://cdn/voice.mp3",
        "owned_by": "kling",
    }
    assert element.status == "succeed"
    assert element.owned_by == "1234"
    assert task.task_result["audios"][0]["mp3_url"] == "https://cdn/a.mp3"
    assert task.final_unit_deduction == Decimal("8.5")  # the unit entries, summed exactly
    assert [entry.package_type for entry in task.billing] == ["image", "video"]


def test_callback_element_materials_shape_is_read_too():
    # Callbacks name the element's materials ``materials[]`` with role ``refer`` (§6).
    body = {
        "id": "e-2",
        "status": "succeeded",
        "outputs": [
            {
                "type": "element",
                "id": "882",
                "name": "Cat",
                "element_type": "video_character_elements",
                "materials": [{"type": "video", "role": "refer", "url": "https://cdn/r.mp4"}],
                "status": "succeeded",
            }
        ],
    }
    (element,) = parse_task(body).elements
    assert element.element_video_list == {"refer_videos": [{"video_url": "https://cdn/r.mp4"}]}
    assert element.element_image_list == {}


def test_create_answer_of_the_new_design():
    task = parse_task(
        {
            "id": "893605946402811985",
            "status": "submitted",
            "create_time": CREATE_MS,
            "update_time": CREATE_MS,
            "external_id": "ours-2",
        }
    )
    assert (task.task_id, task.task_status, task.external_task_id) == (
        "893605946402811985",
        "submitted",
        "ours-2",
    )
    assert task.videos == [] and task.billing == [] and task.final_unit_deduction is None


def test_legacy_cash_account_final_balance_deduction_is_kept_exactly():
    body = {
        "task_id": "t-1",
        "task_status": "succeed",
        "task_info": {"external_task_id": "x-1"},
        "task_result": {"videos": [{"id": "v", "url": "https://cdn/v.mp4", "duration": "5"}]},
        "final_unit_deduction": "0",
        "final_balance_deduction": {"quota": "0.4200", "list_price": "0.56"},
    }
    task = parse_task(body)
    assert task.design == DESIGN_LEGACY
    balance = task.final_balance_deduction
    assert isinstance(balance, BalanceDeduction)
    assert (str(balance.quota), balance.list_price, balance.currency) == (
        "0.4200",
        Decimal("0.56"),
        None,
    )
    # The same money seen the 2026 way: one unit entry, one cash entry.
    assert [(e.charge_type, str(e.amount), e.list_price) for e in task.billing] == [
        ("unit", "0", None),
        ("cash", "0.4200", Decimal("0.56")),
    ]


def test_legacy_without_money_has_no_billing():
    task = parse_task({"task_id": "t-2", "task_status": "processing"})
    assert task.billing == [] and task.final_balance_deduction is None
    assert task.outputs == [] and task.design == DESIGN_LEGACY


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity", "-0.5", "abc", "", None, True])
def test_billing_amount_that_is_not_money_is_a_parse_error(amount):
    body = dict(VIDEO_SUCCEEDED, billing=[{"charge_type": "unit", "amount": amount}])
    with pytest.raises(KlingParseError, match=r"billing\[0\]\.amount"):
        parse_task(body)


@pytest.mark.parametrize(
    ("money", "field"),
    [
        ({"quota": "NaN", "list_price": "1"}, "quota"),
        ({"quota": "-1", "list_price": "1"}, "quota"),
        ({"quota": "1", "list_price": "Infinity"}, "list_price"),
        ({"quota": "1", "list_price": "-0.01"}, "list_price"),
    ],
)
def test_legacy_balance_that_is_not_money_is_a_parse_error(money, field):
    body = {"task_id": "t", "task_status": "succeed", "final_balance_deduction": money}
    with pytest.raises(KlingParseError, match=field):
        parse_task(body)


@pytest.mark.parametrize("units", ["NaN", "inf", "-1"])
def test_legacy_units_nan_infinite_or_negative_is_a_parse_error(units):
    with pytest.raises(KlingParseError, match="final_unit_deduction"):
        parse_task({"task_id": "t", "task_status": "succeed", "final_unit_deduction": units})


def test_unknown_charge_type_and_cash_list_price_are_checked():
    with pytest.raises(KlingParseError, match="charge_type"):
        parse_task(dict(VIDEO_SUCCEEDED, billing=[{"charge_type": "coupon", "amount": "1"}]))
    bad_price = {"charge_type": "cash", "amount": "1", "currency": "USD", "list_price": "NaN"}
    with pytest.raises(KlingParseError, match="list_price"):
        parse_task(dict(VIDEO_SUCCEEDED, billing=[bad_price]))


# -- credentials -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"api_key": ""},
        {"api_key": API_KEY, "access_key": "ak", "secret_key": "sk"},
        {"api_key": API_KEY, "secret_key": "sk"},
        {"access_key": "ak"},
        {"secret_key": "sk"},
    ],
)
def test_client_takes_exactly_one_kind_of_credential(credentials):
    with pytest.raises(ValueError, match=r"(?i)key"):
        KlingClient(base_url="http://127.0.0.1:9", **credentials)


def test_repr_never_shows_a_secret():
    with KlingClient(api_key=API_KEY, base_url="http://127.0.0.1:9") as client:
        assert API_KEY not in repr(client) and "WXYZ" in repr(client)
        assert client.credential_kind == "api_key"
    secret = "sk-abcdefghijklmnopqrstuvwxyz"
    with KlingClient(access_key="ak-1", secret_key=secret, base_url="http://127.0.0.1:9") as c:
        assert secret not in repr(c) and "ak-1" in repr(c)
        assert c.credential_kind == "access_key"


def test_api_key_is_sent_as_the_bearer_itself_on_legacy_endpoints_too(fake):
    fake.routes[("GET", "/v1/videos/text2video/t-9")] = lambda seen: (
        200,
        envelope({"task_id": "t-9", "task_status": "processing"}),
    )
    with key_client(fake.base_url) as client:
        assert client.token() == API_KEY
        task = client.get_text2video("t-9")
    assert task.task_status == "processing"
    (seen,) = fake.seen
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"


def test_expired_key_1004_is_not_re_signed_and_raises_at_once(fake):
    fake.routes[("GET", "/v1/videos/text2video/t-9")] = lambda seen: (
        401,
        envelope(None, code=1004, message="token expired"),
    )
    with key_client(fake.base_url) as client, pytest.raises(KlingError) as info:
        client.get_text2video("t-9")
    assert info.value.code == 1004 and info.value.error_class is ErrorClass.AUTHENTICATION
    assert len(fake.seen) == 1


def test_access_key_client_is_refused_the_new_design_before_sending(fake):
    with pair_client(fake.base_url) as client:
        calls = [
            lambda: client.create_text_to_video_3_0_turbo(prompt="a cat"),
            lambda: client.get_tasks(["1"]),
            lambda: client.query_tasks(),
            lambda: next(client.iter_task_pages()),
        ]
        for call in calls:
            with pytest.raises(KlingError, match="accepts API keys only") as info:
                call()
            assert info.value.error_class is ErrorClass.PERMISSION
            assert not info.value.retryable
    assert fake.seen == []


# -- new-design creates (KLING_API_2026.md §4) ------------------------------------------------

FRAME = "https://cdn.example/start-frame.jpg"
OPTIONS = {
    "callback_url": "https://portal.example/kling/callback/tok/",
    "external_task_id": "ours-77",
    "watermark_info": {"enabled": True},
}
CREATES = [
    (
        "create_text_to_video_3_0_turbo",
        "/text-to-video/kling-3.0-turbo",
        {
            "prompt": "shot 1, 2, a train; shot 2, 3, a girl at the window;",
            "settings": {"resolution": "1080p", "aspect_ratio": "9:16", "duration": 5},
        },
    ),
    (
        "create_image_to_video_3_0_turbo",
        "/image-to-video/kling-3.0-turbo",
        {
            "contents": [
                {"type": "prompt", "text": "she turns"},
                {"type": "first_frame", "url": FRAME},
            ],
            "settings": {"resolution": "720p", "duration": 10},
        },
    ),
    (
        "create_text_to_video_3_0",
        "/text-to-video/kling-3.0",
        {
            "prompt": "a drummer",
            "settings": {
                "multi_shot": False,
                "audio": "native",
                "resolution": "4k",
                "aspect_ratio": "16:9",
                "duration": 15,
            },
        },
    ),
    (
        "create_image_to_video_3_0",
        "/image-to-video/kling-3.0",
        {
            "contents": [
                {"type": "prompt", "text": "@Pink walks in"},
                {"type": "first_frame", "url": FRAME},
                {"type": "element", "element_id": "881", "id": "Pink"},
            ],
            "settings": {"audio": "off", "resolution": "1080p", "duration": 5},
        },
    ),
    (
        "create_omni_video_3_0",
        "/omni-video/kling-3.0-omni",
        {
            "contents": [
                {"type": "prompt", "text": "@Pink dances like @video_1"},
                {"type": "feature_video", "url": "https://cdn.example/ref.mp4", "id": "video_1"},
                {"type": "element", "element_id": "881", "id": "Pink"},
            ],
            "settings": {
                "multi_shot": True,
                "audio": "off",
                "resolution": "720p",
                "aspect_ratio": "1:1",
                "duration": 8,
            },
        },
    ),
    (
        "create_motion_control_3_0",
        "/motion-control/kling-3.0",
        {
            "contents": [
                {"type": "prompt", "text": "dance"},
                {"type": "image", "url": FRAME},
                {"type": "video", "url": "https://cdn.example/moves.mp4"},
            ],
            "settings": {
                "character_orientation": "video",
                "audio": "original",
                "resolution": "720p",
            },
        },
    ),
    (
        "create_motion_control_2_6",
        "/motion-control/kling-2.6",
        {
            "contents": [
                {"type": "image", "url": FRAME},
                {"type": "video", "url": "https://cdn.example/m.mp4"},
            ],
            "settings": {"character_orientation": "image"},
        },
    ),
]


@pytest.mark.parametrize(("method", "path", "body"), CREATES, ids=[c[0] for c in CREATES])
def test_each_new_design_create_sends_the_documented_request(fake, method, path, body):
    created = {
        "id": "893605946402811985",
        "status": "submitted",
        "create_time": CREATE_MS,
        "update_time": CREATE_MS,
        "external_id": "ours-77",
    }
    fake.routes[("POST", path)] = lambda seen: (200, envelope(created))
    with key_client(fake.base_url) as client:
        task = getattr(client, method)(body, options=OPTIONS)
    (seen,) = fake.seen
    assert (seen.method, seen.raw_path) == ("POST", path)
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.body == dict(body, options=OPTIONS)
    assert task.design == DESIGN_2026
    assert (task.task_id, task.task_status, task.external_task_id) == (
        "893605946402811985",
        "submitted",
        "ours-77",
    )
    assert task.created_at == datetime.fromtimestamp(CREATE_MS / 1000, tz=UTC)


def test_every_documented_new_design_path_is_reachable_by_name(fake):
    assert NEW_DESIGN_PATHS["omni_video_o1"] == "/omni-video/kling-o1"
    for path in NEW_DESIGN_PATHS.values():
        fake.routes[("POST", path)] = lambda seen: (
            200,
            envelope({"id": "1", "status": "submitted"}),
        )
    with key_client(fake.base_url) as client:
        for name in NEW_DESIGN_PATHS:
            client.create_new_design_task(name, {"prompt": "x"})
        with pytest.raises(ValueError, match="Unknown Kling 2026 endpoint"):
            client.create_new_design_task("text_to_video_9_9", {"prompt": "x"})
    assert [s.path for s in fake.seen] == list(NEW_DESIGN_PATHS.values())


def test_create_timeout_is_recovered_by_external_id_without_sending_twice(fake):
    stored: list[dict] = []

    def slow_create(seen: Seen) -> Reply:
        stored.append(
            dict(
                VIDEO_SUCCEEDED,
                id="slow-1",
                status="submitted",
                external_id="ours-slow",
                outputs=[],
                billing=[],
            )
        )
        time.sleep(1.0)  # the vendor made the task; its answer arrives too late
        return 200, envelope({"id": "slow-1", "status": "submitted"})

    def lookup(seen: Seen) -> Reply:
        wanted = seen.query["external_task_ids"][0].split(",")
        return 200, envelope([t for t in stored if t["external_id"] in wanted])

    fake.routes[("POST", "/text-to-video/kling-3.0-turbo")] = slow_create
    fake.routes[("GET", "/tasks")] = lookup
    with key_client(fake.base_url, read_timeout=0.3) as client:
        task = client.create_text_to_video_3_0_turbo(
            prompt="a cat", options={"external_task_id": "ours-slow"}
        )
    assert (task.task_id, task.external_task_id) == ("slow-1", "ours-slow")
    assert len(fake.requests("POST", "/text-to-video/kling-3.0-turbo")) == 1
    (get,) = fake.requests("GET", "/tasks")
    assert get.raw_path == "/tasks?external_task_ids=ours-slow"


def test_create_refused_as_duplicate_returns_the_task_holding_the_external_id(fake):
    existing = dict(VIDEO_SUCCEEDED, external_id="ours-dup")
    fake.routes[("POST", "/omni-video/kling-3.0-omni")] = lambda seen: (
        400,
        envelope(None, code=1201, message="external_task_id already exists"),
    )
    fake.routes[("GET", "/tasks")] = lambda seen: (200, envelope([existing]))
    with key_client(fake.base_url) as client:
        task = client.create_omni_video_3_0(
            {"contents": [{"type": "prompt", "text": "x"}]},
            options={"external_task_id": "ours-dup"},
        )
    assert task.task_id == existing["id"] and task.task_status == "succeed"
    # Without an external id the refusal is the answer.
    with key_client(fake.base_url) as client, pytest.raises(KlingError) as info:
        client.create_omni_video_3_0({"contents": [{"type": "prompt", "text": "x"}]})
    assert info.value.code == 1201


# -- GET /tasks by ids, batched (KLING_API_2026.md §3) ---------------------------------------


def answer_known(seen: Seen) -> Reply:
    """Answer every asked id whose number is even (odd ids are unknown to the vendor)."""
    (key,) = seen.query
    ids = seen.query[key][0].split(",")
    field = "id" if key == "task_ids" else "external_id"
    items = [
        dict(VIDEO_SUCCEEDED, **{"id": f"v-{i}", "external_id": f"x-{i}", field: i})
        for i in ids
        if int(i.rsplit("-", 1)[-1]) % 2 == 0
    ]
    return 200, envelope(items)


def test_get_tasks_batches_ids_into_ceil_n_over_batch_requests(fake):
    fake.routes[("GET", "/tasks")] = answer_known
    ids = [f"t-{n}" for n in range(250)]
    with key_client(fake.base_url) as client:
        assert client.tasks_batch_size == TASKS_BATCH_SIZE == 100
        tasks = client.get_tasks(ids)
    sent = fake.requests("GET", "/tasks")
    assert len(sent) == 3  # ⌈250 / 100⌉
    assert [len(s.query["task_ids"][0].split(",")) for s in sent] == [100, 100, 50]
    # Literal commas in one query parameter, as the vendor's example shows.
    assert sent[0].raw_path == "/tasks?task_ids=" + ",".join(ids[:100])
    assert all(s.headers["authorization"] == f"Bearer {API_KEY}" for s in sent)
    assert [t.task_id for t in tasks] == [f"t-{n}" for n in range(0, 250, 2)]
    assert all(t.task_status == "succeed" for t in tasks)


def test_get_tasks_by_external_ids_with_a_small_batch(fake):
    fake.routes[("GET", "/tasks")] = answer_known
    with key_client(fake.base_url, tasks_batch_size=2) as client:
        tasks = client.get_tasks(external_task_ids=["x-0", "x-1", "x-2", "x-0", "x-4"])
    sent = fake.requests("GET", "/tasks")
    assert [s.raw_path for s in sent] == [
        "/tasks?external_task_ids=x-0,x-1",
        "/tasks?external_task_ids=x-2,x-4",  # the repeated x-0 is asked once
    ]
    assert [t.external_task_id for t in tasks] == ["x-0", "x-2", "x-4"]


def test_get_tasks_reads_a_voice_output_into_the_legacy_voices_shape(fake):
    # §3/§6: outputs[type=voice] {id, name, url, owned_by, status}; the legacy custom-voice
    # query's task_result.voices[] is {voice_id, voice_name, trial_url, owned_by} (S15).
    voice = {
        "type": "voice",
        "id": "850087542757535834",
        "name": "Narrator",
        "url": "https://cdn/narrator.mp3",
        "owned_by": "1234",
        "status": "succeeded",
    }
    item = {"id": "t-voice", "status": "succeeded", "outputs": [voice], "billing": []}
    fake.routes[("GET", "/tasks")] = lambda seen: (200, envelope([item]))
    with key_client(fake.base_url) as client:
        (task,) = client.get_tasks(["t-voice"])
    assert task.task_status == "succeed"
    assert task.task_result["voices"] == [
        {
            "voice_id": "850087542757535834",
            "voice_name": "Narrator",
            "trial_url": "https://cdn/narrator.mp3",
            "owned_by": "1234",
            "status": "succeed",
            "outputs_entry": voice,
        }
    ]
    assert task.outputs == [voice]  # the 2026 entry as sent, too
    assert task.videos == task.images == task.elements == []  # not read as anything else


def test_get_tasks_url_encodes_each_id_but_not_the_separator(fake):
    fake.routes[("GET", "/tasks")] = lambda seen: (200, envelope([]))
    with key_client(fake.base_url) as client:
        assert client.get_tasks(external_task_ids=["a b/c", "d&e=f"]) == []
    (seen,) = fake.seen
    assert seen.raw_path == "/tasks?external_task_ids=a%20b%2Fc,d%26e%3Df"
    assert seen.query == {"external_task_ids": ["a b/c,d&e=f"]}


def test_get_tasks_argument_mistakes_send_nothing(fake):
    with key_client(fake.base_url) as client:
        assert client.get_tasks([]) == []
        for call in (
            lambda: client.get_tasks(),
            lambda: client.get_tasks(["1"], external_task_ids=["2"]),
            lambda: client.get_tasks(["1", ""]),
            lambda: client.get_tasks(["1,2"]),
        ):
            with pytest.raises(ValueError):
                call()
        with pytest.raises(ValueError):
            KlingClient(api_key=API_KEY, base_url=fake.base_url, tasks_batch_size=0)
    assert fake.seen == []


def test_get_tasks_retries_a_server_error_then_answers(fake):
    answers = iter(
        [
            (500, envelope(None, code=5000, message="server error")),
            (200, envelope([VIDEO_SUCCEEDED])),
        ]
    )
    fake.routes[("GET", "/tasks")] = lambda seen: next(answers)
    with key_client(fake.base_url) as client:
        (task,) = client.get_tasks("893605946402811985")
    assert task.final_unit_deduction == Decimal("0.3333")
    assert len(fake.seen) == 2


def test_a_nan_charge_in_an_answer_is_a_server_error_with_the_request_id(fake):
    bad = dict(VIDEO_SUCCEEDED, billing=[{"charge_type": "unit", "amount": "NaN"}])
    reply = envelope([bad])
    fake.routes[("GET", "/tasks")] = lambda seen: (200, reply)
    with key_client(fake.base_url, max_retries=0) as client, pytest.raises(KlingError) as info:
        client.get_tasks(["893605946402811985"])
    assert info.value.error_class is ErrorClass.SERVER
    assert info.value.request_id == reply["request_id"]
    assert "billing[0].amount" in info.value.message
    assert isinstance(info.value.__cause__, KlingParseError)


# -- POST /tasks cursor query (KLING_API_2026.md §3) -----------------------------------------


def test_query_tasks_sends_times_limit_and_filters_as_documented(fake):
    page = {
        "result": [VIDEO_SUCCEEDED, CASH_FAILED],
        "count": 2,
        "next_cursor": "c-2",
        "has_more": True,
    }
    fake.routes[("POST", "/tasks")] = lambda seen: (200, envelope(page))
    start = datetime.fromtimestamp(1781193600, tz=UTC)
    end = datetime.fromtimestamp(1781516352.968, tz=UTC)
    with key_client(fake.base_url) as client:
        result = client.query_tasks(
            start_time=start,
            end_time=end,
            limit=500,
            statuses=["succeed", "failed"],
            product_types=["video"],
        )
    (seen,) = fake.seen
    assert (seen.method, seen.raw_path) == ("POST", "/tasks")
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert seen.body == {
        "start_time": 1781193600000,
        "end_time": 1781516352968,
        "limit": 500,
        "filters": [
            {"key": "status", "values": ["succeeded", "failed"]},
            {"key": "product_type", "values": ["video"]},
        ],
    }
    assert isinstance(result, TaskPage)
    assert (result.count, result.next_cursor, result.has_more) == (2, "c-2", True)
    assert [t.task_status for t in result.tasks] == ["succeed", "failed"]
    assert result.tasks[1].cash_charges[0].currency == "USD"


def test_query_tasks_argument_mistakes_send_nothing(fake):
    now = datetime.now(UTC)
    with key_client(fake.base_url) as client:
        for kwargs in (
            {"limit": 0},
            {"limit": 501},
            {"statuses": ["done"]},
            {"product_types": ["audio"]},
            {"start_time": now, "end_time": now},
            {"start_time": datetime(2026, 1, 1)},  # naive
        ):
            with pytest.raises(ValueError):
                client.query_tasks(**kwargs)
    assert fake.seen == []


def test_iter_task_pages_follows_next_cursor_with_the_same_filters(fake):
    pages = {
        None: {
            "result": [dict(VIDEO_SUCCEEDED, id="a")],
            "count": 1,
            "next_cursor": "c1",
            "has_more": True,
        },
        "c1": {
            "result": [dict(VIDEO_SUCCEEDED, id="b")],
            "count": 1,
            "next_cursor": "c2",
            "has_more": True,
        },
        "c2": {
            "result": [dict(VIDEO_SUCCEEDED, id="c")],
            "count": 1,
            "next_cursor": "",
            "has_more": False,
        },
    }
    fake.routes[("POST", "/tasks")] = lambda seen: (200, envelope(pages[seen.body.get("cursor")]))
    with key_client(fake.base_url) as client:
        got = list(client.iter_task_pages(limit=1, statuses=iter(["processing"])))
    assert [t.task_id for page in got for t in page.tasks] == ["a", "b", "c"]
    bodies = [s.body for s in fake.seen]
    assert [b.get("cursor") for b in bodies] == [None, "c1", "c2"]
    assert all(b["limit"] == 1 for b in bodies)
    assert all(b["filters"] == [{"key": "status", "values": ["processing"]}] for b in bodies)


def test_iter_task_pages_asks_only_for_pages_read_and_stops_on_a_repeated_cursor(fake):
    loop = {"result": [VIDEO_SUCCEEDED], "count": 1, "next_cursor": "same", "has_more": True}
    fake.routes[("POST", "/tasks")] = lambda seen: (200, envelope(loop))
    with key_client(fake.base_url) as client:
        first = next(client.iter_task_pages())
        assert first.next_cursor == "same" and len(fake.seen) == 1
        assert len(list(client.iter_task_pages())) == 2  # "same" then "same" again: stop
        assert len(list(client.iter_task_pages(max_pages=1))) == 1


@pytest.mark.parametrize("bad_key", ["two words", "line\nbreak", "clé-0123456789"])
def test_api_key_that_cannot_be_a_header_is_refused(bad_key):
    with pytest.raises(ValueError, match="printable ASCII"):
        KlingClient(api_key=bad_key, base_url="http://127.0.0.1:9")


def test_failures_never_log_or_show_the_api_key(fake, caplog):
    caplog.set_level("DEBUG")
    fake.routes[("GET", "/tasks")] = lambda seen: (
        500,
        envelope(None, code=5000, message="server error"),
    )
    with key_client(fake.base_url) as client, pytest.raises(KlingError) as info:
        client.get_tasks(["1"])
    assert len(fake.seen) == 3  # 1 + max_retries, each logged
    assert API_KEY not in str(info.value) and API_KEY not in repr(info.value)
    assert API_KEY not in caplog.text


def test_get_task_and_create_task_take_a_new_design_endpoint_name(fake):
    fake.routes[("GET", "/tasks")] = answer_known
    fake.routes[("POST", "/motion-control/kling-3.0")] = lambda seen: (
        200,
        envelope({"id": "m-1", "status": "submitted", "external_id": "x-m"}),
    )
    with key_client(fake.base_url) as client:
        created = client.create_task(
            "motion_control_3_0",
            {"contents": [], "settings": {"character_orientation": "image"}},
        )
        by_id = client.get_task("motion_control_3_0", task_id="t-2")
        by_external = client.get_task("text_to_video_3_0_turbo", external_task_id="x-4")
        with pytest.raises(KlingError) as info:
            client.get_task("motion_control_3_0", task_id="t-3")  # unknown to the vendor
    assert (created.task_id, created.design) == ("m-1", DESIGN_2026)
    assert (by_id.task_id, by_id.task_status) == ("t-2", "succeed")
    assert by_external.external_task_id == "x-4"
    assert info.value.error_class is ErrorClass.NOT_FOUND and not info.value.retryable
    assert [s.raw_path for s in fake.requests("GET", "/tasks")] == [
        "/tasks?task_ids=t-2",
        "/tasks?external_task_ids=x-4",
        "/tasks?task_ids=t-3",
    ]
