"""Callbacks are triggers, a query is the truth (issue 13 item 5; KLING_API_2026.md §6).

The sandbox sends legacy callbacks with exactly the vendor's documented subset: no
``watermark_url``, no ``url_1..url_3``, no element data. Each test lets the sandbox run a
real task, posts the callbacks it tried to deliver to the portal's receiver, and runs what
the receiver enqueued (the confirming query) as an idle cluster would. What a person sees
is then checked: the element in the library, the watermarked copy, all nine multi-shot
images, one charge.
"""

from __future__ import annotations

import base64
import io
import json
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from elements_app.models import ElementStatus
from elements_app.services import element_create
from klingweb.kling import parse_task
from tasks_app import submission
from tasks_app.callbacks import callback_token_for
from tasks_app.models import Deduction, Status, Task, TaskMedia
from tasks_app.polling import tasks_poll
from tasks_app.services import task_apply_remote
from tests.conftest import SANDBOX_AK
from tests.jobs_support import CallbackJobs, callback_jobs_for, closed_port_url, record_jobs
from tests.test_elements import image_data, image_files, make_form

NO_CALLBACKS_HERE = "http://127.0.0.1:9"  # nothing listens: the sandbox logs the bodies

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def isolated(settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.KLING_WEBHOOK_SECRET = ""


@pytest.fixture
def kling(kling_settings, portal):
    """The operator default account on the sandbox; callbacks go nowhere (we post them)."""
    kling_settings.PUBLIC_BASE_URL = NO_CALLBACKS_HERE
    return kling_settings


@pytest.fixture
def jobs(monkeypatch, django_capture_on_commit_callbacks) -> CallbackJobs:
    return callback_jobs_for(monkeypatch, django_capture_on_commit_callbacks)


def submitted(task: Task) -> Task:
    assert submission.task_submit(task_pk=task.pk) == submission.SUBMITTED
    task.refresh_from_db()
    return task


def queue(portal, family: str, params: dict) -> Task:
    return submitted(
        submission.task_queue(
            team=portal.team, user=portal.member, family=family, params=params, prompt="p"
        )
    )


def text2video(portal, **extra) -> Task:
    params = {"model_name": "kling-v1-6", "prompt": "a fox", "mode": "std", "duration": "5"}
    return queue(portal, "text2video", {**params, **extra})


def png_base64(width: int = 400, height: int = 700) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "#3355ff").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def callbacks(sandbox, task: Task) -> list[dict]:
    """The callback bodies the sandbox tried to deliver for ``task``, in order."""
    assert sandbox.wait_callbacks(5)
    return [e["body"] for e in sandbox.callbacks_log if e["task_id"] == task.task_id]


def deliver(client, jobs: CallbackJobs, sandbox, task: Task) -> list[int]:
    """Post every callback of ``task`` to the receiver, running its jobs after each."""
    path = reverse("tasks-callback", kwargs={"token": callback_token_for(task)})
    return [jobs.post(client, path, body).status_code for body in callbacks(sandbox, task)]


def media_variants(task: Task) -> list[tuple[str, int, str]]:
    return sorted(
        (m.kind, m.index, m.variant)
        for m in TaskMedia.objects.filter(task=task, kept_at__isnull=False)
    )


class TestSubsetCallbacksAreConfirmed:
    def test_element_task_ends_with_the_element_and_its_data(
        self, client, portal, kling, fresh_sandbox, jobs
    ):
        form = make_form(image_data(voice_id="voice-7"), image_files(), portal.team)
        assert form.is_valid(), form.errors
        element = element_create(team=portal.team, user=portal.member, data=form.cleaned_data)
        task = submitted(element.task)
        fresh_sandbox.advance(5)
        final = callbacks(fresh_sandbox, task)[-1]
        assert final["task_status"] == "succeed" and final["task_result"] == {}  # the subset

        assert set(deliver(client, jobs, fresh_sandbox, task)) == {200}
        task.refresh_from_db()
        element.refresh_from_db()
        assert task.status == Status.SUCCEED and not task.needs_confirmation
        assert element.status == ElementStatus.SUCCEED, element.status_msg
        assert element.element_id.isdigit()
        assert element.voice_id == "voice-7"
        assert element.tags == [("o_102", "Character"), ("o_105", "Costume")]
        # Images go to Kling by the portal's signed link here (PUBLIC_BASE_URL is set); the
        # element's data names the image the vendor answered with.
        assert element.vendor_frontal_image_url.startswith(("http://", "https://"))
        assert Deduction.objects.filter(task=task).count() == 1
        client.force_login(portal.viewer)
        library = client.get(
            reverse("elements-list", kwargs={"team": portal.team.code})
        ).content.decode()
        assert "Hero" in library and "Ready" in library

    def test_a_watermarked_videos_watermarked_copy_is_kept(
        self, client, portal, kling, fresh_sandbox, jobs
    ):
        task = text2video(portal, watermark_info={"enabled": True})
        fresh_sandbox.advance(5)
        final = callbacks(fresh_sandbox, task)[-1]
        assert "watermark_url" not in final["task_result"]["videos"][0]  # the subset

        assert set(deliver(client, jobs, fresh_sandbox, task)) == {200}
        task.refresh_from_db()
        assert task.status == Status.SUCCEED
        assert task.result["videos"][0]["watermark_url"].endswith("-watermark.mp4")
        assert media_variants(task) == [("video", 0, "url"), ("video", 0, "watermark_url")]
        client.force_login(portal.member)
        page = client.get(
            reverse("tasks-detail", kwargs={"team": portal.team.code, "code": task.code})
        ).content.decode()
        assert "Download the watermarked copy of video 1" in page

    def test_multi_shot_keeps_all_nine_images(self, client, portal, kling, fresh_sandbox, jobs):
        task = queue(portal, "multi_shot", {"element_frontal_image": png_base64()})
        fresh_sandbox.advance(5)
        final = callbacks(fresh_sandbox, task)[-1]
        assert [sorted(image) for image in final["task_result"]["images"]] == [
            ["index", "url"]
        ] * 3  # the subset: one URL per index

        assert set(deliver(client, jobs, fresh_sandbox, task)) == {200}
        task.refresh_from_db()
        assert task.status == Status.SUCCEED
        expected = [("image", i, f"url_{n}") for i in range(3) for n in (1, 2, 3)]
        assert media_variants(task) == expected

    def test_failed_task_is_confirmed_with_its_reason(
        self, client, portal, kling, fresh_sandbox, jobs
    ):
        task = text2video(portal, prompt="sandbox:fail")
        fresh_sandbox.advance(5)
        assert set(deliver(client, jobs, fresh_sandbox, task)) == {200}
        task.refresh_from_db()
        assert task.status == Status.FAILED and not task.needs_confirmation
        assert task.task_status_msg
        assert not TaskMedia.objects.filter(task=task).exists()


class TestFaults:
    def test_kling_down_during_confirmation_then_the_next_poll_confirms(
        self, client, portal, kling, fresh_sandbox, jobs
    ):
        task = text2video(portal, watermark_info={"enabled": True})
        fresh_sandbox.advance(5)
        sandbox_url = kling.KLING_API_BASE_URL
        kling.KLING_API_BASE_URL = closed_port_url()  # Kling unreachable for the query
        assert set(deliver(client, jobs, fresh_sandbox, task)) == {200}
        task.refresh_from_db()
        # Applied as it came: finished and charged once, the watermarked copy not known yet.
        assert task.status == Status.SUCCEED and task.needs_confirmation
        assert "watermark_url" not in task.result["videos"][0]
        assert Deduction.objects.filter(task=task).count() == 1
        assert not TaskMedia.objects.filter(task=task).exists()  # kept once confirmed

        # Still down at the next cycle: the finished task waits, backing off, unchanged.
        report = tasks_poll(now=timezone.now() + timedelta(seconds=1))
        assert report.claimed == 1 and report.errors >= 1
        task.refresh_from_db()
        assert task.status == Status.SUCCEED and task.needs_confirmation
        assert task.claimed_until is None and task.next_poll_at is not None

        kling.KLING_API_BASE_URL = sandbox_url  # Kling is back: the next cycle confirms
        report = tasks_poll(now=timezone.now() + timedelta(minutes=10))
        assert report.claimed == 1 and report.errors == 0
        task.refresh_from_db()
        assert task.status == Status.SUCCEED and not task.needs_confirmation
        assert task.error_message == "" and not task.is_stale
        assert task.result["videos"][0]["watermark_url"].endswith("-watermark.mp4")
        assert Deduction.objects.filter(task=task).count() == 1
        assert task.events.filter(status=Status.SUCCEED).count() == 1
        # Confirmed: later cycles leave the finished task alone.
        assert tasks_poll(now=timezone.now() + timedelta(hours=2)).claimed == 0

    def test_vendor_down_for_an_element_then_the_poll_makes_it_ready(
        self, client, portal, kling, fresh_sandbox, jobs
    ):
        form = make_form(image_data(), image_files(), portal.team)
        assert form.is_valid(), form.errors
        element = element_create(team=portal.team, user=portal.member, data=form.cleaned_data)
        task = submitted(element.task)
        fresh_sandbox.advance(5)
        sandbox_url = kling.KLING_API_BASE_URL
        kling.KLING_API_BASE_URL = closed_port_url()
        deliver(client, jobs, fresh_sandbox, task)
        element.refresh_from_db()
        assert element.status == ElementStatus.FAILED  # the subset has no element (as today)
        kling.KLING_API_BASE_URL = sandbox_url
        tasks_poll(now=timezone.now() + timedelta(seconds=1))
        element.refresh_from_db()
        assert element.status == ElementStatus.SUCCEED and element.element_id.isdigit()
        assert Deduction.objects.filter(task=task).count() == 1

    def test_duplicate_callbacks_bill_once_and_a_late_one_asks_nothing(
        self,
        client,
        portal,
        kling,
        fresh_sandbox,
        jobs,
        monkeypatch,
        django_capture_on_commit_callbacks,
    ):
        fresh_sandbox.config.callback_duplicate_rate = 1.0
        task = text2video(portal)
        fresh_sandbox.advance(5)
        statuses = deliver(client, jobs, fresh_sandbox, task)
        assert len(statuses) >= 4 and set(statuses) == {200}
        deliver(client, jobs, fresh_sandbox, task)  # and all of them once more
        task.refresh_from_db()
        assert task.status == Status.SUCCEED and not task.needs_confirmation
        assert Deduction.objects.filter(task=task).count() == 1
        assert task.events.filter(status=Status.SUCCEED).count() == 1
        assert task.events.get(status=Status.SUCCEED).source == "callback"

        # Once confirmed, another final callback changes nothing and asks Kling nothing.
        recorded = record_jobs(monkeypatch, django_capture_on_commit_callbacks)
        final = callbacks(fresh_sandbox, task)[-1]
        path = reverse("tasks-callback", kwargs={"token": callback_token_for(task)})
        response = recorded.post(
            client, path, data=json.dumps(final), content_type="application/json"
        )
        assert response.status_code == 200 and recorded.names() == []

    def test_a_lost_confirmation_job_is_made_good_by_the_poller(
        self, client, portal, kling, fresh_sandbox, monkeypatch, django_capture_on_commit_callbacks
    ):
        """The worker running the confirmation dies: the task is still in flight for the
        poller, which reads the whole task."""
        recorded = record_jobs(monkeypatch, django_capture_on_commit_callbacks)
        task = text2video(portal, watermark_info={"enabled": True})
        fresh_sandbox.advance(5)
        for body in callbacks(fresh_sandbox, task):
            path = urlsplit(callback_url(task)).path
            recorded.post(client, path, data=json.dumps(body), content_type="application/json")
        assert "tasks_app.jobs.task_confirm" in recorded.names()
        recorded.queued.clear()  # lost with its worker
        task.refresh_from_db()
        assert task.status == Status.PROCESSING
        tasks_poll(now=timezone.now() + timedelta(minutes=1))
        task.refresh_from_db()
        assert task.status == Status.SUCCEED
        assert task.result["videos"][0]["watermark_url"]
        assert Deduction.objects.filter(task=task).count() == 1


def callback_url(task: Task) -> str:
    return reverse("tasks-callback", kwargs={"token": callback_token_for(task)})


class TestNewDesignCallbackConfirmed:
    """With an API key (the 2026 design accepts nothing else), a 2026 callback is confirmed
    by the unified query ``GET /tasks?task_ids=`` and the full answer is applied."""

    API_KEY = "klingweb-test-api-key-callbacks"

    def test_a_2026_callback_is_confirmed_and_its_watermarked_copy_kept(
        self, client, portal, kling, fresh_sandbox, jobs
    ):
        fresh_sandbox.config.api_keys[self.API_KEY] = SANDBOX_AK
        kling.KLING_API_KEY = self.API_KEY
        kling.KLING_ACCESS_KEY = kling.KLING_SECRET_KEY = ""
        task = queue(
            portal,
            "t2v_3_0_turbo",
            {
                "prompt": "a fox runs",
                "settings": {"resolution": "720p", "aspect_ratio": "16:9", "duration": 5},
                "options": {"watermark_info": {"enabled": True}},
            },
        )
        fresh_sandbox.advance(5)
        final = callbacks(fresh_sandbox, task)[-1]
        assert final["id"] == task.task_id and final["status"] == "succeeded"

        assert set(deliver(client, jobs, fresh_sandbox, task)) == {200}
        task.refresh_from_db()
        assert task.status == Status.SUCCEED
        assert not task.needs_confirmation, "confirmed by GET /tasks with the API key"
        assert task.events.filter(status=Status.SUCCEED).get().source == "callback"
        assert ("video", 0, "watermark_url") in media_variants(task)
        assert Deduction.objects.get(task=task).units == task.final_unit_deduction > 0


class TestNewDesignBodies:
    """The 2026 callback body (``id``, ``status``, ``outputs[]``, ``billing[]``) is accepted.
    The portal's Kling client is an access-key one here, which the unified query refuses
    (API keys only), so the body is applied unconfirmed and left for the poller."""

    def body(self, task: Task, **extra) -> dict:
        data = {
            "id": task.task_id,
            "status": "succeeded",
            "message": "",
            "create_time": 1_700_000_000_000,
            "update_time": 1_700_000_100_000,
            "external_id": str(task.code),
            "outputs": [
                {"type": "video", "id": "v-9", "url": "https://cdn.example/v.mp4", "duration": "5"}
            ],
            "billing": [{"charge_type": "unit", "amount": "4", "package_type": "video"}],
        }
        data.update(extra)
        return data

    @pytest.fixture
    def task(self, portal) -> Task:
        return Task.objects.create(
            team=portal.team,
            creator=portal.member,
            family="text2video",
            status=Status.SUBMITTED,
            task_id="kt-2026",
            submitted_at=timezone.now(),
        )

    def test_a_2026_body_finishes_and_charges_once(self, client, task, kling, jobs):
        for _ in range(2):
            assert jobs.post(client, callback_url(task), self.body(task)).status_code == 200
        task.refresh_from_db()
        assert task.status == Status.SUCCEED and task.needs_confirmation
        assert task.result["videos"][0]["url"] == "https://cdn.example/v.mp4"
        assert Deduction.objects.get(task=task).units == Decimal("4")

    def test_a_2026_processing_body_is_applied_at_once(self, client, task, kling, jobs):
        body = self.body(task, status="processing", outputs=[], billing=[])
        assert jobs.post(client, callback_url(task), body).status_code == 200
        task.refresh_from_db()
        assert task.status == Status.PROCESSING

    @pytest.mark.parametrize(
        "change",
        [
            {"status": "done"},
            {"status": 3},
            {"billing": [{"charge_type": "unit", "amount": "NaN"}]},
            {"billing": [{"charge_type": "unit", "amount": "1.000000001"}]},
            {"billing": "4"},
            {"id": "someone-else"},
            {"external_id": "00000000-0000-0000-0000-000000000000"},
        ],
    )
    def test_a_bad_2026_body_is_400_and_changes_nothing(self, client, task, kling, jobs, change):
        response = jobs.post(client, callback_url(task), self.body(task, **change))
        assert response.status_code == 400, response.content
        task.refresh_from_db()
        assert (task.status, task.result, task.deductions.count()) == (Status.SUBMITTED, {}, 0)


class TestConfirmationRules:
    """What a confirming answer may and may not change on a task finished on an
    unconfirmed callback (``task_apply_remote``)."""

    @pytest.fixture
    def finished(self, portal) -> Task:
        task = Task.objects.create(
            team=portal.team,
            creator=portal.member,
            family="text2video",
            status=Status.SUBMITTED,
            task_id="kt-rules",
            submitted_at=timezone.now(),
        )
        applied = task_apply_remote(
            task_pk=task.pk,
            remote=parse_task(self.body("succeed", units="5")),
            source="callback",
            confirmed=False,
        )
        assert applied
        task.refresh_from_db()
        assert task.status == Status.SUCCEED and task.needs_confirmation
        return task

    @staticmethod
    def body(status: str, *, units: str | None, watermark: bool = False) -> dict:
        video = {"id": "v-1", "url": "https://cdn.example/v.mp4", "duration": "5"}
        if watermark:
            video["watermark_url"] = "https://cdn.example/v-watermark.mp4"
        data = {
            "task_id": "kt-rules",
            "task_status": status,
            "task_status_msg": "" if status == "succeed" else "late failure",
            "updated_at": 1_700_000_200_000,
            "task_result": {"videos": [video]} if status == "succeed" else {},
        }
        if units is not None:
            data["final_unit_deduction"] = units
        return data

    def test_another_final_status_never_moves_the_task(self, finished):
        remote = parse_task(self.body("failed", units="0"))
        assert not task_apply_remote(task_pk=finished.pk, remote=remote, source="poll")
        finished.refresh_from_db()
        assert finished.status == Status.SUCCEED and not finished.needs_confirmation
        assert finished.task_status_msg == ""
        assert Deduction.objects.get(task=finished).units == Decimal("5")

    def test_the_fuller_answer_is_kept_and_a_different_charge_is_not_doubled(self, finished):
        remote = parse_task(self.body("succeed", units="6", watermark=True))
        task_apply_remote(task_pk=finished.pk, remote=remote, source="poll")
        finished.refresh_from_db()
        assert finished.result["videos"][0]["watermark_url"].endswith("-watermark.mp4")
        assert Deduction.objects.filter(task=finished).count() == 1
        assert Deduction.objects.get(task=finished).units == Decimal("5")  # reconcile reports
        assert finished.events.filter(status=Status.SUCCEED).count() == 1

    def test_a_charge_the_callback_lacked_is_recorded_once(self, portal):
        task = Task.objects.create(
            team=portal.team, family="text2video", status=Status.PROCESSING, task_id="kt-rules"
        )
        task_apply_remote(
            task_pk=task.pk,
            remote=parse_task(self.body("succeed", units=None)),
            source="callback",
            confirmed=False,
        )
        assert not Deduction.objects.filter(task=task).exists()
        for _ in range(2):
            task_apply_remote(
                task_pk=task.pk, remote=parse_task(self.body("succeed", units="4")), source="poll"
            )
        task.refresh_from_db()
        assert task.final_unit_deduction == Decimal("4") and not task.needs_confirmation
        assert Deduction.objects.get(task=task).units == Decimal("4")

    def test_an_unconfirmed_body_never_changes_a_finished_task(self, finished):
        remote = parse_task(self.body("succeed", units="9", watermark=True))
        task_apply_remote(task_pk=finished.pk, remote=remote, source="callback", confirmed=False)
        finished.refresh_from_db()
        assert finished.needs_confirmation and "watermark_url" not in finished.result["videos"][0]
