"""Object storage (issue 15 §1) against a real S3-compatible server on loopback (rclone).

Kept results and uploads land in the bucket; the portal's access-checked media views answer
members with a short-lived presigned redirect that serves the bytes, outsiders with 404; the
presigned URLs expire; inputs can be handed to Kling as presigned URLs; ``media_to_bucket``
moves local media idempotently; partial ``AWS_*`` settings stop the start with a clear error.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tempfile
import time
import tracemalloc
from html import unescape
from pathlib import Path

import httpx
import pytest
from django.core.files import File
from django.core.files.storage import FileSystemStorage, default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from elements_app.models import Element, ElementStatus
from klingweb.storage import (
    MEDIA_URL_SECONDS,
    media_presigned_input_url,
    media_url_for,
)
from tasks_app.families import resolve_files
from tasks_app.media import media_keep
from tasks_app.models import MediaKind, Status, Task, TaskMedia
from tasks_app.polling import tasks_poll
from tasks_app.uploads import upload_save
from tests import s3_support
from tests.cluster_support import (  # noqa: F401 - fast_passwords is an autouse fixture
    T2V,
    fast_passwords,
    in_flight_tasks,
    sandbox_account,
)
from tests.s3_support import storages_from_env

# The rclone server (session), its STORAGES, and a fresh bucket as default storage per test.
s3_server = s3_support.s3_server
s3_storages_template = s3_support.s3_storages_template
s3_storage = s3_support.s3_storage

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    """A temporary MEDIA_ROOT: with a bucket configured nothing may land here."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


def _local_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _refused(response: httpx.Response) -> bool:
    """An S3 refusal: 403 on Amazon S3; rclone answers 400 with the same AccessDenied code."""
    return response.status_code in (400, 403) and "<Code>AccessDenied</Code>" in response.text


# --- settings ------------------------------------------------------------------------------


def test_bucket_settings_select_the_s3_backend_with_sigv4_and_path_style(s3_storages_template):
    default = s3_storages_template["default"]
    assert default["BACKEND"] == "klingweb.storage.KlingwebS3Storage"
    options = default["OPTIONS"]
    assert options["signature_version"] == "s3v4"
    assert options["addressing_style"] == "path"
    assert options["endpoint_url"].startswith("http://127.0.0.1:")
    assert options["file_overwrite"] is False and options["default_acl"] is None


def test_a_plain_http_bucket_endpoint_may_feed_images_and_videos(s3_server):
    """The presigned redirect's target must pass the page's Content-Security-Policy."""
    out = storages_from_env(
        s3_server.env("media"), "s.CONTENT_SECURITY_POLICY['DIRECTIVES']['media-src']"
    )
    assert out.returncode == 0, out.stderr
    assert s3_server.endpoint_url in out.stdout
    out = storages_from_env({}, "s.CONTENT_SECURITY_POLICY['DIRECTIVES']['media-src']")
    assert out.returncode == 0 and s3_server.endpoint_url not in out.stdout, "only with it"


def test_without_a_bucket_media_stay_on_local_disk_even_with_aws_keys_in_the_environment():
    out = storages_from_env({"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x"})
    assert out.returncode == 0, out.stderr
    assert "django.core.files.storage.FileSystemStorage" in out.stdout
    assert "S3" not in out.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"AWS_S3_ENDPOINT_URL": "http://127.0.0.1:9000"},
            "AWS_S3_ENDPOINT_URL or AWS_S3_REGION_NAME is set but AWS_STORAGE_BUCKET_NAME is not",
        ),
        (
            {
                "AWS_STORAGE_BUCKET_NAME": "media",
                "AWS_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
                "AWS_ACCESS_KEY_ID": "only-the-key",
            },
            "Set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither",
        ),
        (
            {"AWS_STORAGE_BUCKET_NAME": "media", "AWS_S3_ENDPOINT_URL": "http://127.0.0.1:9000"},
            "AWS_S3_ENDPOINT_URL (an S3-compatible server) needs AWS_ACCESS_KEY_ID",
        ),
        (
            {"AWS_STORAGE_BUCKET_NAME": "media"},
            "AWS_S3_REGION_NAME must be set for an Amazon S3 bucket",
        ),
        (
            {"AWS_STORAGE_BUCKET_NAME": "media", "AWS_S3_ENDPOINT_URL": "minio:9000"},
            "AWS_S3_ENDPOINT_URL must be a URL",
        ),
    ],
)
def test_partial_s3_configuration_stops_the_start_with_a_clear_message(env, message):
    out = storages_from_env(env)
    assert out.returncode != 0
    assert "ImproperlyConfigured" in out.stderr
    assert message in out.stderr


# --- kept results --------------------------------------------------------------------------


def _finished(portal, sandbox) -> Task:
    account = sandbox_account(sandbox, portal.team)
    body = {**T2V, "watermark_info": {"enabled": True}}
    (task,) = in_flight_tasks(portal.team, portal.member, account, 1, body=body)
    sandbox.advance(2)
    tasks_poll()
    task.refresh_from_db()
    assert task.status == Status.SUCCEED
    return task


def test_kept_result_lands_in_the_bucket_and_the_page_redirects_members_to_it(
    client, portal, fresh_sandbox, s3_storage, media_root
):
    task = _finished(portal, fresh_sandbox)

    report = media_keep(task_pk=task.pk)

    assert (report.kept, report.failed, report.gave_up) == (2, 0, 0)
    vendor_bytes = httpx.get(task.result["videos"][0]["url"]).content
    for media in TaskMedia.objects.filter(task=task):
        head = s3_storage.head(media.file.name)
        assert head["ContentLength"] == media.size == len(vendor_bytes)
        assert head["ContentType"] == "video/mp4"
        assert s3_storage.get(media.file.name) == vendor_bytes
    assert _local_files(media_root) == [], "nothing kept on the local disk"

    client.force_login(portal.viewer)
    page = client.get(reverse("tasks-detail", kwargs={"team": portal.team.code, "code": task.code}))
    body = page.content.decode()
    video = unescape(re.search(r'<video controls preload="metadata" src="([^"]+)"', body)[1])
    watermarked = unescape(re.search(r'href="([^"]+)" download>Download the watermarked', body)[1])
    assert "/media/" in video and "/media/" in watermarked, "through the portal's views"
    answer = client.get(video)
    assert answer.status_code == 302
    location = answer["Location"]
    assert location.startswith(f"{s3_storage.server.endpoint_url}/{s3_storage.bucket}/results/")
    assert f"X-Amz-Expires={MEDIA_URL_SECONDS}" in location and "X-Amz-Signature=" in location
    served = httpx.get(location)
    assert served.status_code == 200 and served.content == vendor_bytes
    assert served.headers["content-type"] == "video/mp4"
    assert served.headers["content-disposition"].startswith("inline")
    download = httpx.get(client.get(watermarked)["Location"])
    assert download.headers["content-disposition"].startswith("attachment; filename=")
    assert download.headers["content-disposition"].endswith('-wm.mp4"')
    assert download.content == vendor_bytes

    client.force_login(portal.outsider)
    refused = client.get(video)
    assert refused.status_code == 404 and "Location" not in refused
    client.logout()
    anonymous = client.get(video)
    assert s3_storage.server.endpoint_url not in anonymous.get("Location", "")


def test_a_large_result_goes_up_in_parts_straight_from_the_disk(s3_storage):
    """The worker's memory stays flat: a 20 MB file is sent as a multipart upload (8 MB
    parts) read from its temporary file as it goes, never a whole part in memory (given a
    file object instead, s3transfer holds 16-28 MB of parts here)."""
    default_storage.exists("warm-up")  # boto3 loads its models (~7 MB) on first use
    data = os.urandom(20 * 1024 * 1024)
    with tempfile.NamedTemporaryFile(prefix="klingweb-test-") as tmp:
        tmp.write(data)
        tmp.flush()
        tracemalloc.start()
        try:
            name = default_storage.save("results/big/video-0-url.mp4", File(tmp, name="x.mp4"))
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"{peak} bytes held at once uploading 20 MB in 8 MB parts"
    assert s3_storage.head(name)["ContentLength"] == len(data)
    assert hashlib.md5(s3_storage.get(name)).digest() == hashlib.md5(data).digest()
    log = s3_storage.server.log.read_text()
    assert f"Moved (server-side) to: {s3_storage.bucket}/{name}" in log, "a multipart upload"


def test_presigned_url_expires(s3_storage):
    name = default_storage.save("results/t/image-0-url.png", File(io.BytesIO(_png())))
    # X-Amz-Date is in whole seconds, so a link of N s may live only N - 1 s: 3 s leaves a
    # loaded machine at least 2 s for the first GET.
    url = media_url_for(name, filename="a.png", content_type="image/png", expires_s=3)
    assert httpx.get(url).status_code == 200
    # Change the signature's first digit to a different one (a "0" replaced by "0" would
    # forge nothing: CI once drew a signature that began with 0).
    forged = re.sub(
        r"X-Amz-Signature=([0-9a-f])",
        lambda m: "X-Amz-Signature=" + ("1" if m.group(1) == "0" else "0"),
        url,
    )
    assert forged != url
    assert httpx.get(forged).status_code in (400, 403), "the signature is checked"
    time.sleep(4.2)
    assert _refused(httpx.get(url)), "an expired link no longer serves the file"


# --- uploads and inputs ---------------------------------------------------------------------


def test_uploads_live_in_the_bucket_served_by_redirect_and_handed_to_kling_by_url(
    client, portal, s3_storage, media_root
):
    png = _png()
    name = upload_save(
        team=portal.team, file=SimpleUploadedFile("x.png", png, "image/png"), kind="image"
    )
    assert s3_storage.get(name) == png and _local_files(media_root) == []
    # The worker sending the task reads it back from the bucket (Base64 for Kling today).
    assert resolve_files({"image": {"$file": name}}) == {"image": base64.b64encode(png).decode()}

    kling_url = media_presigned_input_url(name, content_type="image/png")
    fetched = httpx.get(kling_url)
    assert fetched.status_code == 200 and fetched.content == png
    assert fetched.headers["content-type"] == "image/png"
    listing = httpx.get(kling_url.split(name)[0])
    assert listing.status_code in (400, 403), "the signed URL grants no listing"

    rest = name.removeprefix(f"uploads/{portal.team.code}/")
    page_url = reverse("tasks-input", kwargs={"team": portal.team.code, "name": rest})
    client.force_login(portal.member)
    answer = client.get(page_url)
    assert answer.status_code == 302 and httpx.get(answer["Location"]).content == png
    client.force_login(portal.outsider)
    refused = client.get(page_url)
    assert refused.status_code == 404 and "Location" not in refused


def test_element_inputs_are_served_from_the_bucket_to_members_only(client, portal, s3_storage):
    png = _png()
    name = upload_save(
        team=portal.team, file=SimpleUploadedFile("f.png", png, "image/png"), kind="image"
    )
    element = Element.objects.create(
        team=portal.team,
        creator=portal.member,
        name="Hero",
        status=ElementStatus.SUCCEED,
        element_id="111",
        frontal_image=name,
    )
    page_url = reverse(
        "elements-file",
        kwargs={"team": portal.team.code, "code": element.code, "which": "frontal"},
    )
    client.force_login(portal.viewer)
    answer = client.get(page_url)
    assert answer.status_code == 302
    served = httpx.get(answer["Location"])
    assert served.content == png and served.headers["content-type"] == "image/png"
    client.force_login(portal.outsider)
    assert client.get(page_url).status_code == 404


def test_on_local_disk_no_presigned_urls_and_files_are_served_by_the_portal():
    name = default_storage.save("uploads/t/image/a.png", File(io.BytesIO(_png())))
    assert media_url_for(name, filename="a.png", content_type="image/png") is None
    assert media_presigned_input_url(name, content_type="image/png") is None


# --- media_to_bucket -----------------------------------------------------------------------


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("media_to_bucket", "--no-progress", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_media_to_bucket_is_refused_without_a_bucket():
    with pytest.raises(CommandError, match="AWS_STORAGE_BUCKET_NAME"):
        _run()


def test_media_to_bucket_moves_local_media_idempotently(client, portal, s3_storage, media_root):
    # Media kept on disk before the bucket was configured: a kept result and two uploads.
    disk = FileSystemStorage(location=media_root)
    video = os.urandom(9 * 1024 * 1024)  # above 8 MB: a multipart upload
    kept_name = disk.save("results/old/video-0-url.mp4", File(io.BytesIO(video)))
    disk.save("uploads/team/image/a.png", File(io.BytesIO(_png())))
    disk.save("uploads/team/audio/b.mp3", File(io.BytesIO(b"ID3" + os.urandom(5000))))
    task = Task.objects.create(
        team=portal.team, family="text2video", status=Status.SUCCEED, finished_at=timezone.now()
    )
    media = TaskMedia.objects.create(
        task=task,
        kind=MediaKind.VIDEO,
        index=0,
        variant="url",
        source_url="https://vendor.example/v.mp4",
        file=kept_name,
        content_type="video/mp4",
        size=len(video),
        kept_at=timezone.now(),
    )
    local = _local_files(media_root)

    assert "would copy 3 files" in _run("--dry-run")
    assert s3_storage.keys() == [], "a dry run copies nothing"

    first = _run()
    assert "copied 3 files" in first and "0 already there; 0 failed" in first
    assert s3_storage.keys() == local
    for name in local:
        assert s3_storage.get(name) == (media_root / name).read_bytes()
    assert _local_files(media_root) == local, "local files are kept without --delete-local"

    second = _run()
    assert "copied 0 files (0 bytes)" in second and "3 already there" in second

    # The same size but other bytes is not "already there": the ETag check recopies it.
    (media_root / "uploads/team/image/a.png").write_bytes(
        bytes(reversed((media_root / "uploads/team/image/a.png").read_bytes()))
    )
    assert "copied 1 files" in _run()

    # The page now serves the kept result from the bucket, through the same view.
    client.force_login(portal.member)
    answer = client.get(
        reverse(
            "tasks-media-file",
            kwargs={"team": portal.team.code, "code": task.code, "media": media.code},
        )
    )
    assert answer.status_code == 302 and httpx.get(answer["Location"]).content == video

    deleted = _run("--delete-local")
    assert "copied 0 files" in deleted and "3 deleted locally" in deleted
    assert _local_files(media_root) == [] and s3_storage.keys() == local
    assert "copied 0 files (0 bytes) to bucket" in _run(), "nothing left to move"


def test_media_to_bucket_reports_an_unreachable_bucket(settings, s3_storage, media_root):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            **settings.STORAGES["default"],
            "OPTIONS": {**settings.STORAGES["default"]["OPTIONS"], "bucket_name": "no-such"},
        },
    }
    media_root.mkdir(parents=True, exist_ok=True)
    with pytest.raises(CommandError, match="Cannot reach bucket 'no-such'"):
        _run()
