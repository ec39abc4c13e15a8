"""The Kling 3.0 family on the 2026 design (KLING_API_2026.md §4): the forms' vendor rules,
each family from the form through the sandbox (API key, ``options{}``, ``GET /tasks``
polling) to a succeeded task with its video kept and its charge in the ledger; the element
page's "Generate with this element"; the legacy forms' 2026 options and exclusions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from elements_app.models import Element, ElementStatus, PresetElement, ReferenceType
from elements_app.omni import OmniVideoForm
from tasks_app import polling
from tasks_app.forms import Image2VideoForm, Text2VideoForm
from tasks_app.forms_v3 import (
    MotionControlForm,
    Turbo30Image2VideoForm,
    Turbo30Text2VideoForm,
    V30Text2VideoForm,
    check_storyboard,
)
from tasks_app.media import media_keep
from tasks_app.models import Deduction, Status, Task
from tests.conftest import SANDBOX_AK, use_api_key
from tests.test_sandbox_2026 import FileServer, make_mp4
from tests.test_tasks_forms import errors_of, png_upload
from tests.test_tasks_submission import NO_CALLBACKS_HERE, create

API_KEY = "klingweb-test-api-key-v3"


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def videos():
    """Reference videos the sandbox fetches: a 720x720 3.25 s 24 fps clip (Omni, motion)."""
    served = FileServer({"/dance.mp4": make_mp4(720, 720, 3.25, 24)})
    yield served
    served.close()


@pytest.fixture
def kling_key(settings, fresh_sandbox, monkeypatch, portal):
    """The operator default account on the sandbox with only an API key (the 2026 design
    accepts API keys only), callbacks to nowhere, django-q jobs inline."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)
    use_api_key(settings, fresh_sandbox, API_KEY)
    settings.PUBLIC_BASE_URL = NO_CALLBACKS_HERE
    return settings


def team_element(team, element_id="9000000002", name="Corgi", kind=ReferenceType.IMAGE_REFER):
    """A ready custom element of ``team`` (the sandbox knows presets' ids for any account)."""
    return Element.objects.create(
        team=team,
        element_id=element_id,
        name=name,
        reference_type=kind,
        status=ElementStatus.SUCCEED,
    )


def poll_to_the_end(task: Task, sandbox, django_capture_on_commit_callbacks) -> Task:
    """Let the sandbox finish the task and run the poll cycle (``GET /tasks`` by id), media
    keeping included; returns the task reloaded."""
    sandbox.advance(3)
    Task.objects.filter(pk=task.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        report = polling.tasks_poll()
    assert report.single_queries == 0  # found by the batched query, not one by one
    media_keep(task_pk=task.pk)
    task.refresh_from_db()
    return task


def assert_kept_and_charged(task: Task, client, team) -> None:
    """Succeeded, video kept in the portal's storage, one ledger row of the vendor's units,
    and the task page shows the video."""
    assert task.status == Status.SUCCEED, (task.status, task.error_message)
    assert task.result["videos"][0]["url"]
    kept = list(task.media.filter(kept_at__isnull=False))
    assert kept and kept[0].file
    [row] = Deduction.objects.filter(task=task)
    assert row.units == task.final_unit_deduction and row.units > 0
    page = client.get(reverse("tasks-detail", kwargs={"team": team.code, "code": task.code}))
    assert "<video controls" in page.content.decode()


# -- storyboard prompts (§4 "Multi-shot prompt") -------------------------------------------


class TestStoryboard:
    def test_ordinary_prompt_is_not_a_storyboard(self):
        assert check_storyboard("a fox in the snow; later it sleeps", duration=5) == 0

    def test_six_shots_summing_to_the_duration_accepted(self):
        prompt = "; ".join(f"shot {n}, 2, scene {n}" for n in range(1, 7))
        assert check_storyboard(prompt, duration=12) == 6

    def test_seven_shots_refused(self):
        prompt = "; ".join(f"shot {n}, 1, scene {n}" for n in range(1, 8))
        with pytest.raises(Exception, match="at most 6 shots; this one has 7"):
            check_storyboard(prompt, duration=7)

    def test_durations_not_summing_to_the_total_refused(self):
        with pytest.raises(Exception, match="last 4 s in all but the video is 5 s"):
            check_storyboard("shot 1, 2, a door; shot 2, 2, a hall", duration=5)

    def test_512_characters_accepted_513_refused(self):
        assert check_storyboard(f"shot 1, 5, {'a' * 512}", duration=5) == 1
        with pytest.raises(Exception, match="Shot 1 is 513 characters long"):
            check_storyboard(f"shot 1, 5, {'a' * 513}", duration=5)

    def test_zero_second_shot_and_wrong_numbering_refused(self):
        with pytest.raises(Exception, match="at least 1 s"):
            check_storyboard("shot 1, 0, a; shot 2, 5, b", duration=5)
        with pytest.raises(Exception, match="shot 2 is numbered 3"):
            check_storyboard("shot 1, 2, a; shot 3, 3, b", duration=5)

    def test_form_shows_the_storyboard_error_on_the_prompt(self, portal):
        form = V30Text2VideoForm(
            {"prompt": "shot 1, 2, a; shot 2, 2, b", "duration": "5", "resolution": "720p",
             "aspect_ratio": "16:9", "audio": "off"},
            team=portal.team,
        )  # fmt: skip
        assert not form.is_valid()
        assert "make the shot durations add up" in " ".join(form.errors["prompt"])


# -- form rules ---------------------------------------------------------------------------


class TestTurboForms:
    def test_turbo_t2v_body(self, portal):
        form = Turbo30Text2VideoForm(
            {"prompt": "a fox", "resolution": "1080p", "aspect_ratio": "9:16", "duration": "12",
             "watermark": "on"},
            team=portal.team,
        )  # fmt: skip
        assert form.is_valid(), form.errors
        from tasks_app.forms_v3 import t2v_3_0_turbo_params

        assert t2v_3_0_turbo_params(form.cleaned_data, portal.team) == {
            "prompt": "a fox",
            "settings": {"resolution": "1080p", "aspect_ratio": "9:16", "duration": 12},
            "options": {"watermark_info": {"enabled": True}},
        }

    @pytest.mark.parametrize(
        "change, field, text",
        [
            ({"prompt": "x" * 3073}, "prompt", "3073 characters long; the limit is 3072"),
            ({"resolution": "4k"}, "resolution", "Select a valid choice"),
            ({"duration": "16"}, "duration", "Select a valid choice"),
            ({"duration": "2"}, "duration", "Select a valid choice"),
            ({"prompt": ""}, "prompt", "required"),
        ],
    )
    def test_turbo_t2v_refusals(self, portal, change, field, text):
        data = {"prompt": "a fox", "resolution": "720p", "aspect_ratio": "16:9", "duration": "5"}
        data.update(change)
        form = Turbo30Text2VideoForm(data, team=portal.team)
        assert not form.is_valid() and text in " ".join(form.errors[field])

    def test_turbo_i2v_needs_a_first_frame_and_2500_characters(self, portal):
        form = Turbo30Image2VideoForm(
            {"prompt": "x" * 2501, "resolution": "720p", "duration": "5"}, team=portal.team
        )
        assert not form.is_valid()
        assert "Upload the first frame" in " ".join(form.errors["first_frame_file"])
        assert "the limit is 2500" in " ".join(form.errors["prompt"])


@pytest.mark.django_db
class TestV30Image2VideoForm:
    def test_at_most_three_elements_and_a_first_frame(self, portal):
        from tasks_app.forms_v3 import V30Image2VideoForm

        for n in range(1, 5):
            team_element(portal.team, str(n), f"Thing{n}x")
        form = V30Image2VideoForm(
            {"elements": ["1", "2", "3", "4"], "audio": "off", "resolution": "720p",
             "duration": "5"},
            team=portal.team,
        )  # fmt: skip
        assert not form.is_valid()
        assert "At most 3 elements (chosen 4)" in " ".join(form.errors["elements"])
        assert "Upload the first frame" in " ".join(form.errors["first_frame_file"])

    def test_without_elements_the_field_is_not_shown(self, portal):
        from tasks_app.forms_v3 import V30Image2VideoForm

        assert "elements" not in V30Image2VideoForm(team=portal.team).fields


class TestMotionForm:
    def test_orientation_and_video_required(self, portal):
        form = MotionControlForm({"resolution": "720p", "audio": "original"}, team=portal.team)
        assert not form.is_valid()
        assert {"character_orientation", "video_url", "image_file"} <= set(form.errors)

    def test_video_url_must_be_a_video(self, portal):
        form = MotionControlForm(
            {"video_url": "https://example.com/a.gif", "character_orientation": "image",
             "resolution": "720p", "audio": "off", "image_url": "https://example.com/a.png"},
            team=portal.team,
        )  # fmt: skip
        assert not form.is_valid() and ".gif" in " ".join(form.errors["video_url"])

    @pytest.mark.django_db
    def test_element_offered_on_3_0_only_and_only_the_teams(self, portal):
        from tasks_app.forms_v3 import MotionControl26Form

        team_element(portal.team, "111", "Rex")
        team_element(portal.other_team, "222", "Theirs")
        form = MotionControlForm(team=portal.team)
        assert dict(form.fields["element"].choices) == {"": "None", "111": "Rex (your team)"}
        assert "element" not in MotionControl26Form(team=portal.team).fields
        refused = MotionControlForm(
            {"video_url": "https://example.com/a.mp4", "character_orientation": "image",
             "resolution": "720p", "audio": "off", "image_url": "https://example.com/a.png",
             "element": "222"},
            team=portal.team,
        )  # fmt: skip
        assert not refused.is_valid() and "Select a valid choice" in errors_of(refused)

    def test_4k_not_offered(self, portal):
        form = MotionControlForm(
            {"video_url": "https://example.com/a.mp4", "character_orientation": "image",
             "resolution": "4k", "audio": "off", "image_url": "https://example.com/a.png"},
            team=portal.team,
        )  # fmt: skip
        assert not form.is_valid() and "resolution" in form.errors


OMNI_BASE = {"prompt": "a walk", "resolution": "720p", "aspect_ratio": "16:9", "duration": "5",
             "audio": "off", "multi_shot": "on", "video_kind": "feature_video"}  # fmt: skip


def omni(team, files=None, **change):
    data = dict(OMNI_BASE)
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None}
    return OmniVideoForm(data, files or {}, team=team)


@pytest.mark.django_db
class TestOmniForm:
    def test_offers_team_elements_and_presets_not_other_teams(self, portal):
        team_element(portal.team, "111", "Rex")
        team_element(portal.other_team, "222", "Theirs")
        Element.objects.create(
            team=portal.team, element_id="333", name="Pending", status=ElementStatus.CREATING
        )
        PresetElement.objects.create(element_id="9000000001", name="Astronaut")
        form = omni(portal.team)
        labels = dict(form.fields["elements"].choices)
        assert labels == {"111": "Rex (your team)", "9000000001": "Astronaut (preset)"}
        refused = omni(portal.team, elements=["222"])
        assert not refused.is_valid() and "Select a valid choice" in errors_of(refused)

    def test_element_body_and_prefill(self, portal, rf):
        team_element(portal.team, "111", "Rex")
        form = omni(portal.team, elements=["111"], prompt="@Rex runs")
        assert form.is_valid(), form.errors
        from elements_app.omni import omni_video_params

        body = omni_video_params(form.cleaned_data, portal.team)
        assert body["contents"] == [
            {"type": "prompt", "text": "@Rex runs"},
            {"type": "element", "element_id": "111", "id": "element_1"},
        ]
        assert body["settings"] == {
            "multi_shot": True, "audio": "off", "resolution": "720p", "duration": 5,
            "aspect_ratio": "16:9",
        }  # fmt: skip
        query = rf.get("/?element=111").GET
        assert OmniVideoForm.initial_from_query(query) == {"elements": ["111"]}

    @pytest.mark.parametrize(
        "change, field, text",
        [
            ({"last_frame_url": "https://e.com/l.png"}, "last_frame_file", "needs a first frame"),
            ({"aspect_ratio": ""}, "aspect_ratio", "Choose an aspect ratio"),
            ({"audio": "original"}, "audio", "needs a reference video"),
            ({"video_url": "https://e.com/v.mp4", "multi_shot": None}, "multi_shot",
             "needs multi-shot on"),
            ({"video_url": "https://e.com/v.mp4", "audio": "native"}, "audio", "sound off"),
            ({"video_url": "https://e.com/v.mp4", "video_kind": "base_video",
              "first_frame_url": "https://e.com/f.png", "multi_shot": None}, "video_kind",
             "allows no first or last frame"),
            ({"video_url": "https://e.com/v.mp4", "video_kind": "base_video"}, "multi_shot",
             "needs multi-shot off"),
            ({"video_url": "https://e.com/v.mp4", "video_kind": "base_video", "multi_shot": None,
              "audio": "native"}, "audio", "cannot make native audio"),
            ({"video_url": "https://e.com/v.avi"}, "video_url", ".avi"),
            ({"prompt": "", "aspect_ratio": "16:9"}, "prompt", "Write a prompt"),
            ({"prompt": "shot 1, 3, a; shot 2, 3, b"}, "prompt", "6 s in all but the video is 5 s"),
            ({"resolution": "8k"}, "resolution", "Select a valid choice"),
        ],
    )  # fmt: skip
    def test_rules(self, portal, change, field, text):
        form = omni(portal.team, **change)
        assert not form.is_valid()
        assert text in " ".join(form.errors.get(field, [])), form.errors

    def test_4k_and_native_audio_accepted(self, portal):
        assert omni(portal.team, resolution="4k", audio="native").is_valid()

    def test_element_limits(self, portal):
        for n in range(1, 9):
            team_element(portal.team, str(100 + n), f"Thing{n}x")
        four = [str(100 + n) for n in range(1, 5)]
        with_frame = omni(portal.team, elements=four, first_frame_url="https://e.com/f.png")
        assert "With a first frame at most 3 elements" in errors_of(with_frame)
        eight = [str(100 + n) for n in range(1, 9)]
        assert "at most 7" in errors_of(omni(portal.team, elements=eight))
        five = [str(100 + n) for n in range(1, 6)]
        with_video = omni(portal.team, elements=five, video_url="https://e.com/v.mp4")
        assert "at most 4 (here 0 + 5)" in errors_of(with_video)
        assert omni(portal.team, elements=[str(100 + n) for n in range(1, 8)]).is_valid()

    def test_video_character_elements(self, portal):
        team_element(portal.team, "201", "Ann", ReferenceType.VIDEO_REFER)
        team_element(portal.team, "202", "Bob", ReferenceType.VIDEO_REFER)
        team_element(portal.team, "203", "Cup")
        mixed = omni(portal.team, elements=["201", "203"], video_url="https://e.com/v.mp4")
        assert "cannot be mixed" in errors_of(mixed)
        two = omni(portal.team, elements=["201", "202"], video_url="https://e.com/v.mp4")
        assert "at most 1 video-character element" in errors_of(two)

    def test_element_names_inside_one_another_refused(self, portal):
        team_element(portal.team, "301", "Rex")
        team_element(portal.team, "302", "Rexy")
        form = omni(portal.team, elements=["301", "302"])
        assert "must not contain one another" in errors_of(form)


# -- form → sandbox → succeeded, kept, charged -------------------------------------------


@pytest.mark.django_db(transaction=False)
class TestSubmission:
    def test_turbo_text_to_video(self, client, portal, kling_key, fresh_sandbox,
                                 django_capture_on_commit_callbacks):  # fmt: skip
        client.force_login(portal.member)
        task = create(
            client, portal.team, "t2v_3_0_turbo",
            {"prompt": "shot 1, 2, a fox wakes; shot 2, 4, it runs", "resolution": "1080p",
             "aspect_ratio": "16:9", "duration": "6", "watermark": "on"},
            django_capture_on_commit_callbacks,
        )  # fmt: skip
        task.refresh_from_db()
        assert task.status == Status.SUBMITTED and task.task_id
        assert (task.model_name, task.mode) == ("kling-3.0-turbo", "1080p")
        [remote] = [t for t in fresh_sandbox.tasks_snapshot() if t["task_id"] == task.task_id]
        assert remote["family"] == "/text-to-video/kling-3.0-turbo"
        assert remote["external_task_id"] == str(task.code)  # sent in options{}
        assert remote["callback_url"].startswith(NO_CALLBACKS_HERE)
        task = poll_to_the_end(task, fresh_sandbox, django_capture_on_commit_callbacks)
        assert_kept_and_charged(task, client, portal.team)
        assert task.final_unit_deduction == 6  # 1.0 unit/s at 1080p × 6 s (§8)
        assert task.result["videos"][0].get("watermark_url")

    def test_due_2026_tasks_are_polled_in_one_batched_request(
        self, client, portal, kling_key, fresh_sandbox, django_capture_on_commit_callbacks
    ):
        """Three due 3.0 Turbo tasks: one ``GET /tasks?task_ids=a,b,c`` finds them all."""
        client.force_login(portal.member)
        body = {"prompt": "a fox", "resolution": "720p", "aspect_ratio": "16:9", "duration": "5"}
        tasks = [
            create(client, portal.team, "t2v_3_0_turbo", body, django_capture_on_commit_callbacks)
            for _ in range(3)
        ]
        fresh_sandbox.advance(3)
        Task.objects.update(next_poll_at=timezone.now() - timedelta(seconds=1))
        with django_capture_on_commit_callbacks(execute=True):
            report = polling.tasks_poll()
        assert (report.requests, report.single_queries) == (1, 0)
        assert all(Task.objects.get(pk=t.pk).status == Status.SUCCEED for t in tasks), report

    def test_turbo_image_to_video(self, client, portal, kling_key, fresh_sandbox,
                                  django_capture_on_commit_callbacks):  # fmt: skip
        client.force_login(portal.member)
        task = create(
            client, portal.team, "i2v_3_0_turbo",
            {"first_frame_file": png_upload(), "prompt": "it smiles", "resolution": "720p",
             "duration": "5"},
            django_capture_on_commit_callbacks,
        )  # fmt: skip
        task = poll_to_the_end(task, fresh_sandbox, django_capture_on_commit_callbacks)
        assert_kept_and_charged(task, client, portal.team)

    def test_v3_text_to_video_with_native_audio_in_4k(self, client, portal, kling_key,
                                                      fresh_sandbox,
                                                      django_capture_on_commit_callbacks):  # fmt: skip
        client.force_login(portal.member)
        task = create(
            client, portal.team, "t2v_3_0",
            {"prompt": "a choir sings", "audio": "native", "multi_shot": "on",
             "resolution": "4k", "aspect_ratio": "1:1", "duration": "3"},
            django_capture_on_commit_callbacks,
        )  # fmt: skip
        task = poll_to_the_end(task, fresh_sandbox, django_capture_on_commit_callbacks)
        assert_kept_and_charged(task, client, portal.team)
        assert task.final_unit_deduction == 9  # 3.0 units/s in 4K × 3 s

    def test_omni_with_team_element_image_and_reference_video(
        self, client, portal, kling_key, fresh_sandbox, videos, django_capture_on_commit_callbacks
    ):
        client.force_login(portal.member)
        element = team_element(portal.team, "9000000002", "Corgi")
        task = create(
            client, portal.team, "omni_video_3_0",
            {**OMNI_BASE, "prompt": "@Corgi dances like @video_1 near @image_1",
             "elements": [element.element_id], "refer_image_1_file": png_upload(),
             "video_url": videos.url("dance.mp4"), "aspect_ratio": ""},
            django_capture_on_commit_callbacks,
        )  # fmt: skip
        assert task.params["contents"][-1] == {
            "type": "element",
            "element_id": "9000000002",
            "id": "element_1",
        }
        task = poll_to_the_end(task, fresh_sandbox, django_capture_on_commit_callbacks)
        assert_kept_and_charged(task, client, portal.team)
        assert task.final_unit_deduction == Deduction.objects.get(task=task).units
        # The budget's estimate prices the reference video, as the vendor charged it.
        assert task.estimated_units == task.final_unit_deduction
        page = client.get(
            reverse("elements-detail", kwargs={"team": portal.team.code, "code": element.code})
        ).content.decode()
        used_in = page.split("Used in", 1)[1]
        assert f"/tasks/{task.code}/" in used_in and "Kling 3.0 Omni video" in used_in

    def test_v3_image_to_video_with_last_frame_and_elements(
        self, client, portal, kling_key, fresh_sandbox, django_capture_on_commit_callbacks
    ):
        client.force_login(portal.member)
        team_element(portal.team, "9000000002", "Corgi")
        PresetElement.objects.create(element_id="9000000001", name="Astronaut")
        task = create(
            client, portal.team, "i2v_3_0",
            {"first_frame_file": png_upload(), "last_frame_file": png_upload(name="end.png"),
             "prompt": "@Corgi meets @Astronaut", "elements": ["9000000002", "9000000001"],
             "audio": "native", "multi_shot": "on", "resolution": "1080p", "duration": "5"},
            django_capture_on_commit_callbacks,
        )  # fmt: skip
        assert [c["type"] for c in task.params["contents"]] == [
            "prompt", "first_frame", "last_frame", "element", "element"
        ]  # fmt: skip
        task = poll_to_the_end(task, fresh_sandbox, django_capture_on_commit_callbacks)
        assert_kept_and_charged(task, client, portal.team)
        assert task.final_unit_deduction == 6  # 1.2 units/s (1080p, audio) × 5 s

    @pytest.mark.parametrize("family", ["motion_3_0", "motion_2_6"])
    def test_motion_control(self, client, portal, kling_key, fresh_sandbox, videos, family,
                            django_capture_on_commit_callbacks):  # fmt: skip
        client.force_login(portal.member)
        task = create(
            client, portal.team, family,
            {"image_file": png_upload(), "video_url": videos.url("dance.mp4"),
             "character_orientation": "image", "prompt": "dance", "audio": "off",
             "resolution": "720p"},
            django_capture_on_commit_callbacks,
        )  # fmt: skip
        task = poll_to_the_end(task, fresh_sandbox, django_capture_on_commit_callbacks)
        assert_kept_and_charged(task, client, portal.team)

    def test_motion_control_3_0_with_a_team_element(
        self, client, portal, kling_key, fresh_sandbox, videos, django_capture_on_commit_callbacks
    ):
        client.force_login(portal.member)
        element = team_element(portal.team, "9000000002", "Corgi")
        task = create(
            client, portal.team, "motion_3_0",
            {"image_file": png_upload(), "video_url": videos.url("dance.mp4"),
             "character_orientation": "image", "element": element.element_id, "audio": "off",
             "resolution": "1080p"},
            django_capture_on_commit_callbacks,
        )  # fmt: skip
        assert task.params["contents"][-1] == {
            "type": "element", "element_id": "9000000002", "id": "element_1"
        }  # fmt: skip
        task = poll_to_the_end(task, fresh_sandbox, django_capture_on_commit_callbacks)
        assert_kept_and_charged(task, client, portal.team)

    def test_vendor_refusal_is_shown_on_the_task_page(
        self, client, portal, kling_key, fresh_sandbox, videos, django_capture_on_commit_callbacks
    ):
        """A reference video the vendor cannot use (here: missing) ends the task ``error``
        with the vendor's message naming the field, and nothing is charged."""
        client.force_login(portal.member)
        task = create(
            client, portal.team, "motion_3_0",
            {"image_file": png_upload(), "video_url": videos.url("missing.mp4"),
             "character_orientation": "image", "audio": "off", "resolution": "720p"},
            django_capture_on_commit_callbacks,
        )  # fmt: skip
        task.refresh_from_db()
        assert task.status == Status.ERROR and task.error_code == 1201
        page = client.get(
            reverse("tasks-detail", kwargs={"team": portal.team.code, "code": task.code})
        ).content.decode()
        assert "contents[1].url: could not be fetched" in page, task.error_message
        assert not Deduction.objects.filter(task=task).exists()

    def test_access_key_account_is_refused_before_sending(
        self, client, portal, kling_key, fresh_sandbox, django_capture_on_commit_callbacks
    ):
        """On AK/SK credentials a 2026-design task ends ``error`` (API keys only, §2) with a
        message saying so; the sandbox never sees it."""
        from tests.conftest import SANDBOX_SK

        kling_key.KLING_API_KEY = ""
        kling_key.KLING_ACCESS_KEY, kling_key.KLING_SECRET_KEY = SANDBOX_AK, SANDBOX_SK
        client.force_login(portal.member)
        task = create(
            client, portal.team, "t2v_3_0_turbo",
            {"prompt": "a fox", "resolution": "720p", "aspect_ratio": "16:9", "duration": "5"},
            django_capture_on_commit_callbacks,
        )  # fmt: skip
        task.refresh_from_db()
        assert task.status == Status.ERROR and "API key" in task.error_message
        assert not [
            t for t in fresh_sandbox.tasks_snapshot() if t["external_task_id"] == str(task.code)
        ]


# -- elements become usable ----------------------------------------------------------------


@pytest.mark.django_db
class TestGenerateWithElement:
    def test_element_page_links_to_the_omni_form_with_it_preselected(self, client, portal):
        element = team_element(portal.team, "9000000002", "Corgi")
        client.force_login(portal.member)
        page = client.get(
            reverse("elements-detail", kwargs={"team": portal.team.code, "code": element.code})
        ).content.decode()
        url = reverse("tasks-create", kwargs={"team": portal.team.code, "family": "omni_video_3_0"})
        assert f'href="{url}?element=9000000002"' in page
        form_page = client.get(f"{url}?element=9000000002").content.decode()
        assert 'value="9000000002" checked' in form_page.replace("  ", " ") or (
            'value="9000000002"' in form_page and "checked" in form_page
        )

    def test_viewer_gets_no_link_and_unready_element_none(self, client, portal):
        element = team_element(portal.team, "9000000002", "Corgi")
        pending = Element.objects.create(
            team=portal.team, name="Later", status=ElementStatus.CREATING
        )
        client.force_login(portal.viewer)
        page = client.get(
            reverse("elements-detail", kwargs={"team": portal.team.code, "code": element.code})
        ).content.decode()
        assert "Generate with this element" not in page
        client.force_login(portal.member)
        page = client.get(
            reverse("elements-detail", kwargs={"team": portal.team.code, "code": pending.code})
        ).content.decode()
        assert "Generate with this element" not in page


# -- the legacy text/image-to-video forms: 2026 models and options ----------------------------

T2V = {"model_name": "kling-v3", "prompt": "a fox", "mode": "std", "aspect_ratio": "16:9",
       "duration": "5"}  # fmt: skip


@pytest.mark.django_db
class TestLegacyOptions:
    def test_kling_v3_with_4k_sound_camera_and_watermark(self, portal):
        from tasks_app.families import get_family

        form = Text2VideoForm(
            {**T2V, "mode": "4k", "sound": "on", "camera_type": "simple", "camera_axis": "zoom",
             "camera_amount": "-4", "watermark": "on"},
            team=portal.team,
        )  # fmt: skip
        assert form.is_valid(), form.errors
        body = get_family("text2video").build_params(form.cleaned_data, portal.team)
        assert body["mode"] == "4k" and body["sound"] == "on"
        assert body["camera_control"] == {"type": "simple", "config": {"zoom": -4}}
        assert body["watermark_info"] == {"enabled": True}

    @pytest.mark.parametrize(
        "change, field, text",
        [
            ({"model_name": "kling-v2-6", "mode": "4k"}, "mode", "kling-v3 only"),
            ({"model_name": "kling-v1-6", "sound": "on"}, "sound", "kling-v2-6 and kling-v3 only"),
            ({"model_name": "kling-v2-6", "sound": "on"}, "sound", "needs mode pro"),
            ({"camera_type": "simple", "camera_axis": "pan"}, "camera_amount", "not 0"),
            ({"camera_type": "simple", "camera_amount": "3"}, "camera_axis", "needs an axis"),
            ({"camera_type": "simple", "camera_axis": "pan", "camera_amount": "11"},
             "camera_amount", "less than or equal to 10"),
            ({"camera_type": "down_back", "camera_axis": "pan", "camera_amount": "2"},
             "camera_type", "simple camera move only"),
        ],
    )  # fmt: skip
    def test_exclusions(self, portal, change, field, text):
        form = Text2VideoForm({**T2V, **change}, team=portal.team)
        assert not form.is_valid()
        assert text in " ".join(form.errors.get(field, [])), form.errors

    def test_sound_on_kling_v2_6_pro_accepted(self, portal):
        form = Text2VideoForm(
            {**T2V, "model_name": "kling-v2-6", "mode": "pro", "sound": "on"}, team=portal.team
        )
        assert form.is_valid(), form.errors

    def test_image_to_video_end_image_and_camera_exclude_each_other(self, portal):
        form = Image2VideoForm(
            {"model_name": "kling-v3", "mode": "std", "duration": "5", "camera_type": "forward_up"},
            {"image_file": png_upload(), "image_tail_file": png_upload(name="end.png")},
            team=portal.team,
        )
        assert not form.is_valid()
        assert "cannot be combined" in " ".join(form.errors["camera_type"])

    def test_run_again_keeps_the_camera_move(self):
        initial = Text2VideoForm.initial_from_params(
            {**T2V, "camera_control": {"type": "simple", "config": {"tilt": 5}},
             "watermark_info": {"enabled": True}}
        )  # fmt: skip
        assert initial["camera_type"] == "simple"
        assert (initial["camera_axis"], initial["camera_amount"]) == ("tilt", 5)
        assert initial["watermark"] is True

    def test_kling_v3_options_accepted_by_the_sandbox(
        self, client, portal, kling_key, fresh_sandbox, django_capture_on_commit_callbacks
    ):
        client.force_login(portal.member)
        task = create(
            client, portal.team, "text2video",
            {**T2V, "mode": "4k", "sound": "on", "camera_type": "forward_up", "watermark": "on"},
            django_capture_on_commit_callbacks,
        )  # fmt: skip
        task.refresh_from_db()
        assert task.status == Status.SUBMITTED, task.error_message
        task = poll_to_the_end(task, fresh_sandbox, django_capture_on_commit_callbacks)
        assert_kept_and_charged(task, client, portal.team)
        image = create(
            client, portal.team, "image2video",
            {"model_name": "kling-v2-6", "mode": "pro", "duration": "5", "sound": "on",
             "camera_type": "simple", "camera_axis": "roll", "camera_amount": "2",
             "image_file": png_upload()},
            django_capture_on_commit_callbacks,
        )  # fmt: skip
        image.refresh_from_db()
        assert image.status == Status.SUBMITTED, image.error_message


# -- the create pages ----------------------------------------------------------------------

NEW_FAMILIES = ["t2v_3_0_turbo", "i2v_3_0_turbo", "t2v_3_0", "i2v_3_0", "omni_video_3_0",
                "motion_3_0", "motion_2_6"]  # fmt: skip


@pytest.mark.django_db
class TestCreatePages:
    @pytest.mark.parametrize("family", NEW_FAMILIES)
    def test_member_sees_the_form_viewer_403_outsider_404(self, client, portal, family):
        url = reverse("tasks-create", kwargs={"team": portal.team.code, "family": family})
        client.force_login(portal.member)
        page = client.get(url)
        assert page.status_code == 200 and 'id="task-form"' in page.content.decode()
        client.force_login(portal.viewer)
        assert client.get(url).status_code == 403
        client.force_login(portal.outsider)
        assert client.get(url).status_code == 404

    @pytest.mark.parametrize("family", NEW_FAMILIES)
    def test_every_3_0_form_asks_for_its_estimate_as_options_change(self, client, portal, family):
        client.force_login(portal.member)
        form = client.get(
            reverse("tasks-create", kwargs={"team": portal.team.code, "family": family})
        ).content.decode()
        url = reverse("tasks-estimate", kwargs={"team": portal.team.code, "family": family})
        assert f'hx-get="{url}"' in form and "change from:closest form" in form

    def test_the_3_0_estimates_follow_resolution_audio_and_a_reference_video(self, client, portal):
        client.force_login(portal.member)

        def shown(family, **options):
            url = reverse("tasks-estimate", kwargs={"team": portal.team.code, "family": family})
            return client.get(url, options).content.decode()

        # KLING_API_2026.md §8: 3.0 at 1080p with native audio 1.2 units/s; 4K 3 units/s.
        assert "about 6 units ≈ $0.84" in shown(
            "i2v_3_0", resolution="1080p", audio="native", duration="5"
        )
        assert "about 9 units ≈ $1.26" in shown(
            "t2v_3_0", resolution="4k", audio="native", duration="3"
        )
        # 3.0 Omni at 720p: a reference video costs more (0.9 units/s) than none (0.6).
        plain = shown("omni_video_3_0", resolution="720p", audio="off", duration="5")
        video = shown(
            "omni_video_3_0",
            resolution="720p",
            audio="off",
            duration="5",
            video_url="https://example.com/dance.mp4",
        )
        assert "about 3 units ≈ $0.42" in plain and "about 4.5 units ≈ $0.63" in video

    def test_new_task_page_lists_the_3_0_family(self, client, portal):
        client.force_login(portal.member)
        page = client.get(reverse("tasks-new", kwargs={"team": portal.team.code})).content.decode()
        for label in ("Kling 3.0 Turbo text to video", "Kling 3.0 Omni video",
                      "Motion control (Kling 3.0)"):  # fmt: skip
            assert label in page

    def test_invalid_htmx_post_shows_the_errors_in_the_form_only(self, client, portal):
        client.force_login(portal.member)
        url = reverse("tasks-create", kwargs={"team": portal.team.code, "family": "t2v_3_0"})
        response = client.post(
            url,
            {"prompt": "shot 1, 9, too long", "duration": "5", "resolution": "4k",
             "aspect_ratio": "16:9", "audio": "native"},
            HTTP_HX_REQUEST="true",
        )  # fmt: skip
        body = response.content.decode()
        assert response.status_code == 200 and "<html" not in body
        assert "The shots last 9 s in all but the video is 5 s" in body
        assert not Task.objects.exists()


@pytest.mark.django_db
def test_preset_list_offers_generate_with_each_preset(client, portal):
    PresetElement.objects.create(element_id="9000000001", name="Astronaut")
    client.force_login(portal.member)
    page = client.get(reverse("elements-presets", kwargs={"team": portal.team.code}))
    url = reverse("tasks-create", kwargs={"team": portal.team.code, "family": "omni_video_3_0"})
    assert f'href="{url}?element=9000000001"' in page.content.decode()


# -- run again with these settings ----------------------------------------------------------


def test_run_again_restores_an_omni_body():
    params = {
        "contents": [
            {"type": "prompt", "text": "@Rex runs"},
            {"type": "first_frame", "url": {"$file": "uploads/t/a.png"}},
            {"type": "refer_image", "url": "https://e.com/r1.png", "id": "image_1"},
            {"type": "refer_image", "url": "https://e.com/r2.png", "id": "image_2"},
            {"type": "feature_video", "url": "https://e.com/v.mp4", "id": "video_1"},
            {"type": "element", "element_id": "111", "id": "element_1"},
        ],
        "settings": {"multi_shot": True, "audio": "off", "resolution": "4k", "duration": 7},
        "options": {"watermark_info": {"enabled": True}},
    }
    initial = OmniVideoForm.initial_from_params(params)
    assert initial["prompt"] == "@Rex runs"
    assert initial["first_frame_stored"] == "uploads/t/a.png"
    assert initial["refer_image_1_url"] == "https://e.com/r1.png"
    assert initial["refer_image_2_url"] == "https://e.com/r2.png"
    assert "refer_image_3_url" not in initial
    assert (initial["video_url"], initial["video_kind"]) == ("https://e.com/v.mp4", "feature_video")
    assert initial["elements"] == ["111"]
    assert (initial["resolution"], initial["duration"], initial["multi_shot"]) == ("4k", "7", True)
    assert initial["watermark"] is True


def test_run_again_restores_a_motion_body():
    initial = MotionControlForm.initial_from_params(
        {
            "contents": [
                {"type": "image", "url": "https://e.com/a.png"},
                {"type": "video", "url": "https://e.com/d.mp4"},
            ],
            "settings": {"character_orientation": "video", "audio": "off", "resolution": "1080p"},
        }
    )
    assert initial["image_url"] == "https://e.com/a.png"
    assert initial["video_url"] == "https://e.com/d.mp4"
    assert initial["character_orientation"] == "video"
