"""The Kling sandbox over real HTTP, with httpx and PyJWT only (never through klingweb.kling).

Most tests use this module's own sandbox (a slow 30 s task clock moved by ``advance``, so
real time never makes a task progress during a test) and a fresh account per test, so lists
and limits start empty. The auth tests use the session sandbox ``fresh_sandbox``.
"""

from __future__ import annotations

import base64
import io
import json
import math
import threading
import time
import uuid
import warnings
import wave
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import httpx
import jwt
import pytest
from PIL import Image

from klingweb.sandbox import SandboxConfig, SandboxServer
from tests.conftest import SANDBOX_AK, SANDBOX_SK

# The session sandbox's test secret is shorter than PyJWT's recommended 32 bytes.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

TASK_SECONDS = 30.0
T2V = "/v1/videos/text2video"
I2V = "/v1/videos/image2video"
AVATAR = "/v1/videos/avatar/image2video"
EXTEND = "/v1/videos/video-extend"
MULTI = "/v1/general/ai-multi-shot"
ELEMENTS = "/v1/general/advanced-custom-elements"
PRESETS = "/v1/general/advanced-presets-elements"
DELETE = "/v1/general/delete-elements"
COSTS = "/account/costs"


# ----- helpers ---------------------------------------------------------------------------


def make_token(ak: str, sk: str, *, exp_in: float = 1800, nbf_in: float = -5, **claims) -> str:
    """An HS256 JWT as the vendor wants it (KLING_API.md §1), with adjustable times."""
    now = time.time()
    payload = {"iss": ak, "exp": int(now + exp_in), "nbf": int(now + nbf_in), **claims}
    with warnings.catch_warnings():  # the session sandbox's test secret is < 32 bytes
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(payload, sk, algorithm="HS256", headers={"typ": "JWT"})


def api(server: SandboxServer, ak: str, sk: str) -> httpx.Client:
    """An httpx client for ``server`` signed as ``ak``."""
    return httpx.Client(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {make_token(ak, sk)}"},
        trust_env=False,
        timeout=30,
    )


def png_b64(width: int = 400, height: int = 400, *, fmt: str = "PNG", pad: int = 0) -> str:
    """Raw Base64 of a ``width`` x ``height`` image (``pad`` junk bytes appended)."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 40)).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue() + b"\0" * pad).decode()


def wav_b64(seconds: float, *, rate: int = 8000, channels: int = 1) -> str:
    """Raw Base64 of a silent 16-bit WAV lasting ``seconds``."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * channels * round(rate * seconds))
    return base64.b64encode(buf.getvalue()).decode()


def mp3_b64(seconds: float) -> str:
    """Raw Base64 of a silent MP3 (PyAV) lasting about ``seconds``."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as container:
        stream = container.add_stream("mp3", rate=44100)
        stream.layout = "mono"
        frames = math.ceil(seconds * 44100 / 1152)
        for i in range(frames):
            frame = av.AudioFrame(format=stream.format.name, layout="mono", samples=1152)
            frame.sample_rate = 44100
            frame.pts = i * 1152
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return base64.b64encode(buf.getvalue()).decode()


IMG = png_b64()
SOUND = wav_b64(3)


def element_body(**overrides) -> dict:
    """A valid image_refer element body."""
    body = {
        "element_name": "Hero",
        "element_description": "Our hero in a red coat",
        "reference_type": "image_refer",
        "element_image_list": {
            "frontal_image": IMG,
            "refer_images": [{"image_url": "https://example.com/side.png"}],
        },
        "tag_list": [{"tag_id": "o_102"}],
    }
    body.update(overrides)
    return body


VALID = {
    MULTI: lambda: {"element_frontal_image": IMG},
    AVATAR: lambda: {"image": IMG, "sound_file": SOUND, "prompt": "smiles", "mode": "std"},
    T2V: lambda: {"prompt": "a cat surfing", "mode": "std", "duration": "5"},
    I2V: lambda: {"image": IMG, "prompt": "the cat jumps", "duration": "5"},
    ELEMENTS: element_body,
}


@pytest.fixture(scope="module")
def server():
    """This module's own sandbox: a slow clock (moved with ``advance``) and a fixed seed."""
    srv = SandboxServer(
        SandboxConfig(accounts={}, task_seconds=TASK_SECONDS, seed=7), host="127.0.0.1", port=0
    ).start()
    yield srv
    srv.stop()


@pytest.fixture
def sb(server):
    """The module sandbox with its fault knobs reset around the test."""
    server.reset_faults()
    yield server
    server.reset_faults()


@pytest.fixture(scope="module")
def shared_http(server):
    """One httpx client for the module (creating one costs ~50 ms of TLS set-up)."""
    with httpx.Client(base_url=server.base_url, trust_env=False, timeout=30) as http:
        yield http


@pytest.fixture
def client(sb, shared_http):
    """An httpx client signed as a brand-new account of ``sb`` (empty task list, own
    limits); ``client.account`` is its access key."""
    ak, sk = f"ak-{uuid.uuid4().hex[:12]}", f"sk-{uuid.uuid4().hex}"
    sb.config.accounts[ak] = sk
    shared_http.headers["Authorization"] = f"Bearer {make_token(ak, sk)}"
    shared_http.account = ak
    return shared_http


_plain: list[httpx.Client] = []


def fetch(url: str, **kwargs) -> httpx.Response:
    """GET ``url`` without credentials (one client reused: creating one costs ~50 ms)."""
    if not _plain:
        _plain.append(httpx.Client(trust_env=False, timeout=30))
    return _plain[0].get(url, **kwargs)


def ok(response: httpx.Response) -> object:
    """Assert a success envelope and return ``data``."""
    body = response.json()
    assert response.status_code == 200, body
    assert body["code"] == 0, body
    assert body["request_id"]
    return body["data"]


def refused(response: httpx.Response, http_status: int, code: int) -> str:
    """Assert an error envelope and return its message."""
    body = response.json()
    assert (response.status_code, body["code"]) == (http_status, code), body
    assert body["request_id"] and body["data"] is None
    return body["message"]


class Receiver:
    """A tiny HTTP server that records JSON POST bodies (a callback receiver)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook/abc"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    """A running callback receiver."""
    rec = Receiver()
    yield rec
    rec.close()


# ----- authentication (KLING_API.md §1, §2) ---------------------------------------------------


def _get(server, headers):
    return fetch(f"{server.base_url}{T2V}", headers=headers)


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, 1001),
        ("", 1001),
        ("Bearer", 1001),
        ("Basic dXNlcjpwYXNz", 1002),
        ("Bearer not-a-jwt", 1002),
        ("Bearer " + make_token(SANDBOX_AK, "wrong-secret-key-0123456789abcdef"), 1002),
        ("Bearer " + make_token("unknown-access-key", SANDBOX_SK), 1002),
        ("Bearer " + make_token(SANDBOX_AK, SANDBOX_SK, nbf_in=86_400), 1003),
        ("Bearer " + make_token(SANDBOX_AK, SANDBOX_SK, exp_in=-10, nbf_in=-100), 1004),
    ],
    ids=["no-header", "empty", "bearer-empty", "basic", "malformed", "bad-signature",
         "unknown-issuer", "not-yet-valid", "expired"],
)  # fmt: skip
def test_auth_failures_answer_401_with_vendor_code(fresh_sandbox, header, code):
    headers = {} if header is None else {"Authorization": header}
    refused(_get(fresh_sandbox, headers), 401, code)


def test_valid_token_is_accepted_and_request_ids_are_unique(fresh_sandbox):
    headers = {"Authorization": f"Bearer {make_token(SANDBOX_AK, SANDBOX_SK)}"}
    first, second = _get(fresh_sandbox, headers), _get(fresh_sandbox, headers)
    assert isinstance(ok(first), list)
    assert first.json()["request_id"] != second.json()["request_id"]


def test_token_without_exp_is_refused(fresh_sandbox):
    token = jwt.encode({"iss": SANDBOX_AK}, SANDBOX_SK, algorithm="HS256")
    refused(_get(fresh_sandbox, {"Authorization": f"Bearer {token}"}), 401, 1002)


def test_advancing_the_sandbox_clock_does_not_expire_tokens(sb, client):
    sb.advance(3600)
    assert ok(client.get(T2V)) == []


# ----- routing and envelope ----------------------------------------------------------------------


def test_unknown_path_answers_404_1202(client):
    refused(client.get("/v1/videos/nothing-here"), 404, 1202)
    refused(client.delete(T2V), 404, 1202)


def test_unknown_task_answers_404_1203(client):
    refused(client.get(f"{T2V}/123456789"), 404, 1203)


def test_invalid_json_body_is_refused(client):
    message = refused(
        client.post(T2V, content=b"{nope", headers={"Content-Type": "application/json"}), 400, 1201
    )
    assert "request body" in message


# ----- life cycle, costs and results (KLING_API.md §4) ------------------------------------------


def test_task_runs_submitted_processing_succeed_on_the_sandbox_clock(sb, client):
    created = ok(client.post(T2V, json={"prompt": "a cat", "mode": "pro", "duration": "10"}))
    assert created["task_status"] == "submitted"
    assert set(created) >= {"task_id", "task_info", "created_at", "updated_at"}
    assert created["created_at"] > 1_600_000_000_000  # milliseconds
    tid = created["task_id"]

    sb.advance(TASK_SECONDS / 3 + 0.5)
    assert ok(client.get(f"{T2V}/{tid}"))["task_status"] == "processing"

    sb.advance(TASK_SECONDS)
    task = ok(client.get(f"{T2V}/{tid}"))
    assert task["task_status"] == "succeed"
    # Price table: an unlisted old model (kling-v1) at pro = 0.5 units/s, × 10 s.
    assert task["final_unit_deduction"] == "5"
    assert isinstance(task["final_unit_deduction"], str)
    assert task["updated_at"] - task["created_at"] == int(TASK_SECONDS * 1000)
    [video] = task["task_result"]["videos"]
    assert set(video) == {"id", "url", "watermark_url", "duration"}
    assert video["duration"] == "10.1"
    assert video["url"].startswith(f"{sb.base_url}/sandbox-media/")
    snap = {t["task_id"]: t for t in sb.tasks_snapshot()}[tid]
    assert snap["account"] == client.account and snap["family"] == "text2video"
    assert snap["task_status"] == "succeed" and snap["final_unit_deduction"] == "5"


@pytest.mark.parametrize(
    ("mark", "units"), [("sandbox:fail", "0"), ("sandbox:fail-charged", "2.4")]
)
def test_sandbox_fail_marks_end_in_failed(sb, client, mark, units):
    body = {"image": IMG, "sound_file": SOUND, "prompt": f"wave {mark}", "mode": "pro"}
    tid = ok(client.post(AVATAR, json=body))["task_id"]
    sb.advance(TASK_SECONDS + 1)
    task = ok(client.get(f"{AVATAR}/{tid}"))
    assert task["task_status"] == "failed"
    assert "sandbox:fail" in task["task_status_msg"]
    # Avatar pro (1080p) = 0.8 units per second of output, × the 3 s audio.
    assert task["final_unit_deduction"] == units
    assert task["task_result"] == {}


def test_avatar_video_lasts_as_long_as_its_audio(sb, client):
    tid = ok(client.post(AVATAR, json={"image": IMG, "sound_file": SOUND}))["task_id"]
    sb.advance(TASK_SECONDS + 1)
    task = ok(client.get(f"{AVATAR}/{tid}"))
    assert task["task_result"]["videos"][0]["duration"] == "3.0"
    assert task["final_unit_deduction"] == "1.2"  # avatar std: 0.4 units/s × 3.0 s
    assert task["watermark_info"] == {"enabled": False}


def test_watermark_enabled_gives_a_watermark_url(sb, client):
    body = {"prompt": "x", "watermark_info": {"enabled": True}}
    tid = ok(client.post(T2V, json=body))["task_id"]
    sb.advance(TASK_SECONDS + 1)
    [video] = ok(client.get(f"{T2V}/{tid}"))["task_result"]["videos"]
    assert video["watermark_url"].endswith(".mp4")
    assert fetch(video["watermark_url"]).status_code == 200


def test_multi_shot_gives_three_images_of_three_urls(sb, client):
    tid = ok(client.post(MULTI, json={"element_frontal_image": IMG}))["task_id"]
    sb.advance(TASK_SECONDS + 1)
    task = ok(client.get(f"{MULTI}/{tid}"))
    images = task["task_result"]["images"]
    assert [img["index"] for img in images] == [0, 1, 2]
    assert all(set(img) == {"index", "url_1", "url_2", "url_3"} for img in images)
    assert task["final_unit_deduction"] == "0.5"  # per call (prices module)


# ----- queries by external_task_id, lists ------------------------------------------------------


def test_get_by_external_task_id_and_reuse_refused(client, sb):
    created = ok(client.post(T2V, json={"prompt": "x", "external_task_id": "my-42"}))
    assert created["task_info"]["external_task_id"] == "my-42"
    by_ext = ok(client.get(f"{T2V}/my-42"))
    assert by_ext["task_id"] == created["task_id"]
    assert by_ext["task_info"]["external_task_id"] == "my-42"
    message = refused(
        client.post(T2V, json={"prompt": "y", "external_task_id": "my-42"}), 400, 1201
    )
    assert "external_task_id" in message
    # Unique per account only: another account may use the same id.
    ak, sk = f"other-{uuid.uuid4().hex[:8]}", "other-secret-0123456789abcdef0123"
    sb.config.accounts[ak] = sk
    with api(sb, ak, sk) as other:
        ok(other.post(T2V, json={"prompt": "z", "external_task_id": "my-42"}))
        refused(other.get(f"{T2V}/{created['task_id']}"), 404, 1203)


def test_empty_external_task_id_means_none(client):
    first = ok(client.post(T2V, json={"prompt": "x", "external_task_id": "", "callback_url": ""}))
    ok(client.post(T2V, json={"prompt": "y", "external_task_id": ""}))
    assert first["task_info"]["external_task_id"] == ""


def test_task_of_another_family_is_not_found_there(client):
    tid = ok(client.post(T2V, json={"prompt": "x"}))["task_id"]
    refused(client.get(f"{I2V}/{tid}"), 404, 1203)


def test_list_is_newest_first_with_paging(client):
    ids = [ok(client.post(T2V, json={"prompt": f"p{i}"}))["task_id"] for i in range(5)]
    everything = ok(client.get(T2V))
    assert [t["task_id"] for t in everything] == ids[::-1]
    page1 = ok(client.get(T2V, params={"pageNum": 1, "pageSize": 2}))
    page3 = ok(client.get(T2V, params={"pageNum": 3, "pageSize": 2}))
    page4 = ok(client.get(T2V, params={"pageNum": 4, "pageSize": 2}))
    assert [t["task_id"] for t in page1] == ids[:2:-1][:2] == [ids[4], ids[3]]
    assert [t["task_id"] for t in page3] == [ids[0]]
    assert page4 == []
    assert ok(client.get(I2V)) == []
    assert ok(client.get(T2V, params={"pageNum": 1000, "pageSize": 500})) == []


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"pageSize": 501}, "pageSize"),
        ({"pageSize": 0}, "pageSize"),
        ({"pageNum": 0}, "pageNum"),
        ({"pageNum": 1001}, "pageNum"),
        ({"pageNum": "abc"}, "pageNum"),
    ],
)
def test_list_page_out_of_range_is_refused(client, params, name):
    assert name in refused(client.get(T2V, params=params), 400, 1201)
    assert name in refused(client.get(PRESETS, params=params), 400, 1201)


# ----- validation of §5 ----------------------------------------------------------------------------

BAD = [
    # (id, path, body, field named in the message)
    ("image-299px", MULTI, {"element_frontal_image": png_b64(299, 400)}, "element_frontal_image"),
    ("image-aspect-2.6", MULTI, {"element_frontal_image": png_b64(780, 300)}, "element_frontal_image"),
    ("image-tall-1:2.6", AVATAR, {"image": png_b64(300, 780), "sound_file": SOUND}, "image"),
    ("image-over-10MB", MULTI, {"element_frontal_image": png_b64(pad=10 * 1024 * 1024)}, "element_frontal_image"),
    ("image-data-prefix", MULTI, {"element_frontal_image": "data:image/png;base64," + IMG}, "element_frontal_image"),
    ("image-text-file", MULTI, {"element_frontal_image": base64.b64encode(b"just text\n" * 50).decode()}, "element_frontal_image"),
    ("image-gif", MULTI, {"element_frontal_image": png_b64(fmt="GIF")}, "element_frontal_image"),
    ("image-not-base64", MULTI, {"element_frontal_image": "%%% nope %%%"}, "element_frontal_image"),
    ("image-url-gif", MULTI, {"element_frontal_image": "https://example.com/a.gif"}, "element_frontal_image"),
    ("image-missing", MULTI, {}, "element_frontal_image"),
    ("audio-1.9s", AVATAR, {"image": IMG, "sound_file": wav_b64(1.9)}, "sound_file"),
    ("audio-301s", AVATAR, {"image": IMG, "sound_file": wav_b64(301, rate=4000)}, "sound_file"),
    ("audio-over-5MB", AVATAR, {"image": IMG, "sound_file": wav_b64(31, rate=44100, channels=2)}, "sound_file"),
    ("audio-text-file", AVATAR, {"image": IMG, "sound_file": base64.b64encode(b"la la" * 99).decode()}, "sound_file"),
    ("audio-url-ogg", AVATAR, {"image": IMG, "sound_file": "https://example.com/a.ogg"}, "sound_file"),
    ("audio-data-prefix", AVATAR, {"image": IMG, "sound_file": "data:audio/wav;base64," + SOUND}, "sound_file"),
    ("audio-both", AVATAR, {"image": IMG, "sound_file": SOUND, "audio_id": "a1"}, "audio_id"),
    ("audio-neither", AVATAR, {"image": IMG}, "sound_file"),
    ("avatar-prompt-2501", AVATAR, {"image": IMG, "audio_id": "a1", "prompt": "x" * 2501}, "prompt"),
    ("avatar-mode", AVATAR, {"image": IMG, "audio_id": "a1", "mode": "turbo"}, "mode"),
    ("avatar-watermark", AVATAR, {"image": IMG, "audio_id": "a1", "watermark_info": {"enabled": "yes"}}, "watermark_info"),
    ("extend-missing-video", EXTEND, {"prompt": "x"}, "video_id"),
    ("extend-unknown-video", EXTEND, {"video_id": "123"}, "video_id"),
    ("t2v-prompt-missing", T2V, {"mode": "std"}, "prompt"),
    ("t2v-prompt-2501", T2V, {"prompt": "x" * 2501}, "prompt"),
    ("t2v-negative-2501", T2V, {"prompt": "x", "negative_prompt": "x" * 2501}, "negative_prompt"),
    ("t2v-cfg-1.1", T2V, {"prompt": "x", "cfg_scale": 1.1}, "cfg_scale"),
    ("t2v-cfg-negative", T2V, {"prompt": "x", "cfg_scale": -0.1}, "cfg_scale"),
    ("t2v-model", T2V, {"prompt": "x", "model_name": "kling-v9"}, "model_name"),
    ("t2v-mode", T2V, {"prompt": "x", "mode": "max"}, "mode"),
    ("t2v-aspect", T2V, {"prompt": "x", "aspect_ratio": "4:3"}, "aspect_ratio"),
    ("t2v-duration-7", T2V, {"prompt": "x", "duration": "7"}, "duration"),
    ("t2v-duration-int", T2V, {"prompt": "x", "duration": 5}, "duration"),
    ("t2v-camera-type", T2V, {"prompt": "x", "camera_control": {"type": "spin"}}, "camera_control.type"),
    ("t2v-camera-two-axes", T2V, {"prompt": "x", "camera_control": {"type": "simple", "config": {"pan": 1, "zoom": 2}}}, "camera_control.config"),
    ("t2v-callback-url", T2V, {"prompt": "x", "callback_url": "ftp://example.com/hook"}, "callback_url"),
    ("t2v-external-not-str", T2V, {"prompt": "x", "external_task_id": 42}, "external_task_id"),
    ("i2v-image-missing", I2V, {"prompt": "x"}, "image"),
    ("i2v-tail-small", I2V, {"image": IMG, "image_tail": png_b64(200, 300)}, "image_tail"),
    ("i2v-tail-and-camera", I2V, {"image": IMG, "image_tail": IMG, "camera_control": {"type": "down_back"}}, "image_tail"),
    ("i2v-mask-and-camera", I2V, {"image": IMG, "static_mask": IMG, "camera_control": {"type": "forward_up"}}, "camera_control"),
    ("el-name-21", ELEMENTS, element_body(element_name="n" * 21), "element_name"),
    ("el-name-missing", ELEMENTS, element_body(element_name=""), "element_name"),
    ("el-description-101", ELEMENTS, element_body(element_description="d" * 101), "element_description"),
    ("el-reference-type", ELEMENTS, element_body(reference_type="sketch_refer"), "reference_type"),
    ("el-0-refer-images", ELEMENTS, element_body(element_image_list={"frontal_image": IMG, "refer_images": []}), "refer_images"),
    ("el-4-refer-images", ELEMENTS, element_body(element_image_list={"frontal_image": IMG, "refer_images": [{"image_url": IMG}] * 4}), "refer_images"),
    ("el-refer-image-small", ELEMENTS, element_body(element_image_list={"frontal_image": IMG, "refer_images": [{"image_url": png_b64(100, 100)}]}), "refer_images[0].image_url"),
    ("el-frontal-missing", ELEMENTS, element_body(element_image_list={"refer_images": [{"image_url": IMG}]}), "frontal_image"),
    ("el-image-list-missing", ELEMENTS, element_body(element_image_list=None), "element_image_list"),
    ("el-bad-tag", ELEMENTS, element_body(tag_list=[{"tag_id": "o_109"}]), "tag_list[0].tag_id"),
    ("el-video-2", ELEMENTS, element_body(reference_type="video_refer", element_image_list=None, element_video_list={"refer_videos": [{"video_url": "https://e.com/a.mp4"}] * 2}), "refer_videos"),
    ("el-video-avi", ELEMENTS, element_body(reference_type="video_refer", element_image_list=None, element_video_list={"refer_videos": [{"video_url": "https://e.com/a.avi"}]}), "video_url"),
    ("el-video-empty", ELEMENTS, element_body(reference_type="video_refer", element_image_list=None, element_video_list={"refer_videos": [{"video_url": ""}]}), "video_url"),
    ("el-video-missing", ELEMENTS, element_body(reference_type="video_refer", element_image_list=None), "element_video_list"),
    ("el-video-and-images", ELEMENTS, element_body(reference_type="video_refer", element_video_list={"refer_videos": [{"video_url": "https://e.com/a.mp4"}]}), "element_image_list"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_invalid_field_is_refused_with_1201_naming_it(client, path, body, field):
    message = refused(client.post(path, json=body), 400, 1201)
    assert field in message
    assert ok(client.get(path)) == []  # nothing was created


GOOD = [
    ("image-300px", MULTI, {"element_frontal_image": png_b64(300, 300)}),
    ("image-aspect-2.5", MULTI, {"element_frontal_image": png_b64(750, 300)}),
    ("image-aspect-1:2.5-jpeg", MULTI, {"element_frontal_image": png_b64(300, 750, fmt="JPEG")}),
    ("image-url", MULTI, {"element_frontal_image": "https://example.com/kcdn/multi-1.png"}),
    ("image-url-no-ext", MULTI, {"element_frontal_image": "https://example.com/img/abc"}),
    ("audio-2s", AVATAR, {"image": IMG, "sound_file": wav_b64(2.0)}),
    ("audio-mp3", AVATAR, {"image": IMG, "sound_file": mp3_b64(2.5)}),
    ("audio-url", AVATAR, {"image": IMG, "sound_file": "https://example.com/go.mp3"}),
    ("audio-id", AVATAR, {"image": IMG, "audio_id": "tts-123", "mode": "pro"}),
    ("prompt-2500", T2V, {"prompt": "x" * 2500, "cfg_scale": 1.0}),
    ("cfg-0", T2V, {"prompt": "x", "cfg_scale": 0, "aspect_ratio": "9:16", "model_name": "kling-v2-6"}),
    ("camera-simple", T2V, {"prompt": "x", "camera_control": {"type": "simple", "config": {"zoom": -10}}}),
    ("i2v-tail", I2V, {"image": IMG, "image_tail": IMG, "mode": "pro", "duration": "10"}),
    ("el-name-20-3-refs", ELEMENTS, element_body(element_name="n" * 20, element_image_list={"frontal_image": IMG, "refer_images": [{"image_url": IMG}] * 3})),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body"), [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_boundary_values_are_accepted(client, path, body):
    assert ok(client.post(path, json=body))["task_status"] == "submitted"


# ----- callbacks (kling-docs/callback-protocol.txt) ---------------------------------------------


def test_callbacks_on_every_status_change(sb, client, receiver):
    body = {"prompt": "x", "callback_url": receiver.url, "external_task_id": "cb-1"}
    tid = ok(client.post(T2V, json=body))["task_id"]
    sb.advance(TASK_SECONDS / 3 + 0.5)
    sb.advance(TASK_SECONDS)
    assert sb.wait_callbacks(5)
    mine = [b for b in receiver.bodies if b["task_id"] == tid]
    assert [b["task_status"] for b in mine] == ["processing", "succeed"]
    final = mine[-1]
    assert set(final) == {
        "task_id", "task_status", "task_status_msg", "created_at", "updated_at",
        "final_unit_deduction", "task_info", "task_result",
    }  # fmt: skip
    assert final["task_info"]["external_task_id"] == "cb-1"
    assert final["final_unit_deduction"] == "1.5"  # kling-v1 std: 0.3 units/s × 5 s
    [video] = final["task_result"]["videos"]
    assert set(video) == {"id", "url", "duration"}  # the documented subset only
    assert video["url"].endswith(".mp4")
    log = [e for e in sb.callbacks_log if e["task_id"] == tid]
    assert [(e["http_status"], e["dropped"]) for e in log] == [(200, False), (200, False)]
    assert log[0]["url"] == receiver.url


def test_a_big_advance_still_sends_processing_before_failed(sb, client, receiver):
    body = {"prompt": "sandbox:fail please", "callback_url": receiver.url}
    tid = ok(client.post(T2V, json=body))["task_id"]
    sb.advance(TASK_SECONDS * 2)
    assert sb.wait_callbacks(5)
    statuses = [b["task_status"] for b in receiver.bodies if b["task_id"] == tid]
    assert statuses == ["processing", "failed"]


def test_callback_drop_and_duplicate_knobs(sb, client, receiver):
    sb.config.callback_drop_rate = 1.0
    dropped = ok(client.post(T2V, json={"prompt": "x", "callback_url": receiver.url}))["task_id"]
    sb.advance(TASK_SECONDS + 1)
    assert sb.wait_callbacks(5)
    sb.config.callback_drop_rate = 0.0
    sb.config.callback_duplicate_rate = 1.0
    doubled = ok(client.post(T2V, json={"prompt": "x", "callback_url": receiver.url}))["task_id"]
    sb.advance(TASK_SECONDS + 1)
    assert sb.wait_callbacks(5)
    assert not [b for b in receiver.bodies if b["task_id"] == dropped]
    assert all(e["dropped"] for e in sb.callbacks_log if e["task_id"] == dropped)
    statuses = [b["task_status"] for b in receiver.bodies if b["task_id"] == doubled]
    assert statuses == ["processing", "processing", "succeed", "succeed"]


def test_unreachable_callback_is_logged_without_status(sb, client):
    tid = ok(client.post(T2V, json={"prompt": "x", "callback_url": "http://127.0.0.1:9/x"}))[
        "task_id"
    ]
    sb.advance(TASK_SECONDS + 1)
    assert sb.wait_callbacks(10)
    log = [e for e in sb.callbacks_log if e["task_id"] == tid]
    assert len(log) == 2 and all(e["http_status"] is None and e["error"] for e in log)


# ----- media -----------------------------------------------------------------------------------


def test_media_are_real_png_and_h264_mp4(sb, client):
    multi = ok(client.post(MULTI, json={"element_frontal_image": IMG}))["task_id"]
    video = ok(client.post(T2V, json={"prompt": "x"}))["task_id"]
    sb.advance(TASK_SECONDS + 1)
    images = ok(client.get(f"{MULTI}/{multi}"))["task_result"]["images"]
    colours = set()
    for url in (images[0]["url_1"], images[0]["url_2"], images[2]["url_3"]):
        response = fetch(url)  # public: no Authorization
        assert response.headers["content-type"] == "image/png"
        assert int(response.headers["content-length"]) == len(response.content)
        with Image.open(io.BytesIO(response.content)) as img:
            assert img.format == "PNG" and min(img.size) >= 300
            colours.add(img.getpixel((5, img.size[1] - 5)))
    assert len(colours) == 3

    url = ok(client.get(f"{T2V}/{video}"))["task_result"]["videos"][0]["url"]
    response = fetch(url)
    assert response.headers["content-type"] == "video/mp4"
    data = response.content
    assert int(response.headers["content-length"]) == len(data) < 200_000
    assert data.find(b"moov") < data.find(b"mdat")  # faststart: playable while downloading
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert 0.5 <= container.duration / 1_000_000 <= 2
    partial = fetch(url, headers={"Range": "bytes=0-99"})
    assert partial.status_code == 206 and partial.content == data[:100]


def test_unknown_media_is_404(sb):
    assert fetch(f"{sb.base_url}/sandbox-media/nope/x.png").status_code == 404


def test_media_disappear_after_30_days():
    config = SandboxConfig(accounts={"a": "s" * 32}, task_seconds=1)
    with SandboxServer(config) as srv, api(srv, "a", "s" * 32) as http:
        tid = ok(http.post(MULTI, json={"element_frontal_image": IMG}))["task_id"]
        srv.advance(2)
        url = ok(http.get(f"{MULTI}/{tid}"))["task_result"]["images"][0]["url_1"]
        assert fetch(url).status_code == 200
        srv.advance(31 * 24 * 3600)
        assert fetch(url).status_code == 404


# ----- video extension -------------------------------------------------------------------------


def test_video_extend_names_parent_video(sb, client):
    source = ok(client.post(T2V, json={"prompt": "x", "mode": "pro"}))["task_id"]
    sb.advance(TASK_SECONDS + 1)
    parent = ok(client.get(f"{T2V}/{source}"))["task_result"]["videos"][0]
    body = {"video_id": parent["id"], "prompt": "a puppy appears", "cfg_scale": 0.5}
    tid = ok(client.post(EXTEND, json=body))["task_id"]
    sb.advance(TASK_SECONDS + 1)
    task = ok(client.get(f"{EXTEND}/{tid}"))
    assert task["task_info"]["parent_video"] == {
        "id": parent["id"],
        "url": parent["url"],
        "duration": parent["duration"],
    }
    [video] = task["task_result"]["videos"]
    assert Decimal(video["duration"]) == Decimal(parent["duration"]) + Decimal("4.5")
    assert task["final_unit_deduction"] == "2.5"  # old-model pro row 0.5/s × 5 s
    # An extension can be extended again.
    ok(client.post(EXTEND, json={"video_id": video["id"]}))


def test_video_extend_refuses_foreign_unsupported_or_unfinished_videos(sb, client):
    v2 = ok(client.post(T2V, json={"prompt": "x", "model_name": "kling-v2-master"}))["task_id"]
    avatar = ok(client.post(AVATAR, json={"image": IMG, "audio_id": "a"}))["task_id"]
    sb.advance(TASK_SECONDS + 1)
    v2_video = ok(client.get(f"{T2V}/{v2}"))["task_result"]["videos"][0]["id"]
    avatar_video = ok(client.get(f"{AVATAR}/{avatar}"))["task_result"]["videos"][0]["id"]
    assert "V1" in refused(client.post(EXTEND, json={"video_id": v2_video}), 400, 1201)
    assert "video_id" in refused(client.post(EXTEND, json={"video_id": avatar_video}), 400, 1201)
    ak, sk = f"x-{uuid.uuid4().hex[:8]}", "x-secret-0123456789abcdef0123456789"
    sb.config.accounts[ak] = sk
    with api(sb, ak, sk) as other:
        assert "video_id" in refused(other.post(EXTEND, json={"video_id": v2_video}), 400, 1201)


# ----- elements ---------------------------------------------------------------------------------


def test_element_create_query_list_and_delete(sb, client):
    body = element_body(external_task_id="el-1", element_voice_id="voice-9")
    tid = ok(client.post(ELEMENTS, json=body))["task_id"]
    sb.advance(TASK_SECONDS + 1)
    task = ok(client.get(f"{ELEMENTS}/{tid}"))
    assert task["task_id"] == tid and task["task_status"] == "succeed"
    # The vendor page documents the single query by task_id only: no external id lookup.
    assert client.get(f"{ELEMENTS}/el-1").json()["code"] == 1203
    [element] = task["task_result"]["elements"]
    assert element["element_name"] == "Hero"
    assert element["reference_type"] == "image_refer"
    assert element["status"] == "succeed" and element["owned_by"] != "kling"
    assert element["tag_list"] == [{"tag_id": "o_102", "tag_name": "Character"}]
    assert element["element_voice_info"]["voice_id"] == "voice-9"
    frontal = element["element_image_list"]["frontal_image"]
    assert frontal.startswith(sb.base_url)  # the uploaded Base64 is kept as a URL
    assert fetch(frontal).status_code == 200
    assert element["element_image_list"]["refer_images"] == [
        {"image_url": "https://example.com/side.png"}
    ]
    assert [t["task_id"] for t in ok(client.get(ELEMENTS))] == [tid]

    answer = ok(client.post(DELETE, json={"element_id": str(element["element_id"])}))
    assert answer["task_status"] == "succeed" and answer["task_id"]
    again = ok(client.get(f"{ELEMENTS}/{tid}"))["task_result"]["elements"][0]
    assert again["status"] == "deleted"


def test_presets_are_official_and_cannot_be_deleted(client):
    presets = ok(client.get(PRESETS))
    assert len(presets) >= 3
    elements = [t["task_result"]["elements"][0] for t in presets]
    assert all(e["owned_by"] == "kling" and e["status"] == "succeed" for e in elements)
    image = elements[0]["element_image_list"]["frontal_image"]
    assert fetch(image).headers["content-type"] == "image/png"
    assert len(ok(client.get(PRESETS, params={"pageSize": 2}))) == 2
    message = refused(
        client.post(DELETE, json={"element_id": elements[0]["element_id"]}), 400, 1201
    )
    assert "element_id" in message


def test_delete_unknown_or_missing_element(client):
    refused(client.post(DELETE, json={"element_id": "424242"}), 404, 1203)
    assert "element_id" in refused(client.post(DELETE, json={}), 400, 1201)


# ----- account costs (KLING_API.md §5.5) ------------------------------------------------------------


def _remaining(http) -> Decimal:
    now = int(time.time() * 1000)
    data = ok(http.get(COSTS, params={"start_time": now - 86_400_000, "end_time": now}))
    [pack] = data["resource_pack_subscribe_infos"]
    assert pack["resource_pack_type"] in ("decreasing_total", "constant_period")
    assert pack["status"] == "online"
    return Decimal(str(pack["remaining_quantity"]))


def test_account_costs_remaining_goes_down_as_tasks_finish(sb, client):
    before = _remaining(client)
    ok(client.post(T2V, json={"prompt": "x", "mode": "pro", "duration": "5"}))
    ok(client.post(T2V, json={"prompt": "sandbox:fail"}))
    assert _remaining(client) == before  # nothing finished yet
    sb.advance(TASK_SECONDS + 1)
    assert _remaining(client) == before - Decimal("2.5")  # kling-v1 pro: 0.5/s × 5 s


def test_account_costs_parameters(client):
    assert "start_time" in refused(client.get(COSTS, params={"end_time": 1}), 400, 1201)
    assert "start_time" in refused(
        client.get(COSTS, params={"start_time": 5, "end_time": 1}), 400, 1201
    )
    data = ok(
        client.get(COSTS, params={"start_time": 0, "end_time": 1, "resource_pack_name": "nope"})
    )
    assert data["resource_pack_subscribe_infos"] == []


# ----- fault knobs -------------------------------------------------------------------------------


def test_error_rate_answers_5000_or_5001(sb, client):
    sb.config.error_rate = 1.0
    for _ in range(6):
        response = client.get(T2V)
        assert (response.status_code, response.json()["code"]) in ((500, 5000), (503, 5001))
    sb.reset_faults()
    assert ok(client.get(T2V)) == []


def test_create_rate_limit_and_concurrency_rates(sb, client):
    sb.config.create_rate_limit_rate = 1.0
    refused(client.post(T2V, json={"prompt": "x"}), 429, 1302)
    ok(client.get(T2V))  # queries are not rate limited
    sb.config.create_rate_limit_rate = 0.0
    sb.config.create_concurrency_rate = 1.0
    refused(client.post(T2V, json={"prompt": "x"}), 429, 1303)
    assert ok(client.get(T2V)) == []


def test_concurrency_limit_counts_unfinished_tasks(sb, client):
    sb.config.concurrency_limit = 2
    ok(client.post(T2V, json={"prompt": "a"}))
    ok(client.post(AVATAR, json={"image": IMG, "audio_id": "x"}))
    refused(client.post(T2V, json={"prompt": "c"}), 429, 1303)
    sb.advance(TASK_SECONDS + 1)
    ok(client.post(T2V, json={"prompt": "c"}))


def test_latency_delays_answers(sb, client):
    sb.config.latency = 0.3
    started = time.monotonic()
    ok(client.get(T2V))
    assert time.monotonic() - started >= 0.3


def test_seed_makes_runs_reproducible():
    def run() -> tuple[list[str], list[int]]:
        config = SandboxConfig(accounts={"a": "s" * 32}, task_seconds=5, seed=1234)
        with SandboxServer(config) as srv, api(srv, "a", "s" * 32) as http:
            ids = [http.post(T2V, json={"prompt": "x"}).json()["data"]["task_id"] for _ in range(3)]
            srv.config.error_rate = 0.5
            codes = [http.get(T2V).json()["code"] for _ in range(12)]
        return ids, codes

    first, second = run(), run()
    assert first == second
    assert set(first[1]) > {0}  # some requests failed, some did not


def test_reset_faults_restores_every_knob(sb):
    sb.config.error_rate = 0.5
    sb.config.latency = 1
    sb.config.concurrency_limit = 3
    sb.config.callback_drop_rate = 0.2
    sb.reset_faults()
    assert (sb.config.error_rate, sb.config.latency, sb.config.concurrency_limit) == (0, 0, None)
    assert sb.config.callback_drop_rate == 0 and sb.config.task_seconds == TASK_SECONDS


# ----- the session sandbox and the command ------------------------------------------------------


def test_session_sandbox_end_to_end(fresh_sandbox):
    with api(fresh_sandbox, SANDBOX_AK, SANDBOX_SK) as http:
        ext = f"e2e-{uuid.uuid4().hex}"
        ok(http.post(T2V, json={"prompt": "x", "external_task_id": ext}))
        fresh_sandbox.advance(fresh_sandbox.config.task_seconds + 0.1)
        assert ok(http.get(f"{T2V}/{ext}"))["task_status"] == "succeed"


def test_command_options_read_flags_env_and_settings(monkeypatch, settings):
    from klingweb.management.commands.kling_sandbox import resolve_options

    settings.KLING_ACCESS_KEY, settings.KLING_SECRET_KEY = "set-ak", "set-sk"
    monkeypatch.setenv("KLING_SANDBOX_ERROR_RATE", "0.25")
    monkeypatch.setenv("KLING_SANDBOX_CONCURRENCY_LIMIT", "4")
    values = resolve_options({"task_seconds": 2.0, "error_rate": None})
    assert values["task_seconds"] == 2.0 and values["error_rate"] == 0.25
    assert values["concurrency_limit"] == 4 and values["port"] == 8700
    assert (values["access_key"], values["secret_key"]) == ("set-ak", "set-sk")
    settings.KLING_ACCESS_KEY = settings.KLING_SECRET_KEY = ""
    values = resolve_options({"access_key": None})
    assert values["access_key"] == "sandbox-access-key"
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        resolve_options({"error_rate": 1.5})


def test_external_task_id_is_percent_decoded_from_the_path(client):
    ext = "team blue:täsk/1?x=1"
    tid = ok(client.post(T2V, json={"prompt": "x", "external_task_id": ext}))["task_id"]
    from urllib.parse import quote

    assert ok(client.get(f"{T2V}/{quote(ext, safe='')}"))["task_id"] == tid


def test_a_create_that_times_out_is_still_made(sb, client):
    sb.config.latency = 0.6
    with pytest.raises(httpx.ReadTimeout):
        client.post(T2V, json={"prompt": "x", "external_task_id": "slow-1"}, timeout=0.2)
    sb.reset_faults()
    assert ok(client.get(f"{T2V}/slow-1"))["task_status"] == "submitted"


def test_manage_py_kling_sandbox_serves_until_terminated():
    import os
    import select
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "KLING_SANDBOX_TASK_SECONDS": "2", "KLING_ACCESS_KEY": "cli-ak",
           "KLING_SECRET_KEY": "cli-sk-0123456789abcdef0123456789ab"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "kling_sandbox", "--port", "0", "--quiet"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the command printed nothing"
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        token = make_token("cli-ak", env["KLING_SECRET_KEY"])
        response = fetch(f"{base_url}{T2V}", headers={"Authorization": f"Bearer {token}"})
        assert ok(response) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Stopping" in out


@pytest.mark.parametrize("code", [1100, 1101, 1102])
def test_account_error_knob_refuses_creates_with_the_account_code(sb, client, code):
    sb.config.account_error_code = code
    message = refused(client.post(T2V, json={"prompt": "x"}), 429, code)
    assert "sandbox fault injection" in message
    ok(client.get(T2V))  # queries still answer
    sb.reset_faults()
    ok(client.post(T2V, json={"prompt": "x"}))
