"""Hostile uploads: sizes, contents, names, and how stored files are served back.

- A request body over the URL's ceiling (``UPLOAD_MAX_REQUEST_BYTES`` = 25 MB, 220 MB for
  the element form) is refused with 413 from its ``Content-Length``, before sign-in, CSRF or
  the form read a byte (in-process with an input that fails if read, and over a socket).
- Each file's size is checked on ``UploadedFile.size`` before it is decoded (the decoder
  never runs for an oversized file).
- Content is decided by decoding: HTML, SVG, GIF and text named ``.png``/``.mp3`` are
  refused; a PNG named ``x.svg`` is stored and served as a PNG.
- Names are never paths: ``../../etc/passwd.png`` and friends are stored under
  ``uploads/<team>/<kind>/<random>.<ext from content>``; nothing is written elsewhere.
- Serving: uploads, element files and kept results carry ``X-Content-Type-Options:
  nosniff`` and ``Content-Security-Policy: default-src 'none'; sandbox``; only images,
  sound and video are inline, anything else (HTML in a ``.bin``, a forged ``text/html``
  result) is an attachment; ``/media/`` is not served at all.
"""

from __future__ import annotations

import http.client
import io
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from elements_app.models import Element
from elements_app.validators import check_element_video
from tasks_app.models import Status, Task, TaskMedia
from tasks_app.uploads import upload_save
from tasks_app.validators import check_audio_file, check_image_file
from tests.test_elements import image_data
from tests.test_tasks_forms import image_bytes, wav_bytes

SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
)
HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
SANDBOX_CSP = "default-src 'none'; sandbox"


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.AXES_ENABLED = False
    return Path(settings.MEDIA_ROOT)


@pytest.fixture
def no_jobs(monkeypatch):
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **k: None)


class ExplodingInput:
    """A WSGI input that fails the test if anything reads it."""

    def read(self, *args):
        raise AssertionError("the body was read")

    readline = read


def declared(client: Client, url: str, length: int):
    return client.generic(
        "POST",
        url,
        b"",
        content_type="multipart/form-data; boundary=xyz",
        CONTENT_LENGTH=str(length),
        **{"wsgi.input": ExplodingInput()},
    )


MB = 1024 * 1024


class TestRequestCeiling:
    def test_oversized_bodies_are_413_before_anything_reads_them(self, portal):
        team = portal.team.code
        urls = [
            reverse("tasks-create", kwargs={"team": team, "family": "avatar"}),
            reverse("tasks-budgets", kwargs={"team": team}),
            reverse("accounts-login"),
            reverse("accounts-settings", kwargs={"team": team}),
            "/no/such/url/",
        ]
        for signed_in in (False, True):
            client = Client(enforce_csrf_checks=True)
            if signed_in:
                client.force_login(portal.member)
            for url in urls:
                response = declared(client, url, 25 * MB + 1)
                assert response.status_code == 413, url
                assert "Upload too large" in response.content.decode()

    def test_element_form_has_the_larger_ceiling(self, portal):
        url = reverse("elements-create", kwargs={"team": portal.team.code})
        client = Client()
        assert declared(client, url, 220 * MB + 1).status_code == 413
        # Under 220 MB it gets through the ceiling (then sign-in, without reading the body).
        assert declared(client, url, 210 * MB).status_code == 302

    def test_api_elements_has_the_larger_ceiling_and_api_tasks_the_common_one(self, portal):
        client = Client()  # no key: a body that passes the ceiling is then refused 401
        assert declared(client, "/api/v1/elements", 220 * MB + 1).status_code == 413
        assert declared(client, "/api/v1/elements", 210 * MB).status_code == 401
        assert declared(client, "/api/v1/tasks", 25 * MB + 1).status_code == 413

    def test_bodies_under_the_ceiling_are_untouched(self, client, portal, no_jobs):
        client.force_login(portal.member)
        url = reverse("tasks-create", kwargs={"team": portal.team.code, "family": "multi_shot"})
        png = SimpleUploadedFile("f.png", image_bytes(400, 400), content_type="image/png")
        assert client.post(url, {"frontal_image_file": png}).status_code == 302

    def test_refused_over_a_socket_without_waiting_for_the_body(self, live_server, portal):
        url = urlsplit(live_server.url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        started = time.monotonic()
        path = reverse("tasks-create", kwargs={"team": portal.team.code, "family": "avatar"})
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "multipart/form-data; boundary=xyz")
        conn.putheader("Content-Length", str(1024 * MB))
        conn.endheaders(b"--xyz\r\n")
        response = conn.getresponse()
        assert response.status == 413
        assert time.monotonic() - started < 5
        conn.close()


class NeverDecoded(io.BytesIO):
    """A file whose content must not be read: only its declared ``size`` may be used."""

    def __init__(self, size: int):
        super().__init__(b"\x89PNG\r\n\x1a\n")
        self.size = size
        self.name = "big.png"

    def read(self, *args):
        raise AssertionError("an oversized file was decoded")


class TestFieldSizes:
    def test_image_over_10_mb_refused_before_decoding(self, monkeypatch):
        import PIL.Image

        monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: pytest.fail("decoded"))
        with pytest.raises(ValidationError, match="10 MB"):
            check_image_file(NeverDecoded(10 * MB + 1))

    def test_audio_over_5_mb_refused_before_reading(self):
        with pytest.raises(ValidationError, match="5 MB"):
            check_audio_file(NeverDecoded(5 * MB + 1))

    def test_element_video_over_200_mb_refused_before_reading(self):
        with pytest.raises(ValidationError, match="200 MB"):
            check_element_video(NeverDecoded(200 * MB + 1))

    def test_oversized_image_through_the_form_names_the_limit(self, client, portal):
        client.force_login(portal.member)
        url = reverse("tasks-create", kwargs={"team": portal.team.code, "family": "multi_shot"})
        big = SimpleUploadedFile("big.png", image_bytes(400, 400, pad_to=10 * MB + 1))
        response = client.post(url, {"frontal_image_file": big})
        assert "the limit is 10 MB" in response.content.decode()
        assert not Task.objects.exists()


class TestContent:
    @pytest.mark.parametrize(
        "name,data",
        [
            ("face.png", HTML),
            ("face.png", SVG),
            ("x.svg", SVG),
            ("face.jpg", b"GIF89a" + b"\0" * 100),
            ("face.png", image_bytes(400, 400, fmt="GIF")),
            ("face.png", b""),
            ("face.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64),  # a PNG signature, no image
        ],
    )
    def test_not_an_image_is_refused(self, client, portal, name, data):
        client.force_login(portal.member)
        url = reverse("tasks-create", kwargs={"team": portal.team.code, "family": "multi_shot"})
        response = client.post(url, {"frontal_image_file": SimpleUploadedFile(name, data)})
        assert response.status_code == 200
        assert response.context["form"].errors
        assert not Task.objects.exists()

    @pytest.mark.parametrize("data", [HTML, SVG, b"ID3" + b"\0" * 200])
    def test_not_a_sound_is_refused(self, data):
        with pytest.raises(ValidationError):
            check_audio_file(SimpleUploadedFile("voice.mp3", data))

    def test_a_real_sound_is_accepted(self):
        assert check_audio_file(SimpleUploadedFile("v.mp3", wav_bytes(3.0))).format == "wav"


HOSTILE_NAMES = [
    "../../etc/passwd.png",
    "..\\..\\windows\\win.ini.png",
    "/etc/passwd.png",
    "x.svg",
    "evil.html",
    "a\x00b.png",
    "%2e%2e%2fescape.png",
    "C:\\temp\\x.png",
]


class TestNames:
    @pytest.mark.parametrize("name", HOSTILE_NAMES)
    def test_task_upload_names_are_never_paths(self, client, portal, media_root, name, no_jobs):
        client.force_login(portal.member)
        url = reverse("tasks-create", kwargs={"team": portal.team.code, "family": "multi_shot"})
        png = SimpleUploadedFile(name, image_bytes(400, 400), content_type="image/svg+xml")
        response = client.post(url, {"frontal_image_file": png})
        assert response.status_code == 302, response.content.decode()[-500:]
        stored = Task.objects.get().params["element_frontal_image"]["$file"]
        self._assert_safe(stored, portal, media_root)

    def test_element_upload_names_are_never_paths(self, client, portal, media_root, no_jobs):
        client.force_login(portal.member)
        files = {
            "frontal_image": SimpleUploadedFile("../../etc/passwd.png", image_bytes(400, 400)),
            "refer_images": [
                SimpleUploadedFile("x.svg", image_bytes(400, 400)),
                SimpleUploadedFile("/tmp/evil.html", image_bytes(400, 400)),
            ],
        }
        url = reverse("elements-create", kwargs={"team": portal.team.code})
        response = client.post(url, {**image_data(), **files})
        assert response.status_code == 302, response.content.decode()[-500:]
        element = Element.objects.get()
        for stored in [element.frontal_image.name, *element.refer_image_names()]:
            self._assert_safe(stored, portal, media_root)

    @staticmethod
    def _assert_safe(stored: str, portal, media_root: Path) -> None:
        parts = stored.split("/")
        assert parts[:2] == ["uploads", str(portal.team.code)], stored
        assert ".." not in parts and "\\" not in stored and "passwd" not in stored
        assert stored.endswith(".png"), stored  # from the content, not the name
        every_file = [p for p in media_root.rglob("*") if p.is_file()]
        assert every_file, "nothing stored"
        for path in every_file:
            assert path.resolve().is_relative_to(media_root.resolve())
            assert path.suffix in (".png", ".jpg", ".wav", ".mp3", ".mp4", ".bin")


class TestServing:
    def _get(self, client, portal, name: str, **query):
        rest = name.split("/", 2)[2]
        url = reverse("tasks-input", kwargs={"team": portal.team.code, "name": rest})
        return client.get(url, query)

    def test_images_are_inline_but_inert(self, client, portal):
        client.force_login(portal.viewer)
        # A PNG with HTML appended (a polyglot) is still served as a PNG, never sniffed.
        polyglot = image_bytes(400, 400) + HTML
        name = upload_save(team=portal.team, file=ContentFile(polyglot, name="x.svg"), kind="image")
        assert name.endswith(".png")
        response = self._get(client, portal, name)
        assert response.status_code == 200
        assert response["Content-Type"] == "image/png"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Security-Policy"] == SANDBOX_CSP
        assert "attachment" not in response.get("Content-Disposition", "")

    @pytest.mark.parametrize("data", [HTML, SVG, b"plain text"])
    def test_anything_else_is_an_attachment(self, client, portal, data):
        client.force_login(portal.viewer)
        name = upload_save(team=portal.team, file=ContentFile(data, name="page.html"), kind="image")
        assert name.endswith(".bin")
        response = self._get(client, portal, name)
        assert response["Content-Type"] == "application/octet-stream"
        assert response["Content-Disposition"].startswith("attachment")
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Security-Policy"] == SANDBOX_CSP

    def test_kept_result_with_a_forged_html_type_is_an_attachment(self, client, portal, settings):
        task = Task.objects.create(
            team=portal.team, family="text2video", status=Status.SUCCEED, finished_at=timezone.now()
        )
        media = TaskMedia.objects.create(
            task=task,
            kind="video",
            index=0,
            variant="url",
            source_url="https://cdn.example/v.mp4",
            content_type="text/html",
            kept_at=timezone.now(),
        )
        media.file.save("results/x/page.html", ContentFile(HTML), save=True)
        client.force_login(portal.viewer)
        url = reverse(
            "tasks-media-file",
            kwargs={"team": portal.team.code, "code": task.code, "media": media.code},
        )
        response = client.get(url)
        assert response.status_code == 200
        assert response["Content-Disposition"].startswith("attachment")
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Security-Policy"] == SANDBOX_CSP

    def test_element_files_are_inert(self, client, portal, no_jobs):
        client.force_login(portal.member)
        files = {
            "frontal_image": SimpleUploadedFile("f.svg", image_bytes(400, 400)),
            "refer_images": [SimpleUploadedFile("s.png", image_bytes(400, 400))],
        }
        client.post(
            reverse("elements-create", kwargs={"team": portal.team.code}),
            {
                **image_data(),
                **files,
            },
        )
        element = Element.objects.get()
        url = reverse(
            "elements-file",
            kwargs={"team": portal.team.code, "code": element.code, "which": "frontal"},
        )
        response = client.get(url)
        assert response.status_code == 200
        assert response["Content-Type"] == "image/png"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Security-Policy"] == SANDBOX_CSP

    def test_task_json_export_is_an_attachment(self, client, portal):
        task = Task.objects.create(
            team=portal.team, family="text2video", prompt="<script>x</script>"
        )
        client.force_login(portal.viewer)
        response = client.get(
            reverse("tasks-json", kwargs={"team": portal.team.code, "code": task.code})
        )
        assert response["Content-Type"] == "application/json"
        assert response["Content-Disposition"].startswith("attachment")

    def test_media_root_is_not_served(self, client, portal):
        name = upload_save(
            team=portal.team, file=ContentFile(image_bytes(400, 400), name="a.png"), kind="image"
        )
        client.force_login(portal.owner)
        assert client.get(f"/media/{name}").status_code == 404
