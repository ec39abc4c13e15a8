"""Forms keep what was valid (issue 14 item 8): after a form error, each upload that passed
its own checks is kept under a signed, short-lived token and used again on the next try;
the error outline marks the input at fault."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.core import signing
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils import timezone

from elements_app.models import Element
from tasks_app.kept import KEPT_MAX_AGE, KEPT_SALT, kept_sweep
from tasks_app.models import Task
from tests import s3_support
from tests.test_elements import image_data, png
from tests.test_tasks_forms import image_bytes, png_upload, wav_upload

HTMX = {"HTTP_HX_REQUEST": "true"}

# The rclone S3 server (session) and a fresh bucket as default storage per test.
s3_server = s3_support.s3_server
s3_storages_template = s3_support.s3_storages_template
s3_storage = s3_support.s3_storage


@pytest.fixture
def no_jobs(monkeypatch):
    """Record what would be enqueued instead of running it."""
    calls = []
    monkeypatch.setattr(
        "django_q.tasks.async_task", lambda func, *args, **kw: calls.append((func, args))
    )
    return calls


def avatar_url(team) -> str:
    return reverse("tasks-create", kwargs={"team": team.code, "family": "avatar"})


def token_of(body: str, field: str) -> str:
    """The value of the hidden ``<field>_kept`` input on the page ('' when absent)."""
    found = re.search(rf'name="{field}_kept" value="([^"]*)"', body)
    return found.group(1) if found else ""


def input_tag(body: str, name: str) -> str:
    """The ``<input …>`` tag named ``name``."""
    found = re.search(rf'<input[^>]*name="{name}"[^>]*>', body)
    assert found, name
    return found.group(0)


def first_try(client, team) -> str:
    """An avatar form with a valid portrait and a 1-second sound (too short): the page."""
    response = client.post(
        avatar_url(team),
        {
            "mode": "std",
            "prompt": "smile",
            "image_file": png_upload(name="portrait.png"),
            "sound_file": wav_upload(1.0, name="hello.wav"),
        },
        **HTMX,
    )
    assert response.status_code == 200
    return response.content.decode()


class TestAvatarKeepsTheImage:
    def test_sound_error_keeps_image_and_resubmit_uses_it(self, client, portal, no_jobs, settings):
        client.force_login(portal.member)
        body = first_try(client, portal.team)

        sound_group = body[body.index('id="id_sound_file-group"') :]
        sound_group = sound_group[: sound_group.index("</fieldset>")]
        assert "2 to 300" in sound_group or "seconds" in sound_group  # the sound's error
        assert "kept: " in body and "portrait.png" in body
        assert "kept: " not in sound_group  # the refused sound is not kept
        token = token_of(body, "image_file")
        assert token
        assert Task.objects.count() == 0 and no_jobs == []  # nothing queued while invalid

        response = client.post(
            avatar_url(portal.team),
            {
                "mode": "std",
                "prompt": "smile",
                "image_file_kept": token,
                "sound_file": wav_upload(3.0, name="hello.wav"),
            },
            **HTMX,
        )
        task = Task.objects.get()
        assert response["HX-Redirect"].endswith(f"/{task.code}/")
        stored = task.params["image"]["$file"]
        assert "/kept/" not in stored  # the task owns its own copy
        media = Path(settings.MEDIA_ROOT)
        assert (media / stored).read_bytes() == image_bytes(400, 400)
        assert "portrait.png" in task.summary

    def test_choosing_a_new_file_replaces_the_kept_one(self, client, portal, no_jobs, settings):
        client.force_login(portal.member)
        token = token_of(first_try(client, portal.team), "image_file")
        client.post(
            avatar_url(portal.team),
            {
                "mode": "std",
                "image_file_kept": token,
                "image_file": png_upload(500, 600, name="other.png"),
                "sound_file": wav_upload(3.0),
            },
            **HTMX,
        )
        task = Task.objects.get()
        stored = Path(settings.MEDIA_ROOT) / task.params["image"]["$file"]
        assert stored.read_bytes() == image_bytes(500, 600)
        assert "other.png" in task.summary

    def test_outline_marks_the_file_input_at_fault_not_the_url_box(self, client, portal):
        client.force_login(portal.member)
        body = first_try(client, portal.team)
        sound_file = input_tag(body, "sound_file")
        assert 'aria-invalid="true"' in sound_file and "is-invalid" in sound_file
        for name in ("sound_url", "image_url", "image_file"):
            tag = input_tag(body, name)
            assert "aria-invalid" not in tag and "is-invalid" not in tag, name


class TestTokensThatAreNotAccepted:
    def resubmit(self, client, team, token):
        return client.post(
            avatar_url(team),
            {"mode": "std", "image_file_kept": token, "sound_file": wav_upload(3.0)},
            **HTMX,
        ).content.decode()

    def test_forged_token(self, client, portal, no_jobs):
        client.force_login(portal.member)
        token = token_of(first_try(client, portal.team), "image_file")
        forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        body = self.resubmit(client, portal.team, forged)
        assert "Upload the avatar image or paste its URL." in body
        assert "no longer available" in body
        assert Task.objects.count() == 0 and no_jobs == []

    def test_token_signed_for_another_team_file(self, client, portal, no_jobs):
        """A token made (validly signed) by another team's member names that team's file:
        refused for this team, and its file is not offered."""
        client.force_login(portal.outsider)
        theirs = token_of(first_try(client, portal.other_team), "image_file")
        assert theirs
        client.force_login(portal.member)
        body = self.resubmit(client, portal.team, theirs)
        assert "Upload the avatar image or paste its URL." in body
        assert "portrait.png" not in body
        assert Task.objects.count() == 0

    def test_token_of_another_member_of_the_team(self, client, portal, no_jobs):
        client.force_login(portal.admin)
        token = token_of(first_try(client, portal.team), "image_file")
        client.force_login(portal.member)
        body = self.resubmit(client, portal.team, token)
        assert "Upload the avatar image or paste its URL." in body
        assert Task.objects.count() == 0

    def test_expired_token(self, client, portal, no_jobs, monkeypatch):
        client.force_login(portal.member)
        token = token_of(first_try(client, portal.team), "image_file")
        later = timezone.now().timestamp() + KEPT_MAX_AGE + 5
        monkeypatch.setattr(signing.time, "time", lambda: later)
        body = self.resubmit(client, portal.team, token)
        assert "Upload the avatar image or paste its URL." in body
        assert "no longer available" in body
        assert Task.objects.count() == 0

    def test_token_with_a_path_outside_the_kept_area(self, client, portal, no_jobs):
        """Even correctly signed, a name outside ``uploads/<team>/kept/`` is refused."""
        client.force_login(portal.member)
        outside = default_storage.save(f"uploads/{portal.team.code}/image/x.png", png_upload())
        token = signing.dumps(
            {"t": portal.team.pk, "u": portal.member.pk, "f": [[outside, "x.png"]]},
            salt=KEPT_SALT,
        )
        body = self.resubmit(client, portal.team, token)
        assert "Upload the avatar image or paste its URL." in body
        assert Task.objects.count() == 0


class TestElementForm:
    def test_valid_frontal_image_kept_after_another_fields_error(
        self, client, portal, settings, django_capture_on_commit_callbacks
    ):
        client.force_login(portal.member)
        create = reverse("elements-create", kwargs={"team": portal.team.code})
        response = client.post(
            create,
            {
                **image_data(name="n" * 21),
                "frontal_image": png("front.png"),
                "refer_images": [png("side0.png", color="#ff3355")],
            },
        )
        body = response.content.decode()
        assert "at most 20 characters" in body
        assert "kept: " in body and "front.png" in body and "side0.png" in body
        frontal, refers = token_of(body, "frontal_image"), token_of(body, "refer_images")
        assert frontal and refers
        assert not Element.objects.exists() and not Task.objects.exists()
        name_tag = input_tag(body, "name")
        assert 'aria-invalid="true"' in name_tag
        assert "aria-invalid" not in input_tag(body, "frontal_image")

        with django_capture_on_commit_callbacks():
            response = client.post(
                create,
                {**image_data(), "frontal_image_kept": frontal, "refer_images_kept": refers},
            )
        assert response.status_code == 302
        element = Element.objects.get()
        media = Path(settings.MEDIA_ROOT)
        assert "/kept/" not in element.frontal_image.name
        assert (media / element.frontal_image.name).read_bytes() == (png("front.png").read())
        assert len(element.refer_image_names()) == 1


class TestSweep:
    def test_abandoned_kept_files_are_swept_recent_ones_stay(self, client, portal, settings):
        client.force_login(portal.member)
        first_try(client, portal.team)
        media = Path(settings.MEDIA_ROOT)
        kept = [p for p in media.rglob("*") if p.is_file() and "/kept/" in str(p)]
        assert len(kept) == 1

        assert kept_sweep() == 0
        assert kept[0].is_file()

        assert kept_sweep(now=timezone.now() + timedelta(seconds=KEPT_MAX_AGE + 60)) == 1
        assert not kept[0].exists()

    def test_media_sweep_job_runs_it(self, client, portal, settings, monkeypatch):
        from tasks_app import jobs

        client.force_login(portal.member)
        first_try(client, portal.team)
        media = Path(settings.MEDIA_ROOT)
        kept = [p for p in media.rglob("*") if p.is_file() and "/kept/" in str(p)]
        old = timezone.now() - timedelta(seconds=KEPT_MAX_AGE + 60)
        import os

        os.utime(kept[0], (old.timestamp(), old.timestamp()))
        jobs.sweep_media()
        assert not kept[0].exists()


class TestInABucket:
    """The same with the S3 storage (a real S3-compatible server on loopback)."""

    def test_kept_upload_lives_in_the_bucket_is_used_and_swept(
        self, client, portal, no_jobs, s3_storage, settings
    ):
        client.force_login(portal.member)
        body = first_try(client, portal.team)
        token = token_of(body, "image_file")
        assert token and "portrait.png" in body
        assert [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()] == []

        client.post(
            avatar_url(portal.team),
            {"mode": "std", "image_file_kept": token, "sound_file": wav_upload(3.0)},
            **HTMX,
        )
        task = Task.objects.get()
        assert s3_storage.get(task.params["image"]["$file"]) == image_bytes(400, 400)

        assert kept_sweep() == 0
        assert kept_sweep(now=timezone.now() + timedelta(seconds=KEPT_MAX_AGE + 60)) == 1
        assert s3_storage.get(task.params["image"]["$file"]) == image_bytes(400, 400)
