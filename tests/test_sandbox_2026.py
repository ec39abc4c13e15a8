"""The sandbox speaks today's Kling (issue 13 §10): API keys, the new design's endpoints and
unified ``/tasks`` queries, documented callback subsets, cash accounts, the published price
table, element reference videos by URL and the 1304 knob.

Plain httpx over real HTTP on loopback (never ``klingweb.kling``). A module sandbox with a
slow clock moved by ``advance``; each test gets a brand-new API key (a new vendor account)
unless it needs the AK/SK pair. Reference videos are real MP4s served by a small file server
of this module, so the sandbox fetches them the way the vendor would.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import struct
import threading
import time
import uuid
import zlib
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import httpx
import pytest
from PIL import Image

from klingweb.sandbox import SandboxConfig, SandboxServer
from klingweb.sandbox.errors import ApiError
from klingweb.sandbox.newdesign import validate_new
from tests.test_sandbox import Receiver, make_token, png_b64

TASK_SECONDS = 30.0
AK, SK = "ak-2026", "sk-2026-0123456789abcdef0123456789abcdef"
KEY = "kling-api-key-2026-abcdef"
T2V = "/v1/videos/text2video"
MULTI = "/v1/general/ai-multi-shot"
ELEMENTS = "/v1/general/advanced-custom-elements"
TURBO_T2V = "/text-to-video/kling-3.0-turbo"
TURBO_I2V = "/image-to-video/kling-3.0-turbo"
V3_T2V = "/text-to-video/kling-3.0"
V3_I2V = "/image-to-video/kling-3.0"
OMNI = "/omni-video/kling-3.0-omni"
MOTION_30 = "/motion-control/kling-3.0"
MOTION_26 = "/motion-control/kling-2.6"
V26_T2V = "/text-to-video/kling-2.6"
V25_I2V = "/image-to-video/kling-2.5-turbo"
TASKS = "/tasks"
PRESET_CORGI = "9000000002"  # the sandbox's preset elements (image_refer)
PRESET_ASTRONAUT = "9000000001"
IMG = png_b64()
ITEM_KEYS = {
    "id", "status", "message", "create_time", "update_time", "external_id", "outputs", "billing",
}  # fmt: skip
LEGACY_CALLBACK_KEYS = {
    "task_id", "task_status", "task_status_msg", "created_at", "updated_at",
    "final_unit_deduction", "task_info", "task_result",
}  # fmt: skip


# ----- media the sandbox fetches ------------------------------------------------------------


def make_mp4(width: int, height: int, seconds: float, fps: int) -> bytes:
    """A real H.264 MP4 of ``width`` x ``height`` lasting ``seconds`` at ``fps``."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "40"}
        for i in range(round(seconds * fps)):
            image = Image.new("RGB", (width, height), (20 * (i % 12), 80, 160))
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


class FileServer:
    """Serves ``files`` (path → bytes) over HTTP; ``/huge.mp4`` claims 210 MB, ``/slow.mp4``
    answers after 3 s, anything else is 404. ``hits`` counts GETs per path."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path == "/huge.mp4":
                    self.send_response(200)
                    self.send_header("Content-Type", "video/mp4")
                    self.send_header("Content-Length", str(210 * 1024 * 1024))
                    self.end_headers()
                    return
                if self.path == "/slow.mp4":
                    time.sleep(3)
                data = server.files.get(self.path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(ConnectionError):
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def url(self, name: str) -> str:
        """The URL of ``/name``."""
        return f"{self.base}/{name}"

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def files():
    """Reference videos: an element clip (1080p, 3.5 s), an Omni/motion clip (720x720,
    24 fps, 3.25 s), a 1 s clip, a 720p element clip and a 320 px clip."""
    omni = make_mp4(720, 720, 3.25, 24)
    served = FileServer(
        {
            "/element.mp4": make_mp4(1920, 1080, 3.5, 4),
            "/element-720p.mp4": make_mp4(1280, 720, 3.5, 4),
            "/omni.mp4": omni,
            "/slow.mp4": omni,
            "/one-second.mp4": make_mp4(720, 720, 1, 24),
            "/small.mp4": make_mp4(320, 320, 3.5, 4),
        }
    )
    yield served
    served.close()


# ----- the sandbox and clients ------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    """This module's sandbox: one AK/SK account with an API key of the same account."""
    srv = SandboxServer(
        SandboxConfig(accounts={AK: SK}, api_keys={KEY: AK}, task_seconds=TASK_SECONDS, seed=2026)
    ).start()
    yield srv
    srv.stop()


@pytest.fixture
def sb(server):
    """The module sandbox with fault knobs and the cash switch reset around the test."""
    server.reset_faults()
    server.config.cash, server.config.cash_discount = False, 1.0
    server.config.fetch_timeout = 10.0
    yield server
    server.reset_faults()
    server.config.cash, server.config.cash_discount = False, 1.0
    server.config.fetch_timeout = 10.0


@pytest.fixture
def client(sb):
    """An httpx client holding a brand-new API key: a fresh vendor account."""
    key = f"key-{uuid.uuid4().hex}"
    sb.config.api_keys[key] = f"acct-{uuid.uuid4().hex[:8]}"
    with httpx.Client(
        base_url=sb.base_url,
        headers={"Authorization": f"Bearer {key}"},
        trust_env=False,
        timeout=30,
    ) as http:
        yield http


@pytest.fixture
def receiver():
    """A running callback receiver."""
    rec = Receiver()
    yield rec
    rec.close()


def ok(response: httpx.Response):
    """Assert a success envelope and return ``data``."""
    body = response.json()
    assert response.status_code == 200, body
    assert body["code"] == 0, body
    return body["data"]


def refused(response: httpx.Response, http_status: int, code: int) -> str:
    """Assert an error envelope and return its message."""
    body = response.json()
    assert (response.status_code, body["code"]) == (http_status, code), body
    assert body["data"] is None and body["request_id"]
    return body["message"]


def one(http: httpx.Client, task_id: str) -> dict:
    """The task item of ``task_id`` from the unified query."""
    [item] = ok(http.get(TASKS, params={"task_ids": task_id}))
    assert set(item) == ITEM_KEYS
    return item


def all_tasks(http: httpx.Client) -> list[dict]:
    """Every new-design task of the account (cursor query, one page)."""
    return ok(http.post(TASKS, json={"limit": 500}))["result"]


# ----- authentication (KLING_API_2026.md §2) -------------------------------------------------------


def test_api_key_is_the_bearer_on_both_designs_and_shares_the_aksk_account(sb):
    key_headers = {"Authorization": f"Bearer {KEY}"}
    jwt_headers = {"Authorization": f"Bearer {make_token(AK, SK)}"}
    with httpx.Client(base_url=sb.base_url, trust_env=False, timeout=30) as http:
        legacy = ok(http.post(T2V, json={"prompt": "x"}, headers=key_headers))
        # The key and the AK/SK pair are one account: the JWT sees the key's task.
        ok(http.get(f"{T2V}/{legacy['task_id']}", headers=jwt_headers))
        new = ok(http.post(TURBO_T2V, json={"prompt": "a fox"}, headers=key_headers))
        assert set(new) == {"id", "status", "create_time", "update_time", "external_id"}
        assert new["status"] == "submitted"


def test_aksk_jwt_is_refused_on_the_new_design_only(sb):
    jwt_headers = {"Authorization": f"Bearer {make_token(AK, SK)}"}
    with httpx.Client(base_url=sb.base_url, trust_env=False, timeout=30) as http:
        message = refused(
            http.post(TURBO_T2V, json={"prompt": "x"}, headers=jwt_headers), 401, 1000
        )
        assert "API key" in message
        refused(http.get(TASKS, params={"task_ids": "1"}, headers=jwt_headers), 401, 1000)
        refused(http.post(TASKS, json={}, headers=jwt_headers), 401, 1000)
        ok(http.get(T2V, headers=jwt_headers))  # legacy still takes AK/SK


@pytest.mark.parametrize(
    ("header", "code"),
    [(None, 1001), ("Bearer", 1001), ("Bearer not-our-key", 1002), (f"Basic {KEY}", 1002)],
    ids=["missing", "empty", "unknown-key", "not-bearer"],
)
def test_missing_or_wrong_api_key_is_401(sb, header, code):
    headers = {} if header is None else {"Authorization": header}
    with httpx.Client(base_url=sb.base_url, trust_env=False, timeout=30) as http:
        refused(http.post(TURBO_T2V, json={"prompt": "x"}, headers=headers), 401, code)
        refused(http.get(T2V, headers=headers), 401, code)


# ----- each new endpoint: create → query → final with outputs and billing ----------------------------


def _bodies(files: FileServer) -> list[tuple[str, str, dict, str, str]]:
    """(id, path, body, expected units, expected output duration)."""
    omni_url = files.url("omni.mp4")
    return [
        ("turbo-t2v-storyboard", TURBO_T2V, {"prompt": "shot 1, 2, a fox runs; shot 2, 3, it jumps;", "settings": {"resolution": "1080p", "duration": 5, "aspect_ratio": "9:16"}}, "5", "5"),
        ("turbo-i2v", TURBO_I2V, {"contents": [{"type": "prompt", "text": "the cat jumps"}, {"type": "first_frame", "url": IMG}], "settings": {"duration": 4}}, "3.2", "4"),
        ("v3-t2v-native-1080p", V3_T2V, {"prompt": "two people talk", "settings": {"audio": "native", "resolution": "1080p", "duration": 6, "multi_shot": False}}, "7.2", "6"),
        ("v3-t2v-4k", V3_T2V, {"prompt": "a city", "settings": {"resolution": "4k", "duration": 3}}, "9", "3"),
        ("v3-i2v-frames-element", V3_I2V, {"contents": [{"type": "prompt", "text": "@Corgi runs"}, {"type": "first_frame", "url": IMG}, {"type": "last_frame", "url": "https://example.com/last.png"}, {"type": "element", "element_id": PRESET_CORGI, "id": "e1"}]}, "3", "5"),
        ("omni-images-elements", OMNI, {"contents": [{"type": "prompt", "text": "@Astronaut walks into @image_1"}, {"type": "refer_image", "url": IMG, "id": "image_1"}, {"type": "element", "element_id": PRESET_ASTRONAUT, "id": "e1"}], "settings": {"aspect_ratio": "16:9", "audio": "native", "resolution": "1080p", "duration": 8}}, "8", "8"),
        ("omni-feature-video", OMNI, {"contents": [{"type": "prompt", "text": "like @video_1"}, {"type": "feature_video", "url": omni_url, "id": "video_1"}], "settings": {"duration": 5}}, "4.5", "5"),
        ("motion-3.0", MOTION_30, {"contents": [{"type": "image", "url": IMG}, {"type": "video", "url": omni_url}, {"type": "element", "element_id": PRESET_CORGI, "id": "e1"}], "settings": {"character_orientation": "image", "resolution": "1080p"}}, "3.84", "3.2"),
        ("motion-2.6", MOTION_26, {"contents": [{"type": "prompt", "text": "dance"}, {"type": "image", "url": IMG}, {"type": "video", "url": omni_url}], "settings": {"character_orientation": "video"}}, "1.6", "3.2"),
        ("v2.6-t2v-native", V26_T2V, {"prompt": "rain", "settings": {"audio": "native", "resolution": "1080p", "duration": 10}}, "10", "10"),
        ("v2.5-turbo-i2v", V25_I2V, {"contents": [{"type": "first_frame", "url": IMG}]}, "1.5", "5"),
        ("v2.5-turbo-t2v", "/text-to-video/kling-2.5-turbo", {"prompt": "a kite"}, "1.5", "5"),
        ("v2.6-i2v-silent-1080p", "/image-to-video/kling-2.6", {"contents": [{"type": "first_frame", "url": IMG}], "settings": {"resolution": "1080p", "duration": 5}}, "2.5", "5"),
    ]  # fmt: skip


ENDPOINT_IDS = [
    "turbo-t2v-storyboard", "turbo-i2v", "v3-t2v-native-1080p", "v3-t2v-4k",
    "v3-i2v-frames-element", "omni-images-elements", "omni-feature-video", "motion-3.0",
    "motion-2.6", "v2.6-t2v-native", "v2.5-turbo-i2v", "v2.5-turbo-t2v", "v2.6-i2v-silent-1080p",
]  # fmt: skip


@pytest.mark.parametrize("case", ENDPOINT_IDS)
def test_new_endpoint_runs_to_a_charged_result(sb, client, files, case):
    [(_, path, body, units, seconds)] = [b for b in _bodies(files) if b[0] == case]
    created = ok(client.post(path, json=body))
    assert created["status"] == "submitted" and created["external_id"] == ""
    assert created["create_time"] > 1_600_000_000_000
    item = one(client, created["id"])
    assert (item["status"], item["outputs"], item["billing"]) == ("submitted", [], [])
    sb.advance(TASK_SECONDS / 3 + 0.5)
    assert one(client, created["id"])["status"] == "processing"
    sb.advance(TASK_SECONDS)
    item = one(client, created["id"])
    assert item["status"] == "succeeded" and item["message"] == ""
    assert item["update_time"] - item["create_time"] == int(TASK_SECONDS * 1000)
    [video] = item["outputs"]
    assert set(video) == {"type", "id", "url", "watermark_url", "duration"}
    assert video["type"] == "video" and video["duration"] == seconds
    assert video["watermark_url"] == ""  # watermark not asked for
    media = httpx.get(video["url"], trust_env=False)
    assert media.headers["content-type"] == "video/mp4" and media.content[4:8] == b"ftyp"
    assert item["billing"] == [{"charge_type": "unit", "amount": units, "package_type": "video"}]
    # The legacy per-path query does not know new-design tasks.
    refused(client.get(f"{T2V}/{created['id']}"), 404, 1203)


def test_watermark_and_external_id_on_the_new_design(sb, client):
    body = {
        "prompt": "x",
        "options": {"external_task_id": "nd-1", "watermark_info": {"enabled": True}},
    }
    created = ok(client.post(TURBO_T2V, json=body))
    assert created["external_id"] == "nd-1"
    sb.advance(TASK_SECONDS + 1)
    [item] = ok(client.get(TASKS, params={"external_task_ids": "nd-1"}))
    assert item["id"] == created["id"] and item["external_id"] == "nd-1"
    assert item["outputs"][0]["watermark_url"].endswith("-watermark.mp4")
    # external_task_id is unique per account across both designs.
    message = refused(client.post(T2V, json={"prompt": "y", "external_task_id": "nd-1"}), 400, 1201)
    assert "external_task_id" in message
    message = refused(client.post(V3_T2V, json=body), 400, 1201)
    assert "options.external_task_id" in message


def test_sandbox_fail_mark_ends_new_task_failed_without_billing(sb, client):
    created = ok(client.post(TURBO_T2V, json={"prompt": "sandbox:fail"}))
    sb.advance(TASK_SECONDS + 1)
    item = one(client, created["id"])
    assert item["status"] == "failed" and "sandbox:fail" in item["message"]
    assert item["outputs"] == [] and item["billing"] == []


# ----- validation refusals name the field (KLING_API_2026.md §4) ----------------------------------------


def _shots(n: int, seconds: int = 1, words: str = "x") -> str:
    return "".join(f"shot {i}, {seconds}, {words}; " for i in range(1, n + 1))


def _bad(files: FileServer) -> list[tuple[str, str, dict, str]]:
    omni, one_s = files.url("omni.mp4"), files.url("one-second.mp4")
    frame = {"type": "first_frame", "url": IMG}
    return [
        ("prompt-missing", TURBO_T2V, {"settings": {"duration": 5}}, "prompt"),
        ("prompt-3073", TURBO_T2V, {"prompt": "x" * 3073}, "prompt"),
        ("duration-16", TURBO_T2V, {"prompt": "x", "settings": {"duration": 16}}, "settings.duration"),
        ("duration-2", V3_T2V, {"prompt": "x", "settings": {"duration": 2}}, "settings.duration"),
        ("duration-string", TURBO_T2V, {"prompt": "x", "settings": {"duration": "5"}}, "settings.duration"),
        ("turbo-4k", TURBO_T2V, {"prompt": "x", "settings": {"resolution": "4k"}}, "settings.resolution"),
        ("aspect-4:3", V3_T2V, {"prompt": "x", "settings": {"aspect_ratio": "4:3"}}, "settings.aspect_ratio"),
        ("audio-original-t2v", V3_T2V, {"prompt": "x", "settings": {"audio": "original"}}, "settings.audio"),
        ("shots-sum", TURBO_T2V, {"prompt": _shots(2, 2), "settings": {"duration": 5}}, "prompt"),
        ("shots-7", V3_T2V, {"prompt": _shots(7, 1), "settings": {"duration": 7}}, "prompt"),
        ("shot-words-513", V3_T2V, {"prompt": _shots(1, 5, "w" * 513)}, "prompt"),
        ("shot-0-seconds", V3_T2V, {"prompt": "shot 1, 0, a; shot 2, 5, b;"}, "prompt"),
        ("callback-ftp", TURBO_T2V, {"prompt": "x", "options": {"callback_url": "ftp://h/x"}}, "options.callback_url"),
        ("watermark-yes", TURBO_T2V, {"prompt": "x", "options": {"watermark_info": {"enabled": "yes"}}}, "options.watermark_info"),
        ("turbo-i2v-no-frame", TURBO_I2V, {"contents": [{"type": "prompt", "text": "x"}]}, "contents"),
        ("turbo-i2v-last-frame", TURBO_I2V, {"contents": [frame, {"type": "last_frame", "url": IMG}]}, "contents[1].type"),
        ("turbo-i2v-prompt-2501", TURBO_I2V, {"contents": [{"type": "prompt", "text": "x" * 2501}, frame]}, "contents[0].text"),
        ("i2v-image-small", V3_I2V, {"contents": [{"type": "first_frame", "url": png_b64(299, 400)}]}, "contents[0].url"),
        ("i2v-last-alone", V3_I2V, {"contents": [{"type": "last_frame", "url": IMG}]}, "contents[0].type"),
        ("i2v-4-elements", V3_I2V, {"contents": [frame] + [{"type": "element", "element_id": PRESET_CORGI, "id": f"e{i}"} for i in range(4)]}, "contents[4]"),
        ("i2v-unknown-element", V3_I2V, {"contents": [frame, {"type": "element", "element_id": "123", "id": "e"}]}, "contents[1].element_id"),
        ("i2v-element-without-id", V3_I2V, {"contents": [frame, {"type": "element", "element_id": PRESET_CORGI}]}, "contents[1].id"),
        ("duplicate-ids", OMNI, {"contents": [{"type": "refer_image", "url": IMG, "id": "a"}, {"type": "refer_image", "url": IMG, "id": "a"}], "settings": {"aspect_ratio": "1:1"}}, "contents[1].id"),
        ("omni-no-aspect", OMNI, {"contents": [{"type": "prompt", "text": "x"}]}, "settings.aspect_ratio"),
        ("omni-8-images", OMNI, {"contents": [{"type": "refer_image", "url": IMG}] * 8, "settings": {"aspect_ratio": "1:1"}}, "contents"),
        ("omni-feature-native", OMNI, {"contents": [{"type": "feature_video", "url": omni}], "settings": {"audio": "native"}}, "settings.audio"),
        ("omni-feature-single-shot", OMNI, {"contents": [{"type": "feature_video", "url": omni}], "settings": {"multi_shot": False}}, "settings.multi_shot"),
        ("omni-base-multi-shot", OMNI, {"contents": [{"type": "base_video", "url": omni}]}, "settings.multi_shot"),
        ("omni-base-with-frame", OMNI, {"contents": [frame, {"type": "base_video", "url": omni}], "settings": {"multi_shot": False}}, "contents"),
        ("omni-two-videos", OMNI, {"contents": [{"type": "feature_video", "url": omni}, {"type": "feature_video", "url": omni}]}, "contents[1]"),
        ("omni-video-base64", OMNI, {"contents": [{"type": "feature_video", "url": "AAAAGGZ0eXBtcDQy"}]}, "contents[0].url"),
        ("omni-video-1s", OMNI, {"contents": [{"type": "feature_video", "url": one_s}]}, "contents[0].url"),
        ("omni-video-avi", OMNI, {"contents": [{"type": "feature_video", "url": "https://example.com/a.avi"}]}, "contents[0].url"),
        ("omni-video-404", OMNI, {"contents": [{"type": "feature_video", "url": files.url("missing.mp4")}]}, "contents[0].url"),
        ("motion-no-orientation", MOTION_30, {"contents": [{"type": "image", "url": IMG}, {"type": "video", "url": omni}]}, "settings.character_orientation"),
        ("motion-no-video", MOTION_30, {"contents": [{"type": "image", "url": IMG}], "settings": {"character_orientation": "image"}}, "contents"),
        ("motion-4k", MOTION_30, {"contents": [{"type": "image", "url": IMG}, {"type": "video", "url": omni}], "settings": {"character_orientation": "image", "resolution": "4k"}}, "settings.resolution"),
        ("motion-2.6-element", MOTION_26, {"contents": [{"type": "image", "url": IMG}, {"type": "video", "url": omni}, {"type": "element", "element_id": PRESET_CORGI, "id": "e"}], "settings": {"character_orientation": "image"}}, "contents[2].type"),
        ("motion-video-320px", MOTION_30, {"contents": [{"type": "image", "url": IMG}, {"type": "video", "url": files.url("small.mp4")}], "settings": {"character_orientation": "image"}}, "contents[1].url"),
        ("motion-video-1s", MOTION_26, {"contents": [{"type": "image", "url": IMG}, {"type": "video", "url": one_s}], "settings": {"character_orientation": "video"}}, "contents[1].url"),
        ("v2.6-native-720p", V26_T2V, {"prompt": "x", "settings": {"audio": "native"}}, "settings.audio"),
        ("v2.6-duration-7", V26_T2V, {"prompt": "x", "settings": {"duration": 7}}, "settings.duration"),
        ("v2.6-voice-item", "/image-to-video/kling-2.6", {"contents": [frame, {"type": "voice", "voice_id": "v", "id": "v1"}]}, "contents[1].type"),
    ]  # fmt: skip


BAD_IDS = [
    "prompt-missing", "prompt-3073", "duration-16", "duration-2", "duration-string", "turbo-4k",
    "aspect-4:3", "audio-original-t2v", "shots-sum", "shots-7", "shot-words-513",
    "shot-0-seconds", "callback-ftp", "watermark-yes", "turbo-i2v-no-frame",
    "turbo-i2v-last-frame", "turbo-i2v-prompt-2501", "i2v-image-small", "i2v-last-alone",
    "i2v-4-elements", "i2v-unknown-element", "i2v-element-without-id", "duplicate-ids",
    "omni-no-aspect", "omni-8-images", "omni-feature-native", "omni-feature-single-shot",
    "omni-base-multi-shot", "omni-base-with-frame", "omni-two-videos", "omni-video-base64",
    "omni-video-1s", "omni-video-avi", "omni-video-404", "motion-no-orientation",
    "motion-no-video", "motion-4k", "motion-2.6-element", "motion-video-320px",
    "motion-video-1s", "v2.6-native-720p", "v2.6-duration-7", "v2.6-voice-item",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_IDS)
def test_invalid_new_design_field_is_refused_naming_it(client, files, case):
    [(_, path, body, field)] = [b for b in _bad(files) if b[0] == case]
    message = refused(client.post(path, json=body), 400, 1201)
    assert message.startswith(field), message
    assert all_tasks(client) == []  # nothing was created


def test_boundary_values_are_accepted(client, files):
    accepted = [
        (TURBO_T2V, {"prompt": "x" * 3072, "settings": {"duration": 15}}),
        (TURBO_T2V, {"prompt": _shots(6, 2), "settings": {"duration": 12}}),
        (V3_T2V, {"prompt": _shots(1, 3, "w" * 512), "settings": {"duration": 3}}),
        (OMNI, {"contents": [{"type": "refer_image", "url": IMG}] * 7, "settings": {"aspect_ratio": "1:1"}}),
        (OMNI, {"contents": [{"type": "base_video", "url": files.url("omni.mp4")}], "settings": {"multi_shot": False, "audio": "original"}}),
    ]  # fmt: skip
    for path, body in accepted:
        assert ok(client.post(path, json=body))["status"] == "submitted", body


def png_b64_of_size(size: int) -> str:
    """Raw Base64 of a valid 400x400 PNG of exactly ``size`` bytes: a private ancillary chunk
    (``prVt``, zeros, CRC correct) after the image data pads it, so decoders read an ordinary
    image. Built in memory; the zeros' Base64 is written as ``A``s, not encoded."""
    out = io.BytesIO()
    Image.new("RGB", (400, 400), "white").save(out, "PNG")
    png = out.getvalue()
    end = png.rindex(b"IEND") - 4  # the IEND chunk's length field
    pad = size - len(png) - 12  # 12: the padding chunk's length, type and CRC
    head = png[:end] + struct.pack(">I", pad) + b"prVt"
    tail = struct.pack(">I", zlib.crc32(bytes(pad), zlib.crc32(b"prVt"))) + png[end:]
    lead = -len(head) % 3  # zeros completing the head's last 3-byte group
    middle = (pad - lead) // 3 * 3  # zeros encoded as whole groups: 3 zero bytes = "AAAA"
    return (
        base64.b64encode(head + bytes(lead)).decode()
        + "A" * (middle // 3 * 4)
        + base64.b64encode(bytes(pad - lead - middle) + tail).decode()
    )


@pytest.mark.parametrize("extra", [0, 1], ids=["50MB-accepted", "50MB+1-refused"])
def test_contents_image_over_50_mb_is_refused_naming_it_and_50_mb_accepted(extra):
    """§4 common rules: a ``contents[]`` image is at most 50 MB on the 2026 design (10 MB on
    ``/v1``): exactly 50 MB passes, 50 MB + 1 byte is refused naming the field. Checked by
    the sandbox's create validation itself (the HTTP layer around it would only add seconds
    of moving 70 MB bodies; its own refusals are tested above)."""
    size = 50 * 1024 * 1024 + extra
    image = png_b64_of_size(size)
    assert len(image) * 3 // 4 - len(image) + len(image.rstrip("=")) == size
    body = {"contents": [{"type": "first_frame", "url": image}]}
    if not extra:
        assert validate_new(V3_I2V, body, elements=lambda _id: None)["kind"]
        return
    with pytest.raises(ApiError) as refusal:
        validate_new(V3_I2V, body, elements=lambda _id: None)
    assert (refusal.value.http_status, refusal.value.code) == (400, 1201)
    message = refusal.value.message
    assert message.startswith("contents[0].url"), message
    assert "50 MB" in message and f"got {size} bytes" in message


def test_element_names_must_not_be_substrings_of_each_other(sb, client):
    body = {
        "element_name": "Corgi pup",
        "element_description": "A small corgi",
        "reference_type": "image_refer",
        "element_image_list": {"frontal_image": IMG, "refer_images": [{"image_url": IMG}]},
    }
    tid = ok(client.post(ELEMENTS, json=body))["task_id"]
    sb.advance(TASK_SECONDS + 1)
    [element] = ok(client.get(f"{ELEMENTS}/{tid}"))["task_result"]["elements"]
    contents = [
        {"type": "prompt", "text": "@Corgi and @Corgi pup"},
        {"type": "element", "element_id": PRESET_CORGI, "id": "a"},
        {"type": "element", "element_id": str(element["element_id"]), "id": "b"},
    ]
    message = refused(
        client.post(OMNI, json={"contents": contents, "settings": {"aspect_ratio": "1:1"}}),
        400,
        1201,
    )
    assert "substrings" in message and "Corgi" in message
    # The account's own element alone is usable; another account's is not found.
    ok(client.post(OMNI, json={"contents": contents[2:], "settings": {"aspect_ratio": "1:1"}}))
    other_key = f"key-{uuid.uuid4().hex}"
    sb.config.api_keys[other_key] = "someone-else"
    other = httpx.post(
        f"{sb.base_url}{OMNI}",
        json={"contents": contents[2:], "settings": {"aspect_ratio": "1:1"}},
        headers={"Authorization": f"Bearer {other_key}"},
        trust_env=False,
    )
    assert "element_id" in refused(other, 400, 1201)


# ----- unified queries (KLING_API_2026.md §3) ---------------------------------------------------------


def test_get_tasks_by_ids_and_external_ids_with_batch_limit(sb, client):
    ids = [
        ok(client.post(TURBO_T2V, json={"prompt": f"p{i}", "options": {"external_task_id": f"x-{i}"}}))["id"]
        for i in range(3)
    ]  # fmt: skip
    legacy = ok(client.post(T2V, json={"prompt": "legacy", "external_task_id": "legacy-1"}))
    got = ok(client.get(TASKS, params={"task_ids": f"{ids[2]},{ids[0]},,{ids[2]},nope"}))
    assert [t["id"] for t in got] == [ids[2], ids[0]]  # asked order, once each, unknown left out
    got = ok(client.get(TASKS, params={"external_task_ids": "x-1,x-0"}))
    assert [t["external_id"] for t in got] == ["x-1", "x-0"]
    # Legacy tasks are not served by /tasks (the docs are silent: poll /v1 for them).
    assert ok(client.get(TASKS, params={"task_ids": legacy["task_id"]})) == []
    assert ok(client.get(TASKS, params={"external_task_ids": "legacy-1"})) == []
    # Batch limit: 100 ids answer, 101 are refused naming the parameter.
    hundred = ",".join([ids[0]] + [f"n{i}" for i in range(99)])
    assert len(ok(client.get(TASKS, params={"task_ids": hundred}))) == 1
    message = refused(client.get(TASKS, params={"task_ids": hundred + ",one-more"}), 400, 1201)
    assert message.startswith("task_ids") and "100" in message
    message = refused(
        client.get(TASKS, params={"task_ids": ids[0], "external_task_ids": "x-0"}), 400, 1201
    )
    assert "task_ids" in message and "external_task_ids" in message
    assert "task_ids" in refused(client.get(TASKS), 400, 1201)
    assert "task_ids" in refused(client.get(TASKS, params={"task_ids": ",,"}), 400, 1201)


def test_get_tasks_does_not_show_another_accounts_task(sb, client):
    tid = ok(client.post(TURBO_T2V, json={"prompt": "mine"}))["id"]
    with httpx.Client(
        base_url=sb.base_url, headers={"Authorization": f"Bearer {KEY}"}, trust_env=False
    ) as other:
        assert ok(other.get(TASKS, params={"task_ids": tid})) == []


def test_post_tasks_pages_with_cursor_and_filters(sb, client):
    ids = [ok(client.post(TURBO_T2V, json={"prompt": f"p{i}"}))["id"] for i in range(5)]
    sb.advance(TASK_SECONDS + 1)
    ok(client.post(TURBO_T2V, json={"prompt": "late"}))  # still submitted
    first = ok(
        client.post(
            TASKS, json={"limit": 2, "filters": [{"key": "status", "values": ["succeeded"]}]}
        )
    )
    assert set(first) == {"result", "count", "next_cursor", "has_more"}
    assert [t["id"] for t in first["result"]] == [ids[4], ids[3]]
    assert first["count"] == 2 and first["has_more"] and first["next_cursor"]
    body = {"cursor": first["next_cursor"], "limit": 2, "start_time": 0, "end_time": 1,
            "filters": [{"key": "status", "values": ["succeeded"]}]}  # fmt: skip
    second = ok(client.post(TASKS, json=body))  # times ignored with a cursor
    assert [t["id"] for t in second["result"]] == [ids[2], ids[1]]
    third = ok(client.post(TASKS, json={**body, "cursor": second["next_cursor"]}))
    assert [t["id"] for t in third["result"]] == [ids[0]]
    assert third["has_more"] is False and third["next_cursor"] == ""
    submitted = ok(
        client.post(
            TASKS, json={"filters": [{"key": "status", "values": ["submitted", "processing"]}]}
        )
    )
    assert submitted["count"] == 1
    assert (
        ok(client.post(TASKS, json={"filters": [{"key": "product_type", "values": ["image"]}]}))[
            "result"
        ]
        == []
    )
    everything = ok(client.post(TASKS, content=b""))  # no body: defaults
    assert everything["count"] == 6
    now = int(time.time() * 1000)
    future = ok(
        client.post(TASKS, json={"start_time": str(now + 10**9), "end_time": now + 2 * 10**9})
    )
    assert future["result"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"limit": 501}, "limit"),
        ({"limit": 0}, "limit"),
        ({"start_time": 10, "end_time": 5}, "start_time"),
        ({"end_time": "soon"}, "end_time"),
        ({"filters": [{"key": "model", "values": ["x"]}]}, "filters[0].key"),
        ({"filters": [{"key": "status", "values": ["succeed"]}]}, "filters[0].values"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_post_tasks_refuses_bad_fields(client, body, field):
    assert refused(client.post(TASKS, json=body), 400, 1201).startswith(field)


def test_post_tasks_limit_500_is_accepted(client):
    assert ok(client.post(TASKS, json={"limit": 500}))["result"] == []


# ----- callbacks (kling-docs/callback-protocol.txt; KLING_API_2026.md §6) ---------------------------


def test_get_tasks_serves_legacy_tasks_only_when_switched_on_in_the_new_shape(sb, client):
    """``GET /tasks`` leaves legacy tasks out by default (the docs are silent, §3); with
    ``unified_serves_legacy`` it answers them as 2026 items carrying what the legacy query
    carries: video (and watermarked copy), multi-shot images, element, units."""
    video = ok(client.post(T2V, json={"prompt": "x", "watermark_info": {"enabled": True}}))
    multi = ok(client.post(MULTI, json={"element_frontal_image": IMG}))
    element = ok(client.post(ELEMENTS, json={
        "element_name": "Hero", "element_description": "d", "reference_type": "image_refer",
        "element_image_list": {"frontal_image": IMG, "refer_images": [{"image_url": IMG}]},
    }))  # fmt: skip
    sb.advance(TASK_SECONDS + 1)
    ids = ",".join(task["task_id"] for task in (video, multi, element))
    assert ok(client.get(TASKS, params={"task_ids": ids})) == []

    sb.config.unified_serves_legacy = True  # the sb fixture's reset_faults puts it back
    items = {item["id"]: item for item in ok(client.get(TASKS, params={"task_ids": ids}))}

    legacy = {
        path: ok(client.get(f"{path}/{task['task_id']}"))
        for path, task in ((T2V, video), (MULTI, multi), (ELEMENTS, element))
    }
    for path, task in ((T2V, video), (MULTI, multi), (ELEMENTS, element)):
        item = items[task["task_id"]]
        assert set(item) == ITEM_KEYS and item["status"] == "succeeded"
        [charge] = item["billing"]
        assert charge["amount"] == legacy[path]["final_unit_deduction"]
    [out] = items[video["task_id"]]["outputs"]
    [kept] = legacy[T2V]["task_result"]["videos"]
    assert (out["type"], out["url"], out["watermark_url"]) == (
        "video",
        kept["url"],
        kept["watermark_url"],
    )
    shots = items[multi["task_id"]]["outputs"]
    urls = [img[f"url_{n}"] for img in legacy[MULTI]["task_result"]["images"] for n in (1, 2, 3)]
    assert [o["url"] for o in shots] == urls and {o["type"] for o in shots} == {"image"}
    [made] = items[element["task_id"]]["outputs"]
    [known] = legacy[ELEMENTS]["task_result"]["elements"]
    assert (made["type"], made["id"], made["name"]) == ("element", str(known["element_id"]), "Hero")
    frontal = known["element_image_list"]["frontal_image"]
    assert {"type": "image", "role": "frontal", "url": frontal} in made["references"]


def test_legacy_callbacks_carry_exactly_the_documented_subset(sb, receiver):
    jwt_headers = {"Authorization": f"Bearer {make_token(AK, SK)}"}
    with httpx.Client(
        base_url=sb.base_url, headers=jwt_headers, trust_env=False, timeout=30
    ) as http:
        video = ok(
            http.post(
                T2V,
                json={
                    "prompt": "x",
                    "watermark_info": {"enabled": True},
                    "callback_url": receiver.url,
                },
            )
        )["task_id"]
        multi = ok(
            http.post(MULTI, json={"element_frontal_image": IMG, "callback_url": receiver.url})
        )["task_id"]
        element = ok(http.post(ELEMENTS, json={
            "element_name": "Hero", "element_description": "d", "reference_type": "image_refer",
            "element_image_list": {"frontal_image": IMG, "refer_images": [{"image_url": IMG}]},
            "callback_url": receiver.url,
        }))["task_id"]  # fmt: skip
        sb.advance(TASK_SECONDS + 1)
        assert sb.wait_callbacks(10)
        final = {b["task_id"]: b for b in receiver.bodies if b["task_status"] == "succeed"}
        for tid in (video, multi, element):
            assert set(final[tid]) == LEGACY_CALLBACK_KEYS
            assert set(final[tid]["task_info"]) == {"external_task_id"}
        # Videos: {id, url, duration} only; the query has the watermarked copy.
        [cb_video] = final[video]["task_result"]["videos"]
        assert set(final[video]["task_result"]) == {"videos"}
        assert set(cb_video) == {"id", "url", "duration"}
        queried = ok(http.get(f"{T2V}/{video}"))
        assert queried["task_result"]["videos"][0]["watermark_url"]
        # Multi-shot: {index, url} per index, no url_1..url_3; the query has 9 URLs.
        images = final[multi]["task_result"]["images"]
        assert [set(i) for i in images] == [{"index", "url"}] * 3
        queried = ok(http.get(f"{MULTI}/{multi}"))["task_result"]["images"]
        assert [i["url"] for i in images] == [q["url_1"] for q in queried]
        # Elements: nothing in the callback's task_result; the query has the element.
        assert final[element]["task_result"] == {}
        assert ok(http.get(f"{ELEMENTS}/{element}"))["task_result"]["elements"][0]["element_id"]


def test_new_design_callbacks_are_task_items(sb, client, receiver):
    body = {"prompt": "x", "options": {"callback_url": receiver.url, "external_task_id": "cb-n"}}
    tid = ok(client.post(TURBO_T2V, json=body))["id"]
    sb.advance(TASK_SECONDS / 3 + 0.5)
    sb.advance(TASK_SECONDS)
    assert sb.wait_callbacks(10)
    mine = [b for b in receiver.bodies if b.get("id") == tid]
    assert [b["status"] for b in mine] == ["processing", "succeeded"]
    assert all(set(b) == ITEM_KEYS for b in mine)
    assert mine[-1] == one(client, tid)
    assert mine[-1]["external_id"] == "cb-n" and mine[-1]["billing"][0]["amount"] == "4"
    log = [e for e in sb.callbacks_log if e["task_id"] == tid]
    assert [e["task_status"] for e in log] == ["processing", "succeeded"]


# ----- prices and cash accounts (KLING_API_2026.md §7, §8) --------------------------------------------


@pytest.mark.parametrize(
    ("body", "units"),
    [
        ({"prompt": "x", "model_name": "kling-v2-6", "mode": "std", "duration": "5"}, "1.5"),
        ({"prompt": "x", "model_name": "kling-v2-6", "mode": "pro", "duration": "10"}, "5"),
        ({"prompt": "x", "model_name": "kling-v2-6", "mode": "pro", "sound": "on", "duration": "5"}, "5"),
        ({"prompt": "x", "model_name": "kling-v3", "mode": "std", "duration": "5"}, "3"),
        ({"prompt": "x", "model_name": "kling-v3", "mode": "pro", "sound": "on", "duration": "10"}, "12"),
        ({"prompt": "x", "model_name": "kling-v3", "mode": "4k", "duration": "5"}, "15"),
        ({"prompt": "x", "model_name": "kling-v2-5-turbo", "mode": "pro", "duration": "5"}, "2.5"),
    ],
    ids=["2.6-std-5s", "2.6-pro-10s", "2.6-sound", "v3-std", "v3-sound-pro-10s", "v3-4k", "2.5-turbo-pro"],
)  # fmt: skip
def test_legacy_text2video_charges_the_published_table(sb, client, body, units):
    tid = ok(client.post(T2V, json=body))["task_id"]
    sb.advance(TASK_SECONDS + 1)
    task = ok(client.get(f"{T2V}/{tid}"))
    assert task["final_unit_deduction"] == units
    assert "final_balance_deduction" not in task  # a unit account


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x", "model_name": "kling-v2-6", "sound": "on"}, "sound"),
        ({"prompt": "x", "model_name": "kling-v1", "sound": "off"}, "sound"),
        ({"prompt": "x", "model_name": "kling-v2-6", "mode": "4k"}, "mode"),
    ],
)
def test_legacy_sound_and_4k_rules(client, body, field):
    assert refused(client.post(T2V, json=body), 400, 1201).startswith(field)


def test_cash_account_reports_money(sb, client, receiver):
    sb.config.cash, sb.config.cash_discount = True, 0.8
    now = int(time.time() * 1000)
    costs = {"start_time": now - 1000, "end_time": now + 10**6}
    pack_before = ok(client.get("/account/costs", params=costs))["resource_pack_subscribe_infos"]
    legacy = ok(client.post(T2V, json={"prompt": "x", "callback_url": receiver.url}))["task_id"]
    new = ok(client.post(TURBO_T2V, json={"prompt": "x", "settings": {"resolution": "1080p"}}))[
        "id"
    ]
    sb.advance(TASK_SECONDS + 1)
    task = ok(client.get(f"{T2V}/{legacy}"))
    # kling-v1 std 5 s = 1.5 units = 0.21 USD list; charged at 80 %.
    assert task["final_unit_deduction"] == "0"
    assert task["final_balance_deduction"] == {"quota": "0.168", "list_price": "0.21"}
    assert sb.wait_callbacks(10)
    [final] = [
        b for b in receiver.bodies if b["task_id"] == legacy and b["task_status"] == "succeed"
    ]
    assert set(final) == LEGACY_CALLBACK_KEYS | {"final_balance_deduction"}
    assert final["final_balance_deduction"] == task["final_balance_deduction"]
    # Turbo 1080p 5 s = 5 units = 0.70 USD list.
    assert one(client, new)["billing"] == [
        {"charge_type": "cash", "cash_type": "balance", "amount": "0.56", "currency": "USD", "list_price": "0.7"}
    ]  # fmt: skip
    # A cash account's resource pack is not touched.
    pack_after = ok(client.get("/account/costs", params=costs))["resource_pack_subscribe_infos"]
    assert pack_after[0]["remaining_quantity"] == pack_before[0]["remaining_quantity"]
    snap = {t["task_id"]: t for t in sb.tasks_snapshot()}
    assert snap[new]["cash"] == ("0.56", "0.7") and snap[new]["design"] == "new"


def test_unit_account_pack_goes_down_by_the_table_figure(sb, client):
    now = int(time.time() * 1000)
    costs = {"start_time": now - 1000, "end_time": now + 10**6}
    before = Decimal(
        str(
            ok(client.get("/account/costs", params=costs))["resource_pack_subscribe_infos"][0][
                "remaining_quantity"
            ]
        )
    )
    ok(client.post(V3_T2V, json={"prompt": "x", "settings": {"audio": "native", "duration": 10}}))
    sb.advance(TASK_SECONDS + 1)
    after = Decimal(
        str(
            ok(client.get("/account/costs", params=costs))["resource_pack_subscribe_infos"][0][
                "remaining_quantity"
            ]
        )
    )
    assert before - after == Decimal("9")  # 3.0 native 720p: 0.9 units/s × 10 s


# ----- element reference videos by URL only (kling-docs/elements.txt) ---------------------------------


def _video_element(url: str) -> dict:
    return {
        "element_name": "Actor",
        "element_description": "A real person",
        "reference_type": "video_refer",
        "element_video_list": {"refer_videos": [{"video_url": url}]},
    }


def test_element_video_is_fetched_from_its_url(sb, client, files):
    url = files.url("element.mp4")
    hits = files.hits.get("/element.mp4", 0)
    tid = ok(client.post(ELEMENTS, json=_video_element(url)))["task_id"]
    assert files.hits["/element.mp4"] == hits + 1  # the sandbox fetched it
    sb.advance(TASK_SECONDS + 1)
    task = ok(client.get(f"{ELEMENTS}/{tid}"))
    [element] = task["task_result"]["elements"]
    kept = element["element_video_list"]["refer_videos"][0]["video_url"]
    assert kept.startswith(sb.base_url)  # the vendor's own copy, not the expiring input URL
    assert httpx.get(kept, trust_env=False).headers["content-type"] == "video/mp4"
    assert task["final_unit_deduction"] == "0.05"


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("base64", "Base64"),
        ("missing.mp4", "could not be fetched (HTTP 404)"),
        ("huge.mp4", "200 MB"),
        ("slow.mp4", "within 0.5 s"),
        ("element-720p.mp4", "1080p"),
        ("one-second.mp4", "duration"),
    ],
)
def test_element_video_refusals(sb, client, files, name, words):
    sb.config.fetch_timeout = 0.5
    url = "AAAAIGZ0eXBpc29tAAACAGlzb21pc28y" if name == "base64" else files.url(name)
    message = refused(client.post(ELEMENTS, json=_video_element(url)), 400, 1201)
    assert message.startswith("element_video_list.refer_videos[0].video_url"), message
    assert words in message
    assert ok(client.get(ELEMENTS)) == []


# ----- 1304 (IP allow-list) ------------------------------------------------------------------------


def test_ip_allow_list_knob_refuses_every_request(sb, client):
    sb.config.account_error_code = 1304
    for response in (
        client.get(T2V),
        client.post(T2V, json={"prompt": "x"}),
        client.post(TURBO_T2V, json={"prompt": "x"}),
        client.get(TASKS, params={"task_ids": "1"}),
    ):
        assert "allow-list" in refused(response, 429, 1304)
    sb.reset_faults()
    ok(client.post(TURBO_T2V, json={"prompt": "x"}))


# ----- the command ----------------------------------------------------------------------------------


def test_command_reads_api_key_cash_and_account_code(monkeypatch, settings):
    from django.core.management.base import CommandError

    from klingweb.management.commands.kling_sandbox import resolve_options

    settings.KLING_API_KEY = "from-settings"
    values = resolve_options({})
    assert values["api_key"] == "from-settings" and values["cash"] is False
    monkeypatch.setenv("KLING_SANDBOX_CASH", "1")
    monkeypatch.setenv("KLING_SANDBOX_ACCOUNT_ERROR_CODE", "1304")
    values = resolve_options({"api_key": "flag-key"})
    assert values["api_key"] == "flag-key" and values["cash"] is True
    assert values["account_error_code"] == 1304
    with pytest.raises(CommandError):
        resolve_options({"account_error_code": 1200})
    with pytest.raises(CommandError):
        resolve_options({"cash_discount": 0.0})


def test_manage_py_kling_sandbox_with_api_key_and_cash():
    import os
    import select
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "KLING_SANDBOX_TASK_SECONDS": "0.3"}
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "kling_sandbox", "--port", "0", "--quiet",
         "--api-key", "cli-key-0001", "--cash"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the command printed nothing"
        base_url = proc.stdout.readline().strip()
        headers = {"Authorization": "Bearer cli-key-0001"}
        with httpx.Client(base_url=base_url, headers=headers, trust_env=False, timeout=30) as http:
            tid = ok(http.post(TURBO_T2V, json={"prompt": "x"}))["id"]
            deadline = time.monotonic() + 20
            while (item := one(http, tid))["status"] != "succeeded":
                assert time.monotonic() < deadline, item
                time.sleep(0.2)
            assert item["billing"][0]["charge_type"] == "cash"
            assert item["billing"][0]["list_price"] == "0.56"  # 0.8 units/s × 5 s × 0.14
            refused(http.get(T2V, headers={"Authorization": "Bearer wrong"}), 401, 1002)
        assert "...0001" in proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    json.dumps(out)  # printable
