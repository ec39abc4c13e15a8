"""What the portal itself fetches (``tasks_app.media``: keeping result media).

Only URLs from the vendor's own answers (``Task.result``) are fetched — never a URL a
person typed into a form (``Task.params``) — only over http(s) (redirects included),
only with an allowed media type, within ``MEDIA_MAX_BYTES`` (by Content-Length and by the
running count), within the per-read timeout and the whole-download limit
(``DOWNLOAD_SECONDS``). A local origin server on loopback plays the vendor's CDN.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from tasks_app import media as media_module
from tasks_app.media import MediaFetchError, MediaRejected, media_download, media_keep
from tasks_app.models import Status, Task, TaskMedia
from tests.test_tasks_forms import image_bytes

PNG = image_bytes(320, 320)


class Origin(BaseHTTPRequestHandler):
    """Serves the paths of ``ROUTES``; records every path asked for."""

    seen: list[str] = []

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        Origin.seen.append(self.path)
        route = self.path.split("?")[0]
        if route == "/ok.png":
            self._send(200, "image/png", PNG)
        elif route == "/page.html":
            self._send(200, "text/html", b"<html>hi</html>")
        elif route == "/big-declared.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
        elif route == "/big-undeclared.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass
        elif route == "/trickle.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                for _ in range(40):
                    self.wfile.write(b"\0" * 16)
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        elif route == "/stall.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "100")
            self.end_headers()
            time.sleep(2)
        elif route == "/to-file":
            self._redirect("file:///etc/passwd")
        elif route == "/to-ftp":
            self._redirect("ftp://127.0.0.1/x.png")
        elif route == "/to-localhost":
            port = self.server.server_address[1]
            self._redirect(f"http://localhost:{port}/ok.png?internal")
        elif route.startswith("/loop"):
            n = int(route[5:] or 0)
            self._redirect(f"/loop{n + 1}")
        else:
            self._send(404, "text/plain", b"no")

    def _send(self, status, content_type, data):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def origin():
    Origin.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def isolated(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x.png",
        "gopher://127.0.0.1:70/_x",
        "data:image/png;base64,AAAA",
        "javascript:alert(1)",
        "//127.0.0.1/x.png",
        "/etc/passwd",
        "http:///nohost.png",
    ],
)
def test_only_http_and_https_are_fetched(url):
    with pytest.raises(MediaRejected):
        media_download(url=url, kind="image")


@pytest.mark.parametrize("path", ["/to-file", "/to-ftp"])
def test_redirects_to_other_schemes_are_refused(origin, path):
    with pytest.raises((MediaRejected, MediaFetchError)):
        media_download(url=origin + path, kind="image")


def test_redirect_chains_are_bounded(origin):
    with pytest.raises((MediaRejected, MediaFetchError)):
        media_download(url=origin + "/loop0", kind="image")
    assert len([p for p in Origin.seen if p.startswith("/loop")]) <= 4


def test_a_good_image_is_fetched(origin):
    tmp, content_type, size = media_download(url=origin + "/ok.png", kind="image")
    try:
        assert (content_type, size) == ("image/png", len(PNG))
    finally:
        tmp.close()


def test_wrong_media_type_is_refused(origin):
    with pytest.raises(MediaRejected, match="Content-Type"):
        media_download(url=origin + "/page.html", kind="image")
    with pytest.raises(MediaRejected, match="Content-Type"):
        media_download(url=origin + "/ok.png", kind="video")


def test_size_limit_by_declared_length_and_by_count(origin):
    with pytest.raises(MediaRejected, match="allowed"):
        media_download(url=origin + "/big-declared.png", kind="image", max_bytes=1024)
    with pytest.raises(MediaRejected, match="allowed"):
        media_download(url=origin + "/big-undeclared.png", kind="image", max_bytes=100_000)


def test_whole_download_time_limit(origin, monkeypatch):
    monkeypatch.setattr(media_module, "DOWNLOAD_SECONDS", 0.5)
    started = time.monotonic()
    with pytest.raises(MediaFetchError, match="took more than"):
        media_download(url=origin + "/trickle.png", kind="image")
    assert time.monotonic() - started < 3


def test_stalled_server_hits_the_read_timeout(origin, monkeypatch):
    monkeypatch.setattr(media_module, "READ_TIMEOUT", 0.3)
    started = time.monotonic()
    with pytest.raises(MediaFetchError):
        media_download(url=origin + "/stall.png", kind="image")
    assert time.monotonic() - started < 2


def test_only_the_vendors_result_urls_are_fetched(origin, portal, settings):
    """A URL the user typed (params) is passed to Kling, never fetched by the portal."""
    settings.KLING_API_BASE_URL = origin  # the origin plays the vendor (as the sandbox does)
    task = Task.objects.create(
        team=portal.team,
        family="multi_shot",
        status=Status.SUCCEED,
        finished_at=timezone.now(),
        params={"element_frontal_image": origin + "/ok.png?typed-by-user"},
        result={"images": [{"index": 0, "url_1": origin + "/ok.png?vendor"}]},
    )
    report = media_keep(task_pk=task.pk)
    assert report.kept == 1
    assert Origin.seen == ["/ok.png?vendor"]
    kept = TaskMedia.objects.get(task=task)
    assert kept.file.name.startswith(f"results/{portal.team.code}/{task.code}/")
    assert default_storage.exists(kept.file.name)


def test_a_vendor_result_with_a_local_file_url_is_never_read(portal):
    task = Task.objects.create(
        team=portal.team,
        family="text2video",
        status=Status.SUCCEED,
        finished_at=timezone.now(),
        result={"videos": [{"id": "v", "url": "file:///etc/passwd", "duration": "5"}]},
    )
    report = media_keep(task_pk=task.pk)
    assert report.gave_up == 1 and report.kept == 0
    row = TaskMedia.objects.get(task=task)
    assert row.gave_up and not row.file


def _loopback_result_task(portal, url: str) -> Task:
    return Task.objects.create(
        team=portal.team,
        family="multi_shot",
        status=Status.SUCCEED,
        finished_at=timezone.now(),
        result={"images": [{"index": 0, "url_1": url}]},
    )


def test_results_on_private_addresses_are_refused_unless_on_the_kling_host(
    origin, portal, settings
):
    """SSRF: a result URL pointing into the portal's own network is never fetched, unless
    its host is the configured Kling base URL's (the sandbox on loopback)."""
    settings.KLING_API_BASE_URL = "https://api-singapore.klingai.com"
    task = _loopback_result_task(portal, origin + "/ok.png?internal")
    report = media_keep(task_pk=task.pk)
    assert report.kept == 0
    assert Origin.seen == []
    row = TaskMedia.objects.get(task=task)
    assert row.gave_up and "non-public address" in row.last_error


def test_a_redirect_from_the_kling_host_to_another_internal_host_is_refused(
    origin, portal, settings
):
    settings.KLING_API_BASE_URL = origin
    task = _loopback_result_task(portal, origin + "/to-localhost")
    report = media_keep(task_pk=task.pk)
    assert report.kept == 0
    assert Origin.seen == ["/to-localhost"]  # the internal hop was never requested
    assert "non-public address" in TaskMedia.objects.get(task=task).last_error
