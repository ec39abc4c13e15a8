"""Inputs by URL (issue 13 item 6): uploads reach Kling as signed, expiring URLs when the
portal has a public address, and element reference videos only that way.

What a person (or Kling) would notice: the input URL opens with its token and with nothing
else (bad, expired or other-purpose tokens 404; no listing; no session needed), answers with
the type the upload was checked as; a video element goes through the sandbox, which fetches
the clip from the portal's live server, and ends created; without a public address the
element form says so and saves nothing, while images still go as Base64. The create bodies
the worker really sends are read on the wire by a small recording relay between the portal
and the sandbox (``Relay``), so "no huge JSON body" is measured, not assumed.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from django.core import signing
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from elements_app.models import Element, ElementStatus
from elements_app.services import element_create
from tasks_app.inputs import (
    NO_PUBLIC_ADDRESS,
    InputNeedsPublicAddress,
    input_token_make,
    input_url,
    inputs_resolve,
)
from tasks_app.models import Status, Task
from tasks_app.uploads import upload_save
from tests import s3_support
from tests.test_elements import image_data, make_form, run_task, video, video_bytes

pytestmark = pytest.mark.django_db

PUBLIC = "https://portal.example.com"

# The rclone S3 server (session) and a fresh bucket as default storage, for the bucket test.
s3_server = s3_support.s3_server
s3_storages_template = s3_support.s3_storages_template
s3_storage = s3_support.s3_storage


# --- helpers -------------------------------------------------------------------------------


def png_bytes(size=(400, 400), color="#3355ff", fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def saved(team, data: bytes, name: str, kind: str) -> str:
    """Store ``data`` as an upload of ``team`` (as the forms do) and return its name."""
    return upload_save(team=team, file=SimpleUploadedFile(name, data), kind=kind)


def path_of(url: str) -> str:
    """The path of an absolute input URL (for the test client)."""
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


class Relay:
    """A recording HTTP relay in front of the sandbox: every request is forwarded as is and
    its method, path and raw body are kept in ``requests`` (what Kling received)."""

    def __init__(self, target: str) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                relay.requests.append((method, self.path, body))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("authorization", "content-type")
                }
                with httpx.Client(trust_env=False, timeout=30) as client:
                    answer = client.request(
                        method, target + self.path, content=body, headers=headers
                    )
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", ""))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def do_GET(self):  # noqa: N802
                self._forward("GET")

            def do_POST(self):  # noqa: N802
                self._forward("POST")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def creates(self) -> list[bytes]:
        """Raw bodies of the POSTs (create calls) that went through."""
        return [body for method, _path, body in self.requests if method == "POST"]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def relay(kling_settings, fresh_sandbox):
    """The operator default account talks to the sandbox through a ``Relay``."""
    served = Relay(fresh_sandbox.base_url)
    kling_settings.KLING_API_BASE_URL = served.url
    yield served
    served.close()


class FileServer:
    """Serves one body at ``/clip.mp4`` with a chosen ``Content-Type``."""

    def __init__(self, data: bytes, content_type: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(ConnectionError):
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/clip.mp4"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- the input URL: token only ---------------------------------------------------------------


class TestInputUrl:
    def test_the_token_opens_the_file_without_a_session(self, client, portal, settings):
        settings.PUBLIC_BASE_URL = PUBLIC
        data = png_bytes()
        name = saved(portal.team, data, "face.png", "image")
        url = input_url(name)
        assert url.startswith(f"{PUBLIC}/kling/input/") and url.endswith("/input.png")
        assert name not in url  # the storage path is not readable from the URL's path
        answer = client.get(path_of(url))  # anonymous: no session, no cookie
        assert answer.status_code == 200
        assert b"".join(answer.streaming_content) == data
        assert answer["Content-Type"] == "image/png"
        assert answer["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in answer["Content-Security-Policy"]
        assert "no-store" in answer["Cache-Control"]
        assert not answer.cookies

    def test_bad_tokens_and_other_paths_are_404(self, client, portal, settings):
        settings.PUBLIC_BASE_URL = PUBLIC
        name = saved(portal.team, png_bytes(), "face.png", "image")
        good = path_of(input_url(name))
        token = good.split("/")[3]
        forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        other_purpose = signing.dumps(name)  # default salt: not an input token
        callback_like = signing.dumps(name, salt="tasks_app.callbacks.task-callback")
        outside = input_token_make("../klingweb/settings.py")
        not_upload = input_token_make("media/results/x.png")
        for path in (
            f"/kling/input/{forged}/input.png",
            f"/kling/input/{other_purpose}/input.png",
            f"/kling/input/{callback_like}/input.png",
            f"/kling/input/{outside}/input.png",
            f"/kling/input/{not_upload}/input.png",
            f"/kling/input/{token}/input.jpg",  # not the file's own type
            f"/kling/input/{token}/",  # no listing, and no file without its segment
            "/kling/input/",
            f"/kling/input/{token}/../",
        ):
            assert client.get(path).status_code == 404, path
        assert client.post(good).status_code == 405
        assert client.get(good).status_code == 200

    def test_an_expired_token_is_404(self, client, portal, settings, monkeypatch):
        settings.PUBLIC_BASE_URL = PUBLIC
        settings.KLING_INPUT_URL_MAX_AGE = timedelta(hours=24)
        name = saved(portal.team, png_bytes(), "face.png", "image")
        real_time = time.time
        with monkeypatch.context() as m:  # a URL handed out 25 hours ago
            m.setattr(signing.time, "time", lambda: real_time() - 25 * 3600)
            old = input_url(name)
        with monkeypatch.context() as m:  # one handed out 23 hours ago
            m.setattr(signing.time, "time", lambda: real_time() - 23 * 3600)
            recent = input_url(name)
        assert client.get(path_of(old)).status_code == 404
        assert client.get(path_of(recent)).status_code == 200

    def test_a_deleted_upload_is_404(self, client, portal, settings):
        from django.core.files.storage import default_storage

        settings.PUBLIC_BASE_URL = PUBLIC
        name = saved(portal.team, png_bytes(), "face.png", "image")
        url = input_url(name)
        default_storage.delete(name)
        assert client.get(path_of(url)).status_code == 404
        with pytest.raises(FileNotFoundError):
            inputs_resolve({"image": {"$file": name}})

    def test_content_type_is_the_checked_type_not_the_uploaded_name(self, client, portal, settings):
        settings.PUBLIC_BASE_URL = PUBLIC
        jpeg = png_bytes(fmt="JPEG")
        name = saved(portal.team, jpeg, "looks-like.png", "image")  # a JPEG named .png
        answer = client.get(path_of(input_url(name)))
        assert answer["Content-Type"] == "image/jpeg" and input_url(name).endswith(".jpg")
        clip = saved(portal.team, video_bytes(1080, 1920, 4, "mov"), "clip.mp4", "video")
        answer = client.get(path_of(input_url(clip)))
        assert answer["Content-Type"] == "video/quicktime"
        # Content of no known type is never handed out by URL (nor served by a token).
        text = saved(portal.team, b"<html><script>alert(1)</script>", "x.png", "image")
        assert input_url(text) is None
        token = input_token_make(text)
        assert client.get(f"/kling/input/{token}/input.bin").status_code == 404


# --- the element form without a public address ---------------------------------------------


class TestWithoutPublicAddress:
    def test_element_form_refuses_a_video_and_saves_nothing(
        self, client, portal, settings, kling_settings, relay
    ):
        settings.PUBLIC_BASE_URL = ""
        client.force_login(portal.member)
        page_url = reverse("elements-create", kwargs={"team": portal.team.code})
        page = client.get(page_url).content.decode()
        assert 'id="video-needs-address"' in page and "PUBLIC_BASE_URL" in page
        answer = client.post(
            page_url,
            {**image_data(reference_type="video_refer"), "video": video()},
        )
        assert answer.status_code == 200
        assert "has no public address" in answer.content.decode()
        assert not Element.objects.exists() and not Task.objects.exists()
        assert not [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]
        assert relay.requests == []
        # The form itself says why (every create path validates with it).
        form = make_form(image_data(reference_type="video_refer"), {"video": video()}, portal.team)
        assert not form.is_valid()
        assert [e for e in form.errors["video"] if e.startswith(NO_PUBLIC_ADDRESS)]
        assert "create the element from images" in form.errors["video"][-1]

    def test_with_a_public_address_the_form_offers_videos(self, client, portal, settings):
        settings.PUBLIC_BASE_URL = PUBLIC
        client.force_login(portal.member)
        page = client.get(reverse("elements-create", kwargs={"team": portal.team.code}))
        assert 'id="video-needs-address"' not in page.content.decode()

    def test_images_still_go_as_base64_and_the_element_is_created(
        self, portal, settings, kling_settings, relay, fresh_sandbox
    ):
        settings.PUBLIC_BASE_URL = ""
        files = {
            "frontal_image": SimpleUploadedFile("f.png", png_bytes()),
            "refer_images": [SimpleUploadedFile("s.png", png_bytes(color="#ff3355"))],
        }
        form = make_form(image_data(), files, portal.team)
        assert form.is_valid(), form.errors
        element = element_create(team=portal.team, user=portal.member, data=form.cleaned_data)
        task = run_task(fresh_sandbox, element.task)
        assert task.status == Status.SUCCEED
        [body] = [json.loads(raw) for raw in relay.creates()]
        frontal = body["element_image_list"]["frontal_image"]
        assert base64.b64decode(frontal) == png_bytes()
        element.refresh_from_db()
        assert element.status == ElementStatus.SUCCEED

    def test_no_task_with_a_video_input_is_queued(self, portal, settings, kling_settings):
        """The last check before queuing, for any family (forms should refuse earlier)."""
        from tasks_app.submission import task_queue

        settings.PUBLIC_BASE_URL = ""
        name = saved(portal.team, video_bytes(1920, 1080, 5), "clip.mp4", "video")
        params = {
            "element_name": "Actor",
            "element_description": "A real person",
            "reference_type": "video_refer",
            "element_video_list": {"refer_videos": [{"video_url": {"$file": name}}]},
        }
        with pytest.raises(InputNeedsPublicAddress):
            task_queue(team=portal.team, user=portal.member, family="element", params=params)
        assert not Task.objects.exists()
        settings.PUBLIC_BASE_URL = PUBLIC
        task = task_queue(team=portal.team, user=portal.member, family="element", params=params)
        assert task.status == Status.QUEUED

    def test_a_queued_video_task_is_refused_if_the_address_went_away(
        self, portal, settings, kling_settings, relay
    ):
        from tasks_app.jobs import submit_task

        settings.PUBLIC_BASE_URL = PUBLIC
        form = make_form(image_data(reference_type="video_refer"), {"video": video()}, portal.team)
        assert form.is_valid(), form.errors
        element = element_create(team=portal.team, user=portal.member, data=form.cleaned_data)
        settings.PUBLIC_BASE_URL = ""  # the operator removed it before the worker ran
        submit_task(element.task.pk)
        task = Task.objects.get(pk=element.task.pk)
        assert task.status == Status.ERROR and "no public address" in task.error_message
        assert relay.creates() == []  # nothing was sent, least of all the video as Base64
        with pytest.raises(InputNeedsPublicAddress):
            element_create(team=portal.team, user=portal.member, data=form.cleaned_data)


# --- through the sandbox, by URL -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
class TestThroughTheSandbox:
    def test_video_element_goes_by_url_and_ends_created(
        self, live_server, portal, kling_settings, relay, fresh_sandbox
    ):
        kling_settings.PUBLIC_BASE_URL = live_server.url
        # Legacy callbacks carry no element data (the documented subset); the poller must
        # learn the result until callbacks only trigger a query (another part of issue 13).
        fresh_sandbox.config.callback_drop_rate = 1.0
        clip = video_bytes(1920, 1080, 5)
        form = make_form(
            image_data(reference_type="video_refer", name="Presenter"),
            {"video": SimpleUploadedFile("clip.mp4", clip)},
            portal.team,
        )
        assert form.is_valid(), form.errors
        element = element_create(team=portal.team, user=portal.member, data=form.cleaned_data)
        task = run_task(fresh_sandbox, element.task)
        assert task.status == Status.SUCCEED, task.error_message

        [raw] = relay.creates()
        body = json.loads(raw)
        sent = body["element_video_list"]["refer_videos"][0]["video_url"]
        assert sent.startswith(f"{live_server.url}/kling/input/") and sent.endswith("/input.mp4")
        # No Base64 in the body: it is a few hundred bytes whatever the clip's size.
        base64_size = len(base64.b64encode(clip))
        assert len(raw) < 2048 < base64_size
        # The URL still serves the clip to anyone holding it (as the sandbox did).
        fetched = httpx.get(sent, trust_env=False)
        assert fetched.content == clip and fetched.headers["content-type"] == "video/mp4"

        element.refresh_from_db()
        assert element.status == ElementStatus.SUCCEED
        # Kling keeps its own copy: the element does not point at the expiring input URL.
        assert element.vendor_video_url.startswith(fresh_sandbox.base_url)
        assert element.task.params["element_video_list"]["refer_videos"][0]["video_url"] == {
            "$file": element.video.name
        }

    def test_images_go_by_url_when_there_is_a_public_address(
        self, live_server, portal, kling_settings, relay, fresh_sandbox
    ):
        kling_settings.PUBLIC_BASE_URL = live_server.url
        fresh_sandbox.config.callback_drop_rate = 1.0
        files = {
            "frontal_image": SimpleUploadedFile("f.png", png_bytes()),
            "refer_images": [SimpleUploadedFile("s.png", png_bytes(color="#ff3355"))],
        }
        form = make_form(image_data(), files, portal.team)
        assert form.is_valid(), form.errors
        element = element_create(team=portal.team, user=portal.member, data=form.cleaned_data)
        assert run_task(fresh_sandbox, element.task).status == Status.SUCCEED
        [body] = [json.loads(raw) for raw in relay.creates()]
        frontal = body["element_image_list"]["frontal_image"]
        assert frontal.startswith(f"{live_server.url}/kling/input/")
        answer = httpx.get(frontal, trust_env=False)
        assert answer.content == png_bytes() and answer.headers["content-type"] == "image/png"


def test_with_an_object_store_kling_fetches_the_video_from_the_bucket(
    client, portal, settings, kling_settings, relay, fresh_sandbox, s3_storage
):
    """No PUBLIC_BASE_URL, but a bucket: the form accepts a video and the create body holds
    a presigned bucket URL, which the sandbox fetches (rclone, loopback)."""
    settings.PUBLIC_BASE_URL = ""
    clip = video_bytes(1920, 1080, 5)
    form = make_form(
        image_data(reference_type="video_refer"),
        {"video": SimpleUploadedFile("clip.mp4", clip)},
        portal.team,
    )
    assert form.is_valid(), form.errors
    element = element_create(team=portal.team, user=portal.member, data=form.cleaned_data)
    assert s3_storage.get(element.video.name) == clip
    assert run_task(fresh_sandbox, element.task).status == Status.SUCCEED
    [raw] = relay.creates()
    sent = json.loads(raw)["element_video_list"]["refer_videos"][0]["video_url"]
    assert sent.startswith(s3_storage.server.endpoint_url) and "X-Amz-Signature=" in sent
    assert len(raw) < 4096 < len(base64.b64encode(clip))
    element.refresh_from_db()
    assert element.status == ElementStatus.SUCCEED
    # A portal input link made before the bucket was configured still works: it redirects.
    link = f"/kling/input/{input_token_make(element.video.name)}/input.mp4"
    answer = client.get(link)
    assert answer.status_code == 302
    moved = httpx.get(answer["Location"], trust_env=False)
    assert moved.content == clip and moved.headers["content-type"] == "video/mp4"


# --- the sandbox checks what it fetched ------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/html", "application/octet-stream"])
def test_sandbox_refuses_a_reference_video_not_served_as_a_video(
    portal, kling_settings, fresh_sandbox, content_type
):
    from klingweb.accounts.models import KlingAccount
    from klingweb.accounts.services import kling_client_for
    from klingweb.kling import KlingError

    served = FileServer(video_bytes(1920, 1080, 5), content_type)
    try:
        client = kling_client_for(KlingAccount.objects.operator_default())
        body = {
            "element_name": "Actor",
            "element_description": "A real person",
            "reference_type": "video_refer",
            "element_video_list": {"refer_videos": [{"video_url": served.url}]},
        }
        with pytest.raises(KlingError) as refused:
            client.create_task("element", body)
        assert refused.value.code == 1201
        assert "did not answer with a video" in str(refused.value)
    finally:
        served.close()
