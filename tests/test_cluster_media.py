"""Keeping results: downloaded from the sandbox's /sandbox-media/ URLs into storage, served
to the team, checked for type and size, refused for non-http(s) URLs, retried later."""

from __future__ import annotations

import base64
import io
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from django.core.files.storage import default_storage
from django.utils import timezone
from PIL import Image

from tasks_app.media import media_for_display, media_keep, media_sweep
from tasks_app.models import Status, Task, TaskMedia
from tasks_app.polling import tasks_poll
from tests.cluster_support import (  # noqa: F401 - fast_passwords is an autouse fixture
    T2V,
    fast_passwords,
    in_flight_tasks,
    sandbox_account,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def _png_b64() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (400, 400), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _finished(portal, sandbox, *, family, body) -> Task:
    account = sandbox_account(sandbox, portal.team)
    (task,) = in_flight_tasks(portal.team, portal.member, account, 1, family=family, body=body)
    sandbox.advance(2)
    tasks_poll()
    task.refresh_from_db()
    assert task.status == Status.SUCCEED
    return task


def test_video_and_watermarked_copy_are_kept_and_served(client, portal, fresh_sandbox):
    task = _finished(
        portal,
        fresh_sandbox,
        family="text2video",
        body={**T2V, "watermark_info": {"enabled": True}},
    )
    before = media_for_display(task)
    assert [(m.variant, m.is_kept) for m in before] == [("url", False), ("watermark_url", False)]
    assert before[0].url == task.result["videos"][0]["url"], "vendor URL until kept"
    assert before[0].vendor_days_left == 30

    report = media_keep(task_pk=task.pk)

    assert (report.kept, report.failed, report.gave_up) == (2, 0, 0)
    assert media_keep(task_pk=task.pk).already == 2, "idempotent"
    vendor_bytes = httpx.get(task.result["videos"][0]["url"]).content
    for media in TaskMedia.objects.filter(task=task):
        assert media.content_type == "video/mp4" and media.size == len(vendor_bytes)
        assert media.file.name.startswith(f"results/{portal.team.code}/{task.code}/video-0-")
        with default_storage.open(media.file.name, "rb") as fh:
            assert fh.read() == vendor_bytes
    shown = media_for_display(Task.objects.get(pk=task.pk))
    assert all(m.is_kept for m in shown) and shown[1].is_watermarked
    client.force_login(portal.viewer)
    served = client.get(shown[0].url)
    assert served.status_code == 200 and served["Content-Type"] == "video/mp4"
    assert b"".join(served.streaming_content) == vendor_bytes
    client.force_login(portal.outsider)
    assert client.get(shown[0].url).status_code == 404


def test_every_multi_shot_image_url_is_kept(portal, fresh_sandbox):
    task = _finished(
        portal, fresh_sandbox, family="multi_shot", body={"element_frontal_image": _png_b64()}
    )
    report = media_keep(task_pk=task.pk)
    assert report.kept == 9, "3 images × url_1..url_3"
    kept = TaskMedia.objects.filter(task=task, kept_at__isnull=False)
    assert {m.content_type for m in kept} == {"image/png"}
    assert sorted((m.index, m.variant) for m in kept) == [
        (i, f"url_{n}") for i in range(3) for n in (1, 2, 3)
    ]


def test_files_over_the_size_limit_are_refused(portal, fresh_sandbox, settings):
    task = _finished(
        portal, fresh_sandbox, family="multi_shot", body={"element_frontal_image": _png_b64()}
    )
    settings.MEDIA_MAX_BYTES = 1024
    report = media_keep(task_pk=task.pk)
    assert report.gave_up == 9 and report.kept == 0
    media = TaskMedia.objects.filter(task=task).first()
    assert "1024" in media.last_error and not media.file
    assert media_for_display(task)[0].url == media.source_url, "still shown from the vendor"


def _succeeded(portal, result) -> Task:
    return Task.objects.create(
        team=portal.team,
        family="text2video",
        status=Status.SUCCEED,
        result=result,
        finished_at=timezone.now(),
        vendor_created_at=timezone.now() - timedelta(days=27, hours=1),
    )


def test_non_http_urls_are_never_fetched(portal):
    task = _succeeded(portal, {"videos": [{"id": "1", "url": "file:///etc/passwd"}]})
    report = media_keep(task_pk=task.pk)
    media = TaskMedia.objects.get(task=task)
    assert report.gave_up == 1 and media.gave_up and "non-http" in media.last_error
    shown = media_for_display(task)
    assert shown[0].vendor_days_left == 3


class _Origin(BaseHTTPRequestHandler):
    """A tiny loopback web server standing in for a vendor CDN that misbehaves."""

    fail_next = 0

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        if self.path == "/page.png":
            self._answer(200, b"<html>not an image</html>", "text/html")
        elif self.path == "/flaky.mp4":
            if type(self).fail_next > 0:
                type(self).fail_next -= 1
                self._answer(503, b"busy", "text/plain")
            else:
                self._answer(200, b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100, "video/mp4")
        elif self.path == "/endless.mp4":
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.end_headers()  # no Content-Length: the running count must stop it
            try:
                for _ in range(64):
                    self.wfile.write(b"\x00" * 65536)
            except OSError:
                pass
        else:
            self._answer(404, b"", "text/plain")

    def _answer(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def origin(settings):
    """A local origin playing the vendor's CDN; its host is the Kling host, as the
    sandbox's is, so the portal's refusal of private addresses lets it through."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.KLING_API_BASE_URL = f"http://127.0.0.1:{server.server_address[1]}"
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_wrong_content_type_and_endless_bodies_are_refused(portal, origin, settings):
    settings.MEDIA_MAX_BYTES = 1024 * 1024
    task = _succeeded(
        portal,
        {
            "images": [{"index": 0, "url": f"{origin}/page.png"}],
            "videos": [{"id": "1", "url": f"{origin}/endless.mp4"}],
        },
    )
    report = media_keep(task_pk=task.pk)
    assert report.gave_up == 2
    errors = dict(TaskMedia.objects.filter(task=task).values_list("kind", "last_error"))
    assert "text/html" in errors["image"]
    assert "1048576 bytes" in errors["video"]
    assert not any(m.file for m in TaskMedia.objects.filter(task=task))


def test_transient_failures_are_retried_by_the_sweep(portal, origin, monkeypatch):
    monkeypatch.setattr("tasks_app.media.time.sleep", lambda s: None)
    _Origin.fail_next = 3  # every quick try of the first job fails with 503
    task = _succeeded(portal, {"videos": [{"id": "1", "url": f"{origin}/flaky.mp4"}]})

    first = media_keep(task_pk=task.pk)

    media = TaskMedia.objects.get(task=task)
    assert first.failed == 1 and not media.gave_up and media.attempts == 1
    assert "503" in media.last_error and media.next_attempt_at > timezone.now()
    assert media_sweep() == 0, "not due yet"
    TaskMedia.objects.filter(pk=media.pk).update(next_attempt_at=timezone.now())
    assert media_sweep() == 1
    media.refresh_from_db()
    assert media.kept_at and media.attempts == 2 and media.last_error == ""


def test_sweep_keeps_succeeded_tasks_whose_job_was_lost(portal, origin):
    task = _succeeded(portal, {"videos": [{"id": "1", "url": f"{origin}/flaky.mp4"}]})
    _Origin.fail_next = 0
    assert media_sweep() == 1
    assert TaskMedia.objects.get(task=task).kept_at is not None
