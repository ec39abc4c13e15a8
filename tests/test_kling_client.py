"""The Kling client: parsing, JWT, error mapping, and every endpoint against the sandbox.

Unit-level tests first (vendor-shaped dicts copied from kling-docs/, claims decoded with
PyJWT), then integration tests over real HTTP on loopback against the session sandbox
(tests/conftest.py ``sandbox``/``fresh_sandbox``); no transport is mocked.
"""

from __future__ import annotations

import base64
import io
import pickle
import socket
import threading
import time
import uuid
import wave
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import jwt
import pytest
from PIL import Image

from klingweb.kling import (
    FAMILY_PATHS,
    PRESET_ELEMENTS_PATH,
    ErrorClass,
    KlingClient,
    KlingError,
    KlingTask,
    ResourcePack,
    ResultElement,
    ResultImage,
    ResultVideo,
    TokenSigner,
    classify,
    parse_resource_pack,
    parse_task,
)
from tests.conftest import SANDBOX_AK, SANDBOX_SK

# The test keys are shorter than PyJWT's recommended 32 bytes; the vendor chooses key length.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

CREATED_MS = 1722769557708
CREATED_AT = datetime(2024, 8, 4, 11, 5, 57, 708000, tzinfo=UTC)

# -- vendor-shaped objects, as the pages in kling-docs/ show them -------------------------

CREATE_ANSWER = {
    "task_id": "860241374451539998",
    "task_status": "submitted",
    "task_info": {"external_task_id": "a2c0a3b8-ours"},
    "created_at": CREATED_MS,
    "updated_at": CREATED_MS,
}

MULTI_SHOT_DONE = {
    "task_id": "860241374451539999",
    "task_status": "succeed",
    "task_status_msg": "",
    "task_info": {"external_task_id": "ms-1"},
    "task_result": {
        "images": [
            {
                "index": 0,
                "url_1": "https://cdn/a1.png",
                "url_2": "https://cdn/a2.png",
                "url_3": "https://cdn/a3.png",
            },
            {
                "index": 1,
                "url_1": "https://cdn/b1.png",
                "url_2": "https://cdn/b2.png",
                "url_3": "https://cdn/b3.png",
            },
        ]
    },
    "final_unit_deduction": "8",
    "created_at": CREATED_MS,
    "updated_at": CREATED_MS + 60_000,
}

AVATAR_DONE = {
    "task_id": "t-avatar",
    "task_status": "succeed",
    "task_status_msg": "",
    "task_info": {"external_task_id": "av-1"},
    "task_result": {
        "videos": [
            {
                "id": "v-1",
                "url": "https://cdn/v1.mp4",
                "watermark_url": "https://cdn/v1-wm.mp4",
                "duration": "5.1",
            }
        ]
    },
    "watermark_info": {"enabled": True},
    "final_unit_deduction": "12.5",
    "created_at": CREATED_MS,
    "updated_at": CREATED_MS + 1000,
}

EXTEND_DONE = {
    "task_id": "t-extend",
    "task_status": "succeed",
    "task_status_msg": "",
    "task_info": {
        "parent_video": {"id": "v-1", "url": "https://cdn/v1.mp4", "duration": "5.1"},
        "external_task_id": "ext-1",
    },
    "task_result": {
        "videos": [
            {"id": "v-2", "url": "https://cdn/v2.mp4", "watermark_url": "", "duration": "9.6"}
        ]
    },
    "final_unit_deduction": "10",
    "created_at": CREATED_MS,
    "updated_at": CREATED_MS,
}

ELEMENT_DONE = {
    "task_id": "t-element",
    "task_status": "succeed",
    "task_status_msg": "",
    "task_info": {"external_task_id": "el-1"},
    "task_result": {
        "elements": [
            {
                "element_id": 0,
                "element_name": "Pink boy",
                "element_description": "A boy in pink",
                "reference_type": "video_refer",
                "element_image_list": {},
                "element_video_list": {"refer_videos": [{"video_url": "https://cdn/r.mp4"}]},
                "element_voice_info": {
                    "voice_id": "vo-1",
                    "voice_name": "Boy",
                    "trial_url": "https://cdn/trial.mp3",
                    "owned_by": "kling",
                },
                "tag_list": [{"tag_id": "o_102"}],
                "owned_by": "kling",
                "status": "succeed",
            }
        ]
    },
    "final_unit_deduction": "0",
    "created_at": CREATED_MS,
    "updated_at": CREATED_MS,
}

CALLBACK_BODY = {
    "task_id": "t-cb",
    "task_status": "succeed",
    "task_status_msg": "",
    "created_at": CREATED_MS,
    "updated_at": CREATED_MS,
    "final_unit_deduction": "3",
    "task_info": {
        "parent_video": {"id": "p-1", "url": "https://cdn/p.mp4", "duration": "5"},
        "external_task_id": "cb-1",
    },
    "task_result": {
        "images": [{"index": 0, "url": "https://h1.inkwai.com/bs2/upload-ylab-stunt/xxx.png"}],
        "videos": [{"id": "v-9", "url": "https://cdn/v9.mp4", "duration": "5"}],
    },
}


# -- parse_task ---------------------------------------------------------------------------


def test_create_answer_parses_without_result():
    task = parse_task(CREATE_ANSWER)
    assert isinstance(task, KlingTask)
    assert task.task_id == "860241374451539998"
    assert task.task_status == "submitted"
    assert task.external_task_id == "a2c0a3b8-ours"
    assert task.created_at == CREATED_AT
    assert task.created_at.tzinfo is not None and task.created_at.utcoffset() == timedelta(0)
    assert task.final_unit_deduction is None
    assert task.task_status_msg == ""
    assert task.task_result == {}
    assert (task.images, task.videos, task.elements, task.parent_video) == ([], [], [], None)
    assert not task.is_finished


def test_multi_shot_images_keep_url_1_to_url_3_in_order():
    task = parse_task(MULTI_SHOT_DONE)
    assert task.is_finished
    assert task.final_unit_deduction == Decimal("8")
    assert task.updated_at - task.created_at == timedelta(minutes=1)
    assert [image.index for image in task.images] == [0, 1]
    assert task.images[0] == ResultImage(
        index=0,
        urls=["https://cdn/a1.png", "https://cdn/a2.png", "https://cdn/a3.png"],
        raw=MULTI_SHOT_DONE["task_result"]["images"][0],
    )


def test_callback_body_image_with_single_url_and_parent_video():
    task = parse_task(CALLBACK_BODY)
    assert task.images == [
        ResultImage(
            index=0, urls=[CALLBACK_BODY["task_result"]["images"][0]["url"]], raw=task.images[0].raw
        )
    ]
    assert task.parent_video == ResultVideo(
        id="p-1",
        url="https://cdn/p.mp4",
        watermark_url=None,
        duration=Decimal("5"),
        raw=task.parent_video.raw,
    )
    assert task.videos[0].watermark_url is None
    assert task.final_unit_deduction == Decimal("3")
    assert task.external_task_id == "cb-1"


def test_avatar_video_duration_and_units_are_decimals():
    task = parse_task(AVATAR_DONE)
    (video,) = task.videos
    assert video.id == "v-1"
    assert video.url == "https://cdn/v1.mp4"
    assert video.watermark_url == "https://cdn/v1-wm.mp4"
    assert video.duration == Decimal("5.1")
    assert task.final_unit_deduction == Decimal("12.5")
    assert task.raw["watermark_info"] == {"enabled": True}


def test_video_extend_names_parent_video():
    task = parse_task(EXTEND_DONE)
    assert task.parent_video.id == "v-1"
    assert task.parent_video.duration == Decimal("5.1")
    assert task.videos[0].id == "v-2"
    assert task.videos[0].watermark_url is None  # empty string means none


def test_element_result_parsed_and_numeric_id_kept_as_string():
    task = parse_task(ELEMENT_DONE)
    (element,) = task.elements
    assert isinstance(element, ResultElement)
    assert element.element_id == "0"
    assert element.element_name == "Pink boy"
    assert element.reference_type == "video_refer"
    assert element.element_video_list["refer_videos"][0]["video_url"] == "https://cdn/r.mp4"
    assert element.element_voice_info["voice_id"] == "vo-1"
    assert element.tag_list == [{"tag_id": "o_102"}]
    assert element.owned_by == "kling"
    assert element.status == "succeed"
    assert task.final_unit_deduction == Decimal("0")


def test_unknown_fields_are_tolerated_and_kept_in_raw():
    data = dict(
        AVATAR_DONE,
        brand_new_field={"x": 1},
        task_result=dict(AVATAR_DONE["task_result"], audios=[{"id": "a"}]),
    )
    data["task_result"]["videos"] = [dict(AVATAR_DONE["task_result"]["videos"][0], fps=30)]
    task = parse_task(data)
    assert task.raw["brand_new_field"] == {"x": 1}
    assert task.task_result["audios"] == [{"id": "a"}]
    assert task.videos[0].raw["fps"] == 30


def test_malformed_optional_fields_become_none():
    task = parse_task(
        {
            "task_id": 123,
            "task_status": "failed",
            "task_status_msg": "content risk",
            "final_unit_deduction": "n/a",
            "created_at": "soon",
            "updated_at": str(CREATED_MS),
            "task_info": None,
            "task_result": {"images": "nope", "videos": [None, {"id": "v", "url": "u"}]},
        }
    )
    assert task.task_id == "123"
    assert task.task_status_msg == "content risk"
    assert task.final_unit_deduction is None
    assert task.created_at is None
    assert task.updated_at == CREATED_AT
    assert task.external_task_id is None
    assert task.images == []
    assert [video.id for video in task.videos] == ["v"]


def test_parse_task_refuses_non_objects():
    with pytest.raises(TypeError):
        parse_task(["not", "a", "task"])


def test_resource_pack_parses_quantities_and_times():
    raw = {
        "resource_pack_name": "Video pack",
        "resource_pack_id": "rp-1",
        "resource_pack_type": "decreasing_total",
        "total_quantity": 200.0,
        "remaining_quantity": 118.5,
        "purchase_time": CREATED_MS,
        "effective_time": CREATED_MS,
        "invalid_time": CREATED_MS + 86_400_000,
        "status": "online",
    }
    pack = parse_resource_pack(raw)
    assert isinstance(pack, ResourcePack)
    assert pack.total_quantity == Decimal("200.0")
    assert pack.remaining_quantity == Decimal("118.5")
    assert pack.invalid_time - pack.effective_time == timedelta(days=1)
    assert pack.purchase_time == CREATED_AT
    assert pack.status == "online"
    assert pack.raw is raw


# -- JWT ----------------------------------------------------------------------------------


def _claims(token: str) -> dict:
    """The verified claims of ``token`` (signature checked; times checked by the tests)."""
    return jwt.decode(
        token,
        SANDBOX_SK,
        algorithms=["HS256"],
        options={"verify_exp": False, "verify_nbf": False},
    )


def test_token_is_hs256_with_iss_exp_nbf_per_spec():
    client = KlingClient(
        access_key=SANDBOX_AK, secret_key=SANDBOX_SK, base_url="http://127.0.0.1:9"
    )
    before = int(time.time())
    token = client.token()
    after = int(time.time())
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = _claims(token)
    assert set(claims) == {"iss", "exp", "nbf"}
    assert claims["iss"] == SANDBOX_AK
    assert before + 1800 <= claims["exp"] <= after + 1800
    assert before - 5 <= claims["nbf"] <= after - 5
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret", algorithms=["HS256"])
    client.close()


def test_token_is_cached_and_re_signed_five_minutes_before_expiry():
    wall, mono = [1_700_000_000.0], [0.0]
    signer = TokenSigner(
        access_key=SANDBOX_AK,
        secret_key=SANDBOX_SK,
        clock=lambda: wall[0],
        monotonic=lambda: mono[0],
    )
    first = signer.token()
    assert _claims(first)["exp"] == 1_700_000_000 + 1800
    wall[0] += 1499
    mono[0] += 1499  # 25 min later: 5 min + 1 s of life left, still in use
    assert signer.token() == first
    wall[0] += 1
    mono[0] += 1  # exactly 5 min left: re-signed
    second = signer.token()
    assert second != first
    assert _claims(second)["exp"] == 1_700_000_000 + 1500 + 1800
    assert signer.token(force=True) == second  # same second, same claims
    assert signer.token() == second


def test_token_signing_is_thread_safe_one_signature_for_many_threads():
    calls = []

    def clock() -> float:
        calls.append(1)
        time.sleep(0.01)  # widen the race window
        return time.time()

    signer = TokenSigner(access_key=SANDBOX_AK, secret_key=SANDBOX_SK, clock=clock)
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(signer.token())) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(set(tokens)) == 1 and len(tokens) == 16


def test_client_refuses_missing_credentials():
    with pytest.raises(ValueError):
        KlingClient(access_key="", secret_key="x")


def test_get_task_refuses_an_unknown_family_and_needs_exactly_one_id():
    client = KlingClient(access_key="a", secret_key="b", base_url="http://127.0.0.1:9")
    with pytest.raises(ValueError):
        client.get_task("nope", task_id="1")
    with pytest.raises(ValueError):
        client.get_task("avatar")
    with pytest.raises(ValueError):
        client.get_task("avatar", task_id="1", external_task_id="2")
    client.close()


# -- error mapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "http_status", "error_class", "retryable"),
    [
        (1000, 401, ErrorClass.AUTHENTICATION, False),
        (1001, 401, ErrorClass.AUTHENTICATION, False),
        (1002, 401, ErrorClass.AUTHENTICATION, False),
        (1003, 401, ErrorClass.AUTHENTICATION, False),
        (1004, 401, ErrorClass.AUTHENTICATION, False),
        (1100, 429, ErrorClass.ACCOUNT, False),
        (1101, 429, ErrorClass.ACCOUNT, False),
        (1102, 429, ErrorClass.ACCOUNT, False),
        (1103, 403, ErrorClass.PERMISSION, False),
        (1200, 400, ErrorClass.INVALID_REQUEST, False),
        (1201, 400, ErrorClass.INVALID_REQUEST, False),
        (1202, 404, ErrorClass.NOT_FOUND, False),
        (1203, 404, ErrorClass.NOT_FOUND, False),
        (1300, 400, ErrorClass.POLICY, False),
        (1301, 400, ErrorClass.POLICY, False),
        (1302, 429, ErrorClass.RATE_LIMIT, True),
        (1303, 429, ErrorClass.CONCURRENCY, True),
        (1304, 429, ErrorClass.PERMISSION, False),
        (5000, 500, ErrorClass.SERVER, True),
        (5001, 503, ErrorClass.SERVER, True),
        (5002, 504, ErrorClass.SERVER, True),
        (9999, 502, ErrorClass.SERVER, True),  # unknown code: by HTTP status
        (9999, 429, ErrorClass.INVALID_REQUEST, False),
        (None, 400, ErrorClass.INVALID_REQUEST, False),
        (None, None, ErrorClass.NETWORK, True),
    ],
)
def test_code_maps_to_error_class(code, http_status, error_class, retryable):
    assert classify(code, http_status) is error_class
    error = KlingError("boom", http_status=http_status, code=code, request_id="rq-1")
    assert error.error_class is error_class
    assert error.retryable is retryable


def test_error_is_one_line_and_survives_pickling():
    error = KlingError("field\nprompt: too long", http_status=400, code=1201, request_id="rq-9")
    assert "\n" not in str(error)
    assert "1201" in str(error) and "rq-9" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, copy.http_status, copy.request_id, copy.message, copy.error_class) == (
        1201,
        400,
        "rq-9",
        "field\nprompt: too long",
        ErrorClass.INVALID_REQUEST,
    )


# == against the sandbox (real HTTP on loopback) ==========================================


class CountingTransport(httpx.HTTPTransport):
    """The real HTTP transport, noting each request's method and path (to count re-sends)."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        return super().handle_request(request)

    def count(self, method: str) -> int:
        return sum(1 for seen, _ in self.requests if seen == method)


def png_b64(width: int = 512, height: int = 512) -> str:
    """A real PNG as raw Base64 (no ``data:`` prefix), passing the vendor's image rule."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 160)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def wav_b64(seconds: float = 2.5, rate: int = 8000) -> str:
    """A real WAV of silence as raw Base64 (2–300 s, ≤ 5 MB)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(seconds * rate))
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def new_external_id() -> str:
    return f"test-{uuid.uuid4()}"


def create_body(family: str) -> dict:
    """A valid create body for ``family`` (video_extend needs a video id; see its test)."""
    if family == "multi_shot":
        return {"element_frontal_image": png_b64()}
    if family == "avatar":
        return {"image": png_b64(), "sound_file": wav_b64(), "prompt": "Waves hello", "mode": "std"}
    if family == "text2video":
        return {
            "model_name": "kling-v1-6",
            "prompt": "A corgi runs on a beach",
            "mode": "std",
            "aspect_ratio": "16:9",
            "duration": "5",
        }
    if family == "image2video":
        return {
            "model_name": "kling-v1-6",
            "image": png_b64(),
            "prompt": "Slow zoom",
            "duration": "5",
        }
    if family == "element":
        return {
            "element_name": "Pink boy",
            "element_description": "A boy in a pink hoodie",
            "reference_type": "image_refer",
            "element_image_list": {
                "frontal_image": png_b64(),
                "refer_images": [{"image_url": png_b64(600, 400)}],
            },
            "tag_list": [{"tag_id": "o_102"}],
        }
    raise AssertionError(family)


def free_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_client(base_url: str, **overrides) -> KlingClient:
    options = {
        "access_key": SANDBOX_AK,
        "secret_key": SANDBOX_SK,
        "base_url": base_url,
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
        "max_retries": 2,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
    }
    options.update(overrides)
    return KlingClient(**options)


@pytest.fixture
def client(fresh_sandbox):
    """A client of the sandbox's test account, with short backoffs."""
    with make_client(fresh_sandbox.base_url) as kling:
        yield kling


def tasks_with_external_id(server, external_task_id: str) -> list[dict]:
    return [t for t in server.tasks_snapshot() if t["external_task_id"] == external_task_id]


def finish(server, client: KlingClient, family: str, task: KlingTask) -> KlingTask:
    """Run the sandbox clock past the task's end and query it again."""
    server.advance(2.0)
    return client.get_task(family, task_id=task.task_id)


# -- every endpoint -----------------------------------------------------------------------


def test_every_family_path_is_one_the_sandbox_serves(fresh_sandbox, client):
    """The list call of each family the client knows, and the preset list, go to a path the
    sandbox (written from the vendor pages, independently of the client) answers with a
    page of tasks; a path it does not know is refused, so the check can fail."""
    transport = CountingTransport()
    with make_client(fresh_sandbox.base_url, transport=transport) as kling:
        for family in FAMILY_PATHS:
            assert isinstance(kling.list_tasks(family, page_size=1), list), family
        assert isinstance(kling.list_preset_elements(page_size=1), list)
    assert transport.requests == [
        ("GET", path) for path in [*FAMILY_PATHS.values(), PRESET_ELEMENTS_PATH]
    ]
    unknown = httpx.get(
        fresh_sandbox.base_url + "/v1/videos/no-such-family",
        headers={"Authorization": f"Bearer {client.token()}"},
    )
    assert unknown.status_code == 404


@pytest.mark.parametrize("family", ["multi_shot", "avatar", "text2video", "image2video", "element"])
def test_create_get_by_both_ids_and_list_each_family(fresh_sandbox, client, family):
    external = new_external_id()
    created = getattr(client, f"create_{family}")(create_body(family), external_task_id=external)
    assert created.task_status == "submitted"
    assert created.task_id
    assert created.external_task_id == external
    assert created.created_at is not None and created.created_at.tzinfo is not None

    getter = getattr(client, f"get_{family}")
    by_id = getter(created.task_id)
    by_external = getter(external_task_id=external)
    assert by_id.task_id == by_external.task_id == created.task_id
    assert by_external.external_task_id == external
    assert by_id.task_status in ("submitted", "processing")
    assert by_id.final_unit_deduction in (None, Decimal(0))

    done = finish(fresh_sandbox, client, family, created)
    assert done.task_status == "succeed"
    assert done.updated_at >= done.created_at
    if family == "element":
        assert done.final_unit_deduction is not None
        (element,) = done.elements
        assert element.element_name == "Pink boy"
        assert element.status == "succeed"
        assert element.element_id
    else:
        assert done.final_unit_deduction > 0
    if family == "multi_shot":
        assert len(done.images) == 3
        assert all(len(image.urls) == 3 for image in done.images)
        picture = httpx.get(done.images[0].urls[0])
        assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
    if family in ("avatar", "text2video", "image2video"):
        (video,) = done.videos
        assert video.id and video.url.startswith(fresh_sandbox.base_url)
        assert video.duration > 0

    listed = getattr(client, f"list_{family}")(page=1, page_size=500)
    assert listed[0].task_id == created.task_id  # newest first
    assert client.list_tasks(family, page=1, page_size=1)[0].task_id == created.task_id
    assert {t.task_id for t in listed} >= {created.task_id}
    assert all(isinstance(t, KlingTask) for t in listed)


def test_external_task_id_with_reserved_characters_round_trips(fresh_sandbox, client):
    # The id goes percent-encoded into the path (RFC 3986); the vendor decodes it.
    external = f"team blue:täsk-{uuid.uuid4()}"
    created = client.create_text2video(create_body("text2video"), external_task_id=external)
    assert client.get_text2video(external_task_id=external).task_id == created.task_id


def test_video_extend_of_a_generated_video_names_its_parent(fresh_sandbox, client):
    source = finish(
        fresh_sandbox,
        client,
        "text2video",
        client.create_text2video(create_body("text2video"), external_task_id=new_external_id()),
    )
    (video,) = source.videos
    external = new_external_id()
    created = client.create_video_extend(
        video_id=video.id, prompt="A puppy appears", external_task_id=external
    )
    assert created.task_status == "submitted"
    assert client.get_video_extend(external_task_id=external).task_id == created.task_id
    done = finish(fresh_sandbox, client, "video_extend", created)
    assert done.task_status == "succeed"
    assert done.parent_video is not None and done.parent_video.id == video.id
    assert done.parent_video.duration == video.duration
    assert done.videos[0].duration > video.duration
    assert client.list_video_extend()[0].task_id == created.task_id


def test_list_preset_elements_are_official(client):
    presets = client.list_preset_elements(page=1, page_size=30)
    assert presets
    elements = [element for task in presets for element in task.elements]
    assert elements and all(element.owned_by == "kling" for element in elements)
    assert all(element.element_name for element in elements)
    assert len(client.list_preset_elements(page=1, page_size=1)) == 1


def test_delete_element_marks_it_deleted(fresh_sandbox, client):
    created = client.create_element(create_body("element"), external_task_id=new_external_id())
    element = finish(fresh_sandbox, client, "element", created).elements[0]
    answer = client.delete_element(element.element_id)
    assert answer["task_id"]
    assert client.get_element(created.task_id).elements[0].status == "deleted"
    with pytest.raises(KlingError) as info:
        client.delete_element("123456789")
    assert info.value.error_class is ErrorClass.NOT_FOUND


def test_account_costs_remaining_units_drop_by_what_a_task_cost(fresh_sandbox, client):
    end = datetime.now(UTC)
    (before,) = client.account_costs(start_time=end - timedelta(days=30), end_time=end)
    assert before.resource_pack_type in ("decreasing_total", "constant_period")
    assert before.status == "online"
    assert before.remaining_quantity <= before.total_quantity
    assert before.effective_time is not None and before.invalid_time > before.effective_time
    done = finish(
        fresh_sandbox,
        client,
        "text2video",
        client.create_text2video(create_body("text2video"), external_task_id=new_external_id()),
    )
    end = datetime.now(UTC)
    (after,) = client.account_costs(
        start_time=end - timedelta(days=30),
        end_time=end,
        resource_pack_name=before.resource_pack_name,
    )
    assert after.resource_pack_id == before.resource_pack_id
    assert before.remaining_quantity - after.remaining_quantity == done.final_unit_deduction
    assert client.account_costs(start_time=end, end_time=end, resource_pack_name="no such") == []
    with pytest.raises(ValueError):
        client.account_costs(start_time=datetime(2024, 1, 1), end_time=end)


def test_failed_task_carries_its_reason(fresh_sandbox, client):
    body = dict(create_body("text2video"), prompt="sandbox:fail please")
    done = finish(fresh_sandbox, client, "text2video", client.create_text2video(body))
    assert done.task_status == "failed"
    assert done.task_status_msg
    assert done.final_unit_deduction == Decimal(0)
    assert done.videos == []


# -- errors, provoked and mapped ----------------------------------------------------------


def test_bad_signature_is_authentication_1002(fresh_sandbox):
    with (
        make_client(fresh_sandbox.base_url, secret_key="not-the-secret-key-0123456789") as bad,
        pytest.raises(KlingError) as info,
    ):
        bad.list_tasks("avatar")
    error = info.value
    assert (error.code, error.http_status, error.error_class) == (
        1002,
        401,
        ErrorClass.AUTHENTICATION,
    )
    assert error.request_id and error.message
    assert not error.retryable


def test_unknown_access_key_is_authentication(fresh_sandbox):
    with (
        make_client(fresh_sandbox.base_url, access_key="nobody") as bad,
        pytest.raises(KlingError) as info,
    ):
        bad.get_avatar("1")
    assert info.value.error_class is ErrorClass.AUTHENTICATION
    assert info.value.code == 1002


def test_expired_token_1004_is_re_signed_and_retried_once(fresh_sandbox, client):
    client.signer.clock = lambda: time.time() - 3600  # wall clock an hour behind when signing
    stale = client.token()
    client.signer.clock = time.time  # clock corrected; the cached token is still in use
    assert client.token() == stale
    raw = httpx.get(
        fresh_sandbox.base_url + FAMILY_PATHS["avatar"],
        headers={"Authorization": f"Bearer {stale}"},
    ).json()
    assert raw["code"] == 1004  # what the vendor says about the cached token

    transport = CountingTransport()
    with make_client(fresh_sandbox.base_url, transport=transport) as counted:
        counted.signer.clock = lambda: time.time() - 3600
        stale = counted.token()
        counted.signer.clock = time.time
        assert isinstance(counted.list_tasks("avatar"), list)
        fresh = counted.token()
    assert fresh != stale
    assert _claims(fresh)["exp"] > time.time() + 1700
    assert transport.count("GET") == 2  # the refused call, then the re-signed one


def test_expired_token_that_stays_expired_raises_1004(fresh_sandbox, client):
    client.signer.clock = lambda: time.time() - 3600
    with pytest.raises(KlingError) as info:
        client.list_tasks("avatar")
    assert (info.value.code, info.value.http_status) == (1004, 401)
    assert info.value.error_class is ErrorClass.AUTHENTICATION


def test_token_not_yet_valid_is_1003(fresh_sandbox, client):
    client.signer.clock = lambda: time.time() + 3600  # nbf an hour in the future
    with pytest.raises(KlingError) as info:
        client.list_tasks("avatar")
    assert (info.value.code, info.value.http_status) == (1003, 401)
    assert info.value.error_class is ErrorClass.AUTHENTICATION


def test_invalid_field_is_1201_naming_the_field(fresh_sandbox, client):
    with pytest.raises(KlingError) as info:
        client.create_avatar(sound_file=wav_b64(), external_task_id=new_external_id())
    error = info.value
    assert (error.code, error.http_status, error.error_class) == (
        1201,
        400,
        ErrorClass.INVALID_REQUEST,
    )
    assert "image" in error.message
    assert error.request_id
    assert not error.retryable


def test_page_size_out_of_range_is_1201(client):
    with pytest.raises(KlingError) as info:
        client.list_tasks("text2video", page=1, page_size=501)
    assert info.value.code == 1201
    assert "pageSize" in info.value.message


def test_create_is_idempotent_by_external_task_id(fresh_sandbox, client):
    external = new_external_id()
    first = client.create_text2video(create_body("text2video"), external_task_id=external)
    raw = httpx.post(
        fresh_sandbox.base_url + FAMILY_PATHS["text2video"],
        json=dict(create_body("text2video"), external_task_id=external),
        headers={"Authorization": f"Bearer {client.token()}"},
    ).json()
    assert raw["code"] == 1201 and "external_task_id" in raw["message"]  # the vendor refuses
    again = client.create_text2video(create_body("text2video"), external_task_id=external)
    assert again.task_id == first.task_id  # ... and the client answers with the existing task
    assert len(tasks_with_external_id(fresh_sandbox, external)) == 1


@pytest.mark.parametrize("which", ["task_id", "external_task_id"])
def test_unknown_task_is_not_found_1203(client, which):
    with pytest.raises(KlingError) as info:
        client.get_task("avatar", **{which: f"no-such-{uuid.uuid4()}"})
    error = info.value
    assert (error.code, error.http_status, error.error_class) == (1203, 404, ErrorClass.NOT_FOUND)
    assert not error.retryable


def test_concurrency_1303_on_create_is_raised_not_retried(fresh_sandbox):
    fresh_sandbox.config.create_concurrency_rate = 1.0
    transport = CountingTransport()
    external = new_external_id()
    with (
        make_client(fresh_sandbox.base_url, transport=transport) as kling,
        pytest.raises(KlingError) as info,
    ):
        kling.create_text2video(create_body("text2video"), external_task_id=external)
    error = info.value
    assert (error.code, error.http_status, error.error_class) == (1303, 429, ErrorClass.CONCURRENCY)
    assert error.retryable
    assert transport.count("POST") == 1
    assert tasks_with_external_id(fresh_sandbox, external) == []


def test_rate_limit_1302_on_create(fresh_sandbox, client):
    fresh_sandbox.config.create_rate_limit_rate = 1.0
    with pytest.raises(KlingError) as info:
        client.create_text2video(create_body("text2video"))
    assert (info.value.code, info.value.error_class) == (1302, ErrorClass.RATE_LIMIT)
    assert info.value.retryable


def test_concurrency_limit_refuses_creates_beyond_it(fresh_sandbox, client):
    fresh_sandbox.advance(5.0)  # finish whatever earlier tests left running
    fresh_sandbox.config.concurrency_limit = 1
    client.create_text2video(create_body("text2video"))
    with pytest.raises(KlingError) as info:
        client.create_text2video(create_body("text2video"))
    assert info.value.error_class is ErrorClass.CONCURRENCY
    fresh_sandbox.advance(2.0)
    assert client.create_text2video(create_body("text2video")).task_status == "submitted"


def test_server_error_query_retries_then_raises_5000(fresh_sandbox):
    fresh_sandbox.config.error_rate = 1.0
    transport = CountingTransport()
    with (
        make_client(fresh_sandbox.base_url, transport=transport, max_retries=3) as kling,
        pytest.raises(KlingError) as info,
    ):
        kling.list_tasks("avatar")
    error = info.value
    assert error.error_class is ErrorClass.SERVER
    assert error.code in (5000, 5001) and error.http_status in (500, 503)
    assert error.retryable and error.request_id
    assert transport.count("GET") == 4  # 1 + max_retries


def test_server_error_on_create_is_sent_once(fresh_sandbox):
    fresh_sandbox.config.error_rate = 1.0
    transport = CountingTransport()
    with (
        make_client(fresh_sandbox.base_url, transport=transport) as kling,
        pytest.raises(KlingError) as info,
    ):
        kling.create_text2video(create_body("text2video"), external_task_id=new_external_id())
    assert info.value.error_class is ErrorClass.SERVER
    assert transport.count("POST") == 1


def test_query_recovers_when_server_errors_stop(fresh_sandbox):
    fresh_sandbox.config.error_rate = 1.0
    timer = threading.Timer(0.1, setattr, (fresh_sandbox.config, "error_rate", 0.0))
    timer.start()
    try:
        with make_client(
            fresh_sandbox.base_url, max_retries=10, backoff_base=0.05, backoff_max=0.2
        ) as kling:
            assert isinstance(kling.list_tasks("avatar"), list)
    finally:
        timer.join()


def test_closed_port_is_a_network_error(fresh_sandbox):
    transport = CountingTransport()
    with (
        make_client(f"http://127.0.0.1:{free_port()}", transport=transport) as kling,
        pytest.raises(KlingError) as info,
    ):
        kling.get_avatar("1")
        error = info.value
        assert error.error_class is ErrorClass.NETWORK
        assert (error.code, error.http_status, error.request_id) == (None, None, None)
        assert error.retryable
        assert isinstance(error.__cause__, httpx.ConnectError)
        assert transport.count("GET") == 3  # 1 + max_retries
        # Nothing reached anyone: a create may be tried again, still bounded.
        with pytest.raises(KlingError) as info:
            kling.create_text2video(create_body("text2video"), external_task_id=new_external_id())
        assert info.value.error_class is ErrorClass.NETWORK
        assert transport.count("POST") == 3


# -- create timeout -> lookup by external_task_id -----------------------------------------


def _later(seconds: float, config, **knobs) -> threading.Timer:
    def apply() -> None:
        for name, value in knobs.items():
            setattr(config, name, value)

    timer = threading.Timer(seconds, apply)
    timer.start()
    return timer


def test_create_timeout_finds_the_task_by_external_task_id(fresh_sandbox):
    # The sandbox creates the task, then answers 1 s late; the client gives up after 0.4 s.
    fresh_sandbox.config.latency = 1.0
    timer = _later(0.7, fresh_sandbox.config, latency=0.0)
    transport = CountingTransport()
    external = new_external_id()
    try:
        with make_client(fresh_sandbox.base_url, read_timeout=0.4, transport=transport) as kling:
            task = kling.create_text2video(create_body("text2video"), external_task_id=external)
    finally:
        timer.join()
    assert task.external_task_id == external
    (only,) = tasks_with_external_id(fresh_sandbox, external)
    assert only["task_id"] == task.task_id
    assert transport.count("POST") == 1  # found by the lookup: never sent again
    assert transport.count("GET") >= 1


def test_create_timeout_with_nothing_created_sends_again(fresh_sandbox):
    # The first create fails inside the vendor (5000) and its answer is lost (timeout); the
    # lookup answers NOT_FOUND once the faults stop, so the client sends the create again.
    fresh_sandbox.config.error_rate = 1.0
    fresh_sandbox.config.latency = 0.6
    timer = _later(0.45, fresh_sandbox.config, error_rate=0.0, latency=0.0)
    transport = CountingTransport()
    external = new_external_id()
    try:
        with make_client(
            fresh_sandbox.base_url, read_timeout=0.3, max_retries=3, transport=transport
        ) as kling:
            task = kling.create_text2video(create_body("text2video"), external_task_id=external)
    finally:
        timer.join()
    (only,) = tasks_with_external_id(fresh_sandbox, external)
    assert only["task_id"] == task.task_id
    assert transport.count("POST") == 2


def test_create_timeout_without_external_task_id_is_a_network_error(fresh_sandbox):
    fresh_sandbox.config.latency = 0.6
    before = len(fresh_sandbox.tasks_snapshot())
    transport = CountingTransport()
    try:
        with (
            make_client(fresh_sandbox.base_url, read_timeout=0.3, transport=transport) as kling,
            pytest.raises(KlingError) as info,
        ):
            kling.create_text2video(create_body("text2video"))
    finally:
        fresh_sandbox.config.latency = 0.0
    assert info.value.error_class is ErrorClass.NETWORK
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert transport.requests == [("POST", FAMILY_PATHS["text2video"])]  # never re-sent blindly
    assert len(fresh_sandbox.tasks_snapshot()) == before + 1


def test_create_timeout_with_unreachable_lookup_raises_network(fresh_sandbox):
    # Latency never stops: the lookup times out too, so the outcome stays unknown.
    fresh_sandbox.config.latency = 0.4
    external = new_external_id()
    transport = CountingTransport()
    try:
        with (
            make_client(
                fresh_sandbox.base_url, read_timeout=0.2, max_retries=1, transport=transport
            ) as kling,
            pytest.raises(KlingError) as info,
        ):
            kling.create_text2video(create_body("text2video"), external_task_id=external)
    finally:
        fresh_sandbox.config.latency = 0.0
    assert info.value.error_class is ErrorClass.NETWORK
    assert transport.count("POST") == 1
    assert len(tasks_with_external_id(fresh_sandbox, external)) == 1


def test_iter_tasks_reads_pages_until_a_short_page(fresh_sandbox, client):
    """Pages of three, newest first, full until the short page that ends the loop."""
    created = [
        client.create_text2video(create_body("text2video"), external_task_id=new_external_id())
        for _ in range(7)
    ]
    pages = list(client.iter_tasks("text2video", page_size=3))
    assert all(len(page) == 3 for page in pages[:-1]) and len(pages[-1]) < 3
    seen = [task.task_id for page in pages for task in page]
    assert len(seen) == len(set(seen))
    assert {task.task_id for task in created} <= set(seen)
    assert seen[:7] == [task.task_id for task in reversed(created)]  # newest first


def test_iter_tasks_asks_for_no_page_the_caller_does_not_read(fresh_sandbox):
    """Breaking after the first page sends exactly one list request over the wire."""
    sent: list[str] = []

    class Counting(httpx.HTTPTransport):
        def handle_request(self, request):
            sent.append(request.method + " " + request.url.path)
            return super().handle_request(request)

    with make_client(fresh_sandbox.base_url, transport=Counting()) as kling:
        for _ in range(4):
            kling.create_text2video(create_body("text2video"), external_task_id=new_external_id())
        sent.clear()
        first = next(iter(kling.iter_tasks("text2video", page_size=2)))
    assert len(first) == 2
    assert sent == ["GET /v1/videos/text2video"]


def test_backoff_delay_grows_doubles_and_is_capped():
    from klingweb.kling.backoff import backoff_delay

    assert [backoff_delay(n, base=2, cap=30) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
    assert backoff_delay(0, base=2, cap=30) == 2
    jittered = [backoff_delay(3, base=1, cap=60, jitter=(0.5, 1.0)) for _ in range(50)]
    assert all(2.0 <= d <= 4.0 for d in jittered) and len(set(jittered)) > 1
    with pytest.raises(ValueError):
        backoff_delay(1, base=1, cap=1, jitter=(1.0, 0.5))
