"""Elements (issue 6): the create form's vendor rules, the element task against the sandbox,
the library and element pages, delete, presets sync, import, access rules, and the family
as a person meets it (the "new task" menu leads to the element form).

Delete, presets "Sync now" and import run as jobs (issue 12): each test checks that the
page answers before anything reaches the sandbox, then runs the recorded job and reads the
vendor's answer from the page.

Videos are made with PyAV (mpeg4, one frame a second, tiny bitrate) so they are small and
quick; their duration, resolution and container are what the form reads.
"""

from __future__ import annotations

import io
import re
import time
from datetime import timedelta
from fractions import Fraction
from pathlib import Path
from urllib.parse import quote

import av
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from elements_app.forms import ElementForm
from elements_app.models import Element, ElementStatus, PresetElement
from elements_app.services import element_create, elements_import, presets_sync
from klingweb.accounts.models import (
    KlingAccount,
    Membership,
    Region,
    Role,
    VendorCall,
    VendorCallStatus,
)
from klingweb.accounts.services import account_set_secret, kling_client_for
from tasks_app.models import Budget, Family, Status, Task
from tests.cluster_support import sandbox_account
from tests.conftest import make_user
from tests.jobs_support import Jobs, closed_port_url, record_jobs

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}


# --- media makers ------------------------------------------------------------------------


def png(name: str = "img.png", size: tuple[int, int] = (400, 400), color="#3355ff"):
    """A small valid PNG upload (passes the image rule)."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return SimpleUploadedFile(name, buf.getvalue(), content_type="image/png")


_VIDEO_CACHE: dict[tuple, bytes] = {}


def video_bytes(width: int, height: int, seconds: int, fmt: str = "mp4") -> bytes:
    """An MP4/MOV of ``seconds`` one-second grey frames at ``width``×``height``."""
    key = (width, height, seconds, fmt)
    if key not in _VIDEO_CACHE:
        buf = io.BytesIO()
        with av.open(buf, "w", format=fmt) as container:
            stream = container.add_stream("mpeg4", rate=1)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.bit_rate = 20_000
            for i in range(seconds):
                frame = av.VideoFrame(width, height, "yuv420p")
                for plane in frame.planes:
                    plane.update(bytes([128]) * plane.buffer_size)
                frame.pts, frame.time_base = i, Fraction(1, 1)
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        _VIDEO_CACHE[key] = buf.getvalue()
    return _VIDEO_CACHE[key]


def video(width=1920, height=1080, seconds=5, name="clip.mp4", fmt="mp4"):
    """An uploaded reference video."""
    return SimpleUploadedFile(name, video_bytes(width, height, seconds, fmt), "video/mp4")


def image_data(**overrides) -> dict:
    data = {
        "name": "Hero",
        "description": "A brave hero in a red cape.",
        "reference_type": "image_refer",
        "tags": ["o_102", "o_105"],
        "voice_id": "",
    }
    data.update(overrides)
    return data


def image_files(refers: int = 2) -> dict:
    return {
        "frontal_image": png("front.png"),
        "refer_images": [png(f"side{i}.png", color="#ff3355") for i in range(refers)],
    }


def make_form(data: dict, files: dict, team) -> ElementForm:
    from django.utils.datastructures import MultiValueDict

    multi = MultiValueDict()
    for key, value in files.items():
        multi.setlist(key, value if isinstance(value, list) else [value])
    return ElementForm(data, multi, team=team)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path: Path):
    """Uploads go to a temporary folder, not the project's media/; a fast password hasher
    keeps the ``portal`` cast (five users) cheap to create."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return settings.MEDIA_ROOT


@pytest.fixture
def jobs(monkeypatch, django_capture_on_commit_callbacks) -> Jobs:
    """Jobs the views enqueue, recorded; the test runs them (``Jobs.run``)."""
    return record_jobs(monkeypatch, django_capture_on_commit_callbacks)


def stored_files(media_root) -> list[Path]:
    """Every file under the temporary MEDIA_ROOT."""
    return sorted(p for p in Path(media_root).rglob("*") if p.is_file())


def status_url(portal, call: VendorCall) -> str:
    return reverse("accounts-call-status", kwargs={"team": portal.team.code, "call": call.code})


def url(name: str, portal, **kwargs) -> str:
    return reverse(name, kwargs={"team": portal.team.code, **kwargs})


def make_element(portal, **fields) -> Element:
    values = {
        "team": portal.team,
        "creator": portal.member,
        "name": "Hero",
        "description": "A hero",
        "status": ElementStatus.SUCCEED,
        "element_id": "111",
        "tag_ids": ",o_102,",
        "element_image_list": {"frontal_image": "https://img.example/front.png"},
        "kling_account": KlingAccount.objects.operator_default(),
    }
    values.update(fields)
    return Element.objects.create(**values)


# --- form boundaries ---------------------------------------------------------------------


class TestFormBoundaries:
    def test_name_of_20_characters_is_accepted_and_21_refused(self, portal):
        ok = make_form(image_data(name="x" * 20), image_files(), portal.team)
        assert ok.is_valid(), ok.errors
        bad = make_form(image_data(name="x" * 21), image_files(), portal.team)
        assert not bad.is_valid()
        assert "at most 20 characters" in str(bad.errors["name"])

    def test_description_of_100_characters_is_accepted_and_101_refused(self, portal):
        ok = make_form(image_data(description="d" * 100), image_files(), portal.team)
        assert ok.is_valid(), ok.errors
        bad = make_form(image_data(description="d" * 101), image_files(), portal.team)
        assert not bad.is_valid()
        assert "at most 100 characters" in str(bad.errors["description"])

    @pytest.mark.parametrize("count", [0, 4])
    def test_zero_or_four_other_angle_images_are_refused(self, portal, count):
        form = make_form(image_data(), image_files(refers=count), portal.team)
        assert not form.is_valid()
        assert f"1 to 3 images from other angles (you gave {count})" in str(
            form.errors["refer_images"]
        )

    @pytest.mark.parametrize("count", [1, 3])
    def test_one_or_three_other_angle_images_are_accepted(self, portal, count):
        form = make_form(image_data(), image_files(refers=count), portal.team)
        assert form.is_valid(), form.errors
        assert len(form.cleaned_data["refer_images"]) == count

    def test_frontal_image_is_required_for_images(self, portal):
        files = image_files()
        del files["frontal_image"]
        form = make_form(image_data(), files, portal.team)
        assert not form.is_valid()
        assert "Add a frontal image." in str(form.errors["frontal_image"])

    def test_images_are_judged_by_content_with_the_shared_image_rule(self, portal):
        files = image_files()
        files["refer_images"] = [
            SimpleUploadedFile("looks.png", b"not an image at all", "image/png"),
            png("small.png", size=(200, 400)),
        ]
        form = make_form(image_data(), files, portal.team)
        assert not form.is_valid()
        errors = " ".join(form.errors["refer_images"])
        assert "Other angle 1 (looks.png)" in errors and "not a JPG or PNG" in errors
        assert "Other angle 2 (small.png)" in errors and "at least 300 px" in errors

    def test_video_of_5_seconds_1080p_16_9_is_accepted(self, portal, settings):
        settings.PUBLIC_BASE_URL = "https://portal.example.com"  # videos go by URL only
        data = image_data(reference_type="video_refer")
        form = make_form(data, {"video": video(1920, 1080, 5)}, portal.team)
        assert form.is_valid(), form.errors

    def test_video_of_1080p_9_16_in_a_mov_is_accepted(self, portal, settings):
        settings.PUBLIC_BASE_URL = "https://portal.example.com"  # videos go by URL only
        data = image_data(reference_type="video_refer")
        clip = video(1080, 1920, 4, name="portrait.mov", fmt="mov")
        form = make_form(data, {"video": clip}, portal.team)
        assert form.is_valid(), form.errors

    @pytest.mark.parametrize(
        ("width", "height", "seconds", "message"),
        [
            (1920, 1080, 2, "lasts 2.0 s; it must last 3 to 8 seconds"),
            (1920, 1080, 9, "lasts 9.0 s; it must last 3 to 8 seconds"),
            (1440, 1080, 5, "1440×1080 (4:3); it must be 1080p at 16:9 or 9:16"),
        ],
        ids=["2s", "9s", "4:3"],
    )
    def test_videos_outside_the_rule_are_refused(self, portal, width, height, seconds, message):
        data = image_data(reference_type="video_refer")
        form = make_form(data, {"video": video(width, height, seconds)}, portal.team)
        assert not form.is_valid()
        assert message in str(form.errors["video"])

    def test_video_is_read_from_content_not_from_its_name(self, portal, settings):
        settings.PUBLIC_BASE_URL = "https://portal.example.com"  # videos go by URL only
        data = image_data(reference_type="video_refer")
        fake = SimpleUploadedFile("clip.mp4", png().read(), "video/mp4")
        form = make_form(data, {"video": fake}, portal.team)
        assert not form.is_valid()
        assert "MP4 or MOV" in str(form.errors["video"])
        # ... and a real MP4 under a misleading name still passes.
        named = SimpleUploadedFile("holiday.txt", video_bytes(1920, 1080, 5), "text/plain")
        form = make_form(data, {"video": named}, portal.team)
        assert form.is_valid(), form.errors

    def test_video_reference_requires_a_video(self, portal):
        form = make_form(image_data(reference_type="video_refer"), {}, portal.team)
        assert not form.is_valid()
        assert "Add one reference video." in str(form.errors["video"])

    def test_inputs_may_be_urls_checked_like_the_task_forms(self, portal):
        data = image_data(
            frontal_image_url="https://img.example/front.png",
            refer_image_urls="https://img.example/a.jpg\nhttps://img.example/b.png",
        )
        form = make_form(data, {}, portal.team)
        assert form.is_valid(), form.errors
        assert form.cleaned_data["frontal_image"] == "https://img.example/front.png"
        assert form.cleaned_data["refer_images"] == [
            "https://img.example/a.jpg",
            "https://img.example/b.png",
        ]
        mixed = make_form(
            image_data(refer_image_urls="https://img.example/a.jpg"), image_files(3), portal.team
        )
        assert not mixed.is_valid()  # 3 files + 1 URL = 4 other angles
        assert "you gave 4" in str(mixed.errors["refer_images"])
        gif = make_form(image_data(frontal_image_url="https://img.example/f.gif"), {}, portal.team)
        assert not gif.is_valid()
        assert "Frontal image URL: This URL points to a .gif file" in str(
            gif.errors["frontal_image_url"]
        )
        both = make_form(
            image_data(frontal_image_url="https://img.example/f.png"), image_files(), portal.team
        )
        assert not both.is_valid()
        assert "not both" in str(both.errors["frontal_image_url"])

    def test_a_video_url_needs_no_public_address(self, portal, settings):
        settings.PUBLIC_BASE_URL = ""  # an uploaded video could not be sent
        data = image_data(reference_type="video_refer", video_url="https://cdn.example/clip.mp4")
        form = make_form(data, {}, portal.team)
        assert form.is_valid(), form.errors
        element = element_create(team=portal.team, user=portal.member, data=form.cleaned_data)
        params = element.task.params
        assert params["element_video_list"] == {
            "refer_videos": [{"video_url": "https://cdn.example/clip.mp4"}]
        }
        assert element.video.name == ""  # nothing stored: Kling fetches it
        refused = make_form(
            image_data(reference_type="video_refer"), {"video": video()}, portal.team
        )
        assert not refused.is_valid()
        assert "no public address" in str(refused.errors["video"])


# --- create page -------------------------------------------------------------------------


class TestCreatePage:
    def test_member_creates_an_element_task_and_a_creating_element(self, client, portal):
        client.force_login(portal.member)
        response = client.post(url("elements-create", portal), {**image_data(), **image_files()})
        element = Element.objects.get(team=portal.team)
        assert response.status_code == 302
        assert response["Location"] == url("elements-detail", portal, code=element.code)
        assert element.status == ElementStatus.CREATING and element.creator == portal.member
        task = element.task
        assert task.family == Family.ELEMENT and task.status == Status.QUEUED
        assert task.params["element_name"] == "Hero"
        assert task.params["tag_list"] == [{"tag_id": "o_102"}, {"tag_id": "o_105"}]
        frontal = task.params["element_image_list"]["frontal_image"]
        assert frontal == {"$file": element.frontal_image.name}
        assert len(task.params["element_image_list"]["refer_images"]) == 2
        assert element.refer_image_names() == [
            item["image_url"]["$file"] for item in task.params["element_image_list"]["refer_images"]
        ]
        page = client.get(response["Location"])
        assert "Kling is creating this element" in page.content.decode()

    def test_queuing_enqueues_the_submission_on_commit(
        self, portal, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks() as callbacks:
            form = make_form(image_data(), image_files(), portal.team)
            assert form.is_valid()
            element_create(team=portal.team, user=portal.member, data=form.cleaned_data)
        assert len(callbacks) == 1

    def test_htmx_post_with_errors_rerenders_the_form_partial(self, client, portal):
        client.force_login(portal.member)
        response = client.post(
            url("elements-create", portal),
            {**image_data(name="n" * 21), **image_files(refers=4)},
            headers=HX,
        )
        body = response.content.decode()
        assert response.status_code == 200
        assert body.lstrip().startswith("<form") and "<html" not in body
        assert "at most 20 characters" in body
        assert "1 to 3 images from other angles (you gave 4)" in body
        assert not Task.objects.exists() and not Element.objects.exists()

    def test_htmx_post_that_succeeds_redirects_the_whole_page(self, client, portal):
        client.force_login(portal.member)
        response = client.post(
            url("elements-create", portal), {**image_data(), **image_files()}, headers=HX
        )
        element = Element.objects.get()
        assert response["HX-Redirect"] == url("elements-detail", portal, code=element.code)

    def test_a_passed_budget_is_a_form_error_and_only_kept_uploads_remain(
        self, client, portal, media_root
    ):
        """Nothing is stored for an element; the checked images stay only as kept uploads
        for the next try (issue 14 item 8, ``tasks_app.kept``)."""
        Budget.objects.create(team=portal.team, period="daily", units=0)
        client.force_login(portal.member)
        response = client.post(url("elements-create", portal), {**image_data(), **image_files()})
        assert response.status_code == 200
        page = response.content.decode()
        assert "budget" in page.lower()
        assert "kept: " in page and "front.png" in page
        assert not Element.objects.exists() and not Task.objects.exists()
        stored = [p for p in Path(media_root).rglob("*") if p.is_file()]
        assert len(stored) == 3 and all("/kept/" in p.as_posix() for p in stored)

    def test_get_shows_the_form(self, client, portal):
        client.force_login(portal.member)
        body = client.get(url("elements-create", portal)).content.decode()
        assert 'name="frontal_image"' in body and 'name="refer_images"' in body
        assert 'value="o_108"' in body


# --- the element task against the sandbox -------------------------------------------------


def run_task(sandbox, task: Task) -> Task:
    """Submit, let the sandbox finish it, and poll: what the cluster does."""
    from tasks_app.jobs import submit_task
    from tasks_app.polling import tasks_poll

    submit_task(task.pk)
    task.refresh_from_db()
    assert task.status in (Status.SUBMITTED, Status.PROCESSING), task.error_message
    sandbox.advance(5)
    tasks_poll(now=timezone.now() + timedelta(minutes=1))
    task.refresh_from_db()
    return task


def create_via_form(portal, **overrides) -> Element:
    form = make_form(image_data(**overrides), image_files(), portal.team)
    assert form.is_valid(), form.errors
    return element_create(team=portal.team, user=portal.member, data=form.cleaned_data)


class TestElementTask:
    def test_element_task_succeeds_and_materialises_the_element(
        self, client, portal, kling_settings, fresh_sandbox
    ):
        element = create_via_form(portal, voice_id="voice-7")
        task = run_task(fresh_sandbox, element.task)
        assert task.status == Status.SUCCEED
        element.refresh_from_db()
        assert element.status == ElementStatus.SUCCEED
        assert element.element_id.isdigit()
        assert element.tags == [("o_102", "Character"), ("o_105", "Costume")]
        assert element.voice_id == "voice-7"
        assert element.vendor_frontal_image_url.startswith(fresh_sandbox.base_url)
        assert task.deductions.count() == 1  # billed like every task

        client.force_login(portal.viewer)
        library = client.get(url("elements-list", portal)).content.decode()
        assert "Hero" in library and "Ready" in library and "Character" in library
        detail = client.get(url("elements-detail", portal, code=element.code)).content.decode()
        assert element.element_id in detail
        assert url("tasks-detail", portal, code=task.code) in detail  # the task that made it

    def test_failed_task_shows_the_element_failed(
        self, client, portal, kling_settings, fresh_sandbox
    ):
        element = create_via_form(portal, name="sandbox:fail")
        task = run_task(fresh_sandbox, element.task)
        assert task.status == Status.FAILED
        element.refresh_from_db()
        assert element.effective_status == ElementStatus.FAILED
        client.force_login(portal.member)
        failed = client.get(url("elements-list", portal), {"status": "failed"}).content.decode()
        assert "sandbox:fail" in failed
        ready = client.get(url("elements-list", portal), {"status": "succeed"}).content.decode()
        assert "sandbox:fail" not in ready

    @pytest.mark.django_db(transaction=True)
    def test_video_element_goes_through_the_sandbox(
        self, live_server, portal, kling_settings, fresh_sandbox
    ):
        # The sandbox fetches the clip from the portal's signed URL, as Kling does.
        kling_settings.PUBLIC_BASE_URL = live_server.url
        # Legacy callbacks carry no element data (the documented subset); until callbacks
        # only trigger a query, the poller must be the one to learn the result.
        fresh_sandbox.config.callback_drop_rate = 1.0
        data = image_data(reference_type="video_refer", name="Presenter")
        form = make_form(data, {"video": video()}, portal.team)
        assert form.is_valid(), form.errors
        element = element_create(team=portal.team, user=portal.member, data=form.cleaned_data)
        assert element.video.name.endswith(".mp4")
        task = run_task(fresh_sandbox, element.task)
        assert task.status == Status.SUCCEED
        element.refresh_from_db()
        assert element.status == ElementStatus.SUCCEED and element.vendor_video_url

    def test_use_in_multi_shot_prefills_the_vendor_frontal_image_and_lists_usage(
        self, client, portal, kling_settings, fresh_sandbox
    ):
        element = create_via_form(portal)
        run_task(fresh_sandbox, element.task)
        element.refresh_from_db()
        client.force_login(portal.member)
        detail = client.get(url("elements-detail", portal, code=element.code)).content.decode()
        match = re.search(r'href="([^"]*/tasks/new/multi_shot/\?[^"]*)"', detail)
        assert match, "Use in AI multi-shot link missing"
        link = match.group(1).replace("&amp;", "&")
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(link).query)
        assert query["frontal_image_url"] == [element.vendor_frontal_image_url]
        assert query["element"] == [str(element.code)]
        form_page = client.get(link)  # the tasks app's multi-shot form, prefilled
        assert form_page.status_code == 200
        assert f'value="{element.vendor_frontal_image_url}"' in form_page.content.decode()
        assert "Not used in any task yet." in detail

        # A multi-shot task made from that link carries the URL in its params.
        Task.objects.create(
            team=portal.team,
            creator=portal.member,
            family=Family.MULTI_SHOT,
            params={"element_frontal_image": element.vendor_frontal_image_url},
        )
        Task.objects.create(
            team=portal.team,
            family=Family.MULTI_SHOT,
            params={"element_frontal_image": "https://elsewhere.example/x.png"},
        )
        detail = client.get(url("elements-detail", portal, code=element.code)).content.decode()
        assert "Not used in any task yet." not in detail
        rows = re.search(r"<tbody>(.*)</tbody>", detail, re.S).group(1)
        assert rows.count("<tr>") == 1

    def test_usage_by_stored_frontal_image_is_found_too(self, portal):
        element = make_element(portal, frontal_image="uploads/x/image/abc.png")
        Task.objects.create(
            team=portal.team,
            family=Family.MULTI_SHOT,
            params={"element_frontal_image": {"$file": "uploads/x/image/abc.png"}},
        )
        from elements_app.services import element_usages

        assert element_usages(element=element).count() == 1


# --- delete --------------------------------------------------------------------------------


class TestVideoElementPages:
    def test_a_video_element_shows_a_frame_in_the_library_and_plays_on_its_page(
        self, client, portal
    ):
        element = make_element(
            portal,
            reference_type="video_refer",
            element_image_list={},
            video="elements/clip.mp4",
        )
        client.force_login(portal.member)
        listing = client.get(url("elements-list", portal)).content.decode()
        card = listing.split(f'id="element-{element.code}"', 1)[1].split("</article>", 1)[0]
        assert "<video" in card and "#t=0.1" in card and "Video element</span>" not in card
        detail = client.get(url("elements-detail", portal, code=element.code)).content.decode()
        assert "<video controls" in detail


def test_the_element_page_names_who_made_it_not_a_raw_vendor_id(client, portal):
    mine = make_element(portal, owned_by="100001")
    imported = make_element(portal, owned_by="100001", creator=None, element_id="222", name="Old")
    client.force_login(portal.viewer)
    page = client.get(url("elements-detail", portal, code=mine.code)).content.decode()
    assert "member, on the team's Kling account" in page and "100001" not in page
    page = client.get(url("elements-detail", portal, code=imported.code)).content.decode()
    assert "the team's Kling account" in page and "(Kling user id 100001)" in page


class TestDelete:
    def test_admin_deletes_an_element_on_kling_and_keeps_its_history(
        self, client, portal, kling_settings, fresh_sandbox, jobs
    ):
        element = create_via_form(portal)
        task = run_task(fresh_sandbox, element.task)
        element.refresh_from_db()
        kling = kling_client_for(KlingAccount.objects.operator_default())
        client.force_login(portal.admin)
        page = url("elements-delete", portal, code=element.code)
        confirm = client.get(page)
        assert confirm.status_code == 200 and "Delete “Hero”?" in confirm.content.decode()

        response = jobs.post(client, page)
        assert response.status_code == 302 and response["Location"] == page
        assert jobs.names() == ["elements_app.jobs.delete_element"]
        # The request asked nothing of Kling: the element is still there, on both sides.
        element.refresh_from_db()
        assert element.status == ElementStatus.SUCCEED
        assert kling.get_task("element", task_id=task.task_id).elements[0].status != "deleted"
        waiting = client.get(page).content.decode()
        assert "Working…" in waiting and 'hx-trigger="every 1s"' in waiting

        jobs.run()
        element.refresh_from_db()
        assert element.status == ElementStatus.DELETED
        assert element.deleted_by == portal.admin and element.deleted_at is not None
        assert kling.get_task("element", task_id=task.task_id).elements[0].status == "deleted"
        call = VendorCall.objects.get()
        done = client.get(status_url(portal, call), headers=HX).content.decode()
        assert "Element “Hero” deleted on Kling." in done and "hx-trigger" not in done
        assert url("elements-list", portal) in done
        # Hidden by default, shown with the toggle, and its page still exists.
        card = f'id="element-{element.code}"'
        assert card not in client.get(url("elements-list", portal)).content.decode()
        shown = client.get(url("elements-list", portal), {"deleted": "on"}).content.decode()
        assert card in shown and "Deleted" in shown
        detail = client.get(url("elements-detail", portal, code=element.code))
        assert detail.status_code == 200 and "Kept here for the record" in detail.content.decode()

    def test_htmx_delete_answers_the_result_partial(self, client, portal, jobs):
        element = make_element(portal, element_id="424242424242")
        client.force_login(portal.admin)
        response = jobs.post(client, url("elements-delete", portal, code=element.code), headers=HX)
        html = response.content.decode()
        call = VendorCall.objects.get()
        assert html.lstrip().startswith('<div id="delete-result"') and "<html" not in html
        assert "Working…" in html and f'hx-get="{status_url(portal, call)}"' in html

    def test_vendor_refusal_is_shown_and_nothing_changes(
        self, client, portal, kling_settings, fresh_sandbox, jobs
    ):
        element = create_via_form(portal)
        run_task(fresh_sandbox, element.task)
        fresh_sandbox.config.account_error_code = 1304  # IP not on the allow-list
        client.force_login(portal.admin)
        jobs.post(client, url("elements-delete", portal, code=element.code))
        assert jobs.run() == [VendorCallStatus.FAILED]
        call = VendorCall.objects.get()
        body = client.get(url("elements-delete", portal, code=element.code)).content.decode()
        assert "The element was not deleted." in body
        assert f"Code 1304 (HTTP {call.error_http_status})" in body
        assert f"request_id: <code>{call.error_request_id}</code>" in body
        element.refresh_from_db()
        assert element.status == ElementStatus.SUCCEED and element.deleted_at is None

    def test_an_element_kling_no_longer_knows_leaves_the_library(
        self, client, portal, kling_settings, jobs
    ):
        """Kling answers 1203 (deleted elsewhere): the element can still be removed here, and
        its page keeps it for the record with the vendor's answer."""
        element = make_element(portal, element_id="424242424242")  # unknown to the sandbox
        client.force_login(portal.admin)
        jobs.post(client, url("elements-delete", portal, code=element.code))
        assert jobs.run() == [VendorCallStatus.DONE]
        element.refresh_from_db()
        assert element.status == ElementStatus.DELETED and element.deleted_by == portal.admin
        done = client.get(status_url(portal, VendorCall.objects.get()), headers=HX).content.decode()
        assert "Kling no longer knew this element (1203" in done
        listing = client.get(url("elements-list", portal)).content.decode()
        assert f'id="element-{element.code}"' not in listing
        detail = client.get(url("elements-detail", portal, code=element.code)).content.decode()
        assert "Kept here for the record" in detail

    def test_kling_down_is_a_network_error_and_nothing_changes(self, client, portal, jobs):
        down = KlingAccount(
            team=portal.team,
            name="Down",
            region=Region.CUSTOM,
            custom_base_url=closed_port_url(),
            access_key="ak-down",
        )
        account_set_secret(account=down, secret_key="sk-down-0000")
        down.save()
        element = make_element(portal, kling_account=down)
        client.force_login(portal.admin)
        jobs.post(client, url("elements-delete", portal, code=element.code))
        jobs.run()
        body = client.get(url("elements-delete", portal, code=element.code)).content.decode()
        assert "Could not reach Kling (network error)." in body
        assert "The element was not deleted." in body
        element.refresh_from_db()
        assert element.status == ElementStatus.SUCCEED

    def test_a_second_click_joins_the_running_delete(self, client, portal, jobs):
        element = make_element(portal)
        client.force_login(portal.admin)
        page = url("elements-delete", portal, code=element.code)
        jobs.post(client, page)
        jobs.post(client, page, headers=HX)
        assert VendorCall.objects.count() == 1
        assert jobs.names() == ["elements_app.jobs.delete_element"]

    def test_creator_may_delete_but_another_member_may_not(self, client, portal, jobs):
        element = make_element(portal, creator=portal.admin, status=ElementStatus.FAILED)
        client.force_login(portal.member)
        assert client.get(url("elements-delete", portal, code=element.code)).status_code == 403
        assert client.post(url("elements-delete", portal, code=element.code)).status_code == 403
        mine = make_element(portal, element_id="", status=ElementStatus.FAILED)
        response = jobs.post(client, url("elements-delete", portal, code=mine.code))
        assert response.status_code == 302  # failed: never on Kling, deleted locally at once
        assert jobs.queued == []
        mine.refresh_from_db()
        assert mine.status == ElementStatus.DELETED

    def test_the_creator_follows_their_delete_and_other_members_may_not(self, client, portal, jobs):
        element = make_element(portal, creator=portal.member)
        client.force_login(portal.member)
        jobs.post(client, url("elements-delete", portal, code=element.code))
        status = status_url(portal, VendorCall.objects.get())
        assert "Working…" in client.get(status, headers=HX).content.decode()
        other = make_user("member2")
        Membership.objects.create(user=other, team=portal.team, role=Role.MEMBER)
        client.force_login(other)
        assert client.get(status).status_code == 403
        client.force_login(portal.viewer)
        assert client.get(status).status_code == 403
        client.force_login(portal.outsider)
        assert client.get(status).status_code == 404
        client.force_login(portal.admin)
        assert client.get(status).status_code == 200
        assert client.post(status).status_code == 405

    def test_an_element_still_being_created_cannot_be_deleted(self, client, portal, jobs):
        element = make_element(portal, status=ElementStatus.CREATING, element_id="")
        client.force_login(portal.admin)
        response = jobs.post(client, url("elements-delete", portal, code=element.code))
        assert response.status_code == 400
        assert "still being created" in response.content.decode()
        assert jobs.queued == [] and not VendorCall.objects.exists()
        element.refresh_from_db()
        assert element.status == ElementStatus.CREATING


# --- presets --------------------------------------------------------------------------------


class TestPresets:
    def test_sync_twice_gives_the_same_rows(self, portal, kling_settings):
        account = KlingAccount.objects.operator_default()
        first = presets_sync(account=account)
        rows = list(PresetElement.objects.order_by("element_id").values_list("pk", "element_id"))
        assert first.created == len(rows) > 0
        second = presets_sync(account=account)
        assert second.created == 0 and second.updated == 0 and second.unchanged == len(rows)
        assert rows == list(
            PresetElement.objects.order_by("element_id").values_list("pk", "element_id")
        )
        assert PresetElement.objects.filter(owned_by="kling").count() == len(rows)

    def test_a_preset_no_longer_listed_is_hidden(self, client, portal, kling_settings):
        account = KlingAccount.objects.operator_default()
        PresetElement.objects.create(element_id="1", name="Retired preset")
        presets_sync(account=account)
        assert PresetElement.objects.get(element_id="1").removed_at is not None
        client.force_login(portal.viewer)
        body = client.get(url("elements-presets", portal)).content.decode()
        assert "Retired preset" not in body

    def test_admin_sync_now_answers_at_once_then_shows_the_presets(
        self, client, portal, kling_settings, jobs
    ):
        client.force_login(portal.admin)
        presets = url("elements-presets", portal)
        empty = client.get(presets).content.decode()
        assert "No presets cached yet" in empty and "Sync now" in empty
        response = jobs.post(client, url("elements-presets-sync", portal))
        assert response.status_code == 302 and response["Location"] == presets
        assert jobs.names() == ["elements_app.jobs.sync_presets_now"]
        assert not PresetElement.objects.exists()  # nothing read from Kling yet
        waiting = client.get(presets).content.decode()
        assert "Working…" in waiting and 'hx-trigger="every 1s"' in waiting

        assert jobs.run() == [VendorCallStatus.DONE]
        body = client.get(presets).content.decode()
        assert "Presets synced:" in body and 'hx-trigger="every 1s"' not in body
        preset = PresetElement.objects.first()
        assert preset.name in body
        assert "Use in AI multi-shot" in body
        assert f"frontal_image_url={quote(preset.vendor_frontal_image_url, safe='')}" in body

    def test_presets_filter_by_tag_and_name(self, client, portal):
        PresetElement.objects.create(element_id="1", name="Cat", tag_ids=",o_103,")
        PresetElement.objects.create(element_id="2", name="Castle", tag_ids=",o_106,")
        client.force_login(portal.viewer)
        by_tag = client.get(url("elements-presets", portal), {"tag": "o_103"}).content.decode()
        assert "Cat" in by_tag and "Castle" not in by_tag
        by_name = client.get(url("elements-presets", portal), {"q": "cast"}, headers=HX)
        assert "Castle" in by_name.content.decode() and "<html" not in by_name.content.decode()

    def test_htmx_sync_answers_the_result_partial_and_a_second_click_joins_it(
        self, client, portal, jobs
    ):
        client.force_login(portal.admin)
        first = jobs.post(client, url("elements-presets-sync", portal), headers=HX)
        second = jobs.post(client, url("elements-presets-sync", portal), headers=HX)
        call = VendorCall.objects.get()
        for response in (first, second):
            html = response.content.decode()
            assert html.lstrip().startswith('<div id="sync-result"') and "<html" not in html
            assert f'hx-get="{status_url(portal, call)}"' in html
        assert jobs.names() == ["elements_app.jobs.sync_presets_now"]

    def test_sync_with_bad_credentials_shows_the_vendors_error(
        self, client, portal, kling_settings, jobs
    ):
        kling_settings.KLING_SECRET_KEY = "not-the-sandbox-secret"
        client.force_login(portal.admin)
        jobs.post(client, url("elements-presets-sync", portal))
        jobs.run()
        call = VendorCall.objects.get()
        body = client.get(url("elements-presets", portal)).content.decode()
        assert "Kling refused the request." in body and "Code 1002 (HTTP 401)" in body
        assert f"request_id: <code>{call.error_request_id}</code>" in body
        assert "The presets were not changed." in body
        assert not PresetElement.objects.exists()

    def test_member_cannot_sync_and_get_is_not_allowed(self, client, portal):
        client.force_login(portal.member)
        assert client.post(url("elements-presets-sync", portal)).status_code == 403
        client.force_login(portal.admin)
        assert client.get(url("elements-presets-sync", portal)).status_code == 405

    def test_periodic_job_syncs_with_the_operator_account(self, portal, kling_settings):
        from elements_app.jobs import sync_presets

        assert "new" in sync_presets()
        assert PresetElement.objects.exists()


# --- import --------------------------------------------------------------------------------


def outside_body(name: str) -> dict:
    """A create body as another tool would send it (no portal external_task_id)."""
    import base64

    frontal = base64.b64encode(png().read()).decode()
    return {
        "element_name": name,
        "element_description": "Made in the Kling console.",
        "reference_type": "image_refer",
        "element_image_list": {"frontal_image": frontal, "refer_images": [{"image_url": frontal}]},
        "tag_list": [{"tag_id": "o_103"}],
    }


class TestImport:
    def test_admin_imports_elements_made_outside_the_portal_once(
        self, client, portal, fresh_sandbox, jobs
    ):
        # An account of its own: the list holds only this test's elements.
        client_ = kling_client_for(sandbox_account(fresh_sandbox, portal.team))
        outside = client_.create_task("element", outside_body("Outsider cat"))
        fresh_sandbox.advance(5)
        vendor_id = client_.get_task("element", task_id=outside.task_id).elements[0].element_id

        client.force_login(portal.admin)
        page = url("elements-import", portal)
        assert client.get(page).status_code == 200
        # Kling answers slowly: the request must not wait for it.
        fresh_sandbox.config.latency = 2.0
        started = time.monotonic()
        response = jobs.post(client, page)
        assert time.monotonic() - started < 1.5
        fresh_sandbox.config.latency = 0.0
        assert response.status_code == 302 and response["Location"] == page
        assert not Element.objects.exists()
        assert "Working…" in client.get(page).content.decode()

        assert jobs.names() == ["elements_app.jobs.import_elements"]
        jobs.run()
        body = client.get(page).content.decode()
        assert "Imported 1 element(s)" in body and 'hx-trigger="every 1s"' not in body
        element = Element.objects.get(team=portal.team, element_id=vendor_id)
        assert element.imported and element.status == ElementStatus.SUCCEED
        assert element.name == "Outsider cat" and element.tags == [("o_103", "Animal")]
        count = Element.objects.count()

        jobs.post(client, page)  # the previous import finished: a new one starts
        jobs.run()
        assert "Imported 0 element(s); 1 already in the portal" in client.get(page).content.decode()
        assert Element.objects.count() == count

    def test_htmx_import_answers_the_result_partial(self, client, portal, jobs):
        client.force_login(portal.admin)
        response = jobs.post(client, url("elements-import", portal), headers=HX)
        html = response.content.decode()
        call = VendorCall.objects.get()
        assert html.lstrip().startswith('<div id="import-result"') and "<html" not in html
        assert "Working…" in html and f'hx-get="{status_url(portal, call)}"' in html

    def test_import_with_bad_credentials_shows_the_vendors_error(
        self, client, portal, kling_settings, jobs
    ):
        kling_settings.KLING_SECRET_KEY = "not-the-sandbox-secret"
        client.force_login(portal.admin)
        jobs.post(client, url("elements-import", portal))
        jobs.run()
        body = client.get(url("elements-import", portal)).content.decode()
        assert "Code 1002 (HTTP 401)" in body and "Nothing was imported." in body
        assert not Element.objects.exists()

    def test_import_with_kling_down_shows_a_network_error(self, client, portal, settings, jobs):
        settings.KLING_API_BASE_URL = closed_port_url()
        settings.KLING_ACCESS_KEY, settings.KLING_SECRET_KEY = "ak-down", "sk-down"
        client.force_login(portal.admin)
        jobs.post(client, url("elements-import", portal))
        jobs.run()
        body = client.get(url("elements-import", portal)).content.decode()
        assert "Could not reach Kling (network error)." in body

    def test_kling_sync_of_an_outside_element_task_materialises_it_once(
        self, portal, kling_settings, fresh_sandbox
    ):
        from tasks_app.sync import tasks_sync

        client_ = kling_client_for(KlingAccount.objects.operator_default())
        outside = client_.create_task("element", outside_body("Synced owl"))
        fresh_sandbox.advance(5)
        tasks_sync(team=portal.team, families=["element"])
        element = Element.objects.get(task__task_id=outside.task_id)
        assert element.name == "Synced owl" and element.status == ElementStatus.SUCCEED
        assert element.imported and element.team == portal.team
        assert elements_import(team=portal.team, user=portal.admin).created == 0

    def test_portal_made_element_is_not_imported_twice(self, portal, kling_settings, fresh_sandbox):
        element = create_via_form(portal)
        run_task(fresh_sandbox, element.task)
        element.refresh_from_db()
        elements_import(team=portal.team, user=portal.admin)
        assert Element.objects.filter(element_id=element.element_id).count() == 1

    def test_member_cannot_import(self, client, portal):
        client.force_login(portal.member)
        assert client.get(url("elements-import", portal)).status_code == 403
        assert client.post(url("elements-import", portal)).status_code == 403


# --- library -------------------------------------------------------------------------------


class TestLibrary:
    def test_filters_by_tag_status_and_name(self, client, portal):
        make_element(portal, name="Cat", element_id="1", tag_ids=",o_103,")
        make_element(portal, name="Castle", element_id="2", tag_ids=",o_106,")
        make_element(portal, name="Catapult", element_id="", status=ElementStatus.CREATING)
        client.force_login(portal.viewer)
        get = lambda **q: client.get(url("elements-list", portal), q).content.decode()  # noqa: E731
        assert "Castle" not in get(tag="o_103") and "Cat" in get(tag="o_103")
        creating = get(status="creating")
        assert "Catapult" in creating and "Castle" not in creating
        by_name = get(q="cast")
        assert "Castle" in by_name and "Catapult" not in by_name

    def test_cards_show_voice_with_a_play_button(self, client, portal):
        make_element(
            portal,
            voice_id="v1",
            voice_name="Warm baritone",
            voice_trial_url="https://audio.example/trial.mp3",
        )
        client.force_login(portal.viewer)
        body = client.get(url("elements-list", portal)).content.decode()
        assert "Warm baritone" in body
        assert '<audio controls preload="none" src="https://audio.example/trial.mp3"' in body

    def test_pagination(self, client, portal):
        for i in range(30):
            make_element(portal, name=f"E{i:02d}", element_id=str(1000 + i))
        client.force_login(portal.viewer)
        first = client.get(url("elements-list", portal)).content.decode()
        assert "Page 1 of 2" in first
        second = client.get(url("elements-list", portal), {"page": 2}).content.decode()
        assert "E00" in second and "E29" not in second

    def test_cards_do_not_poll_one_by_one(self, client, portal):
        # The library's one live request (tests/test_live.py) refreshes the cards.
        creating = make_element(portal, status=ElementStatus.CREATING, element_id="")
        ready = make_element(portal, element_id="5")
        client.force_login(portal.viewer)
        card = client.get(url("elements-card", portal, code=creating.code), headers=HX)
        assert "Creating" in card.content.decode() and "hx-trigger" not in card.content.decode()
        card = client.get(url("elements-card", portal, code=ready.code), headers=HX)
        assert "hx-trigger" not in card.content.decode()

    def test_stored_frontal_image_is_served_to_members_only(self, client, portal, media_root):
        from django.core.files.storage import default_storage

        name = default_storage.save("uploads/t/image/front.png", png())
        element = make_element(portal, frontal_image=name)
        client.force_login(portal.viewer)
        response = client.get(url("elements-file", portal, code=element.code, which="frontal"))
        assert response.status_code == 200
        assert b"".join(response.streaming_content).startswith(b"\x89PNG")
        assert (
            client.get(url("elements-file", portal, code=element.code, which="video")).status_code
            == 404
        )
        client.force_login(portal.outsider)
        assert (
            client.get(url("elements-file", portal, code=element.code, which="frontal")).status_code
            == 404
        )


# --- access rules per page -------------------------------------------------------------------

PAGES = [
    # (url name, needs an element)
    ("elements-list", False),
    ("elements-presets", False),
    ("elements-detail", True),
    ("elements-card", True),
]


class TestAccess:
    @pytest.mark.parametrize(("name", "with_element"), PAGES)
    def test_read_pages(self, client, portal, name, with_element):
        kwargs = {"code": make_element(portal).code} if with_element else {}
        target = url(name, portal, **kwargs)
        anonymous = client.get(target)
        assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
        client.force_login(portal.outsider)
        assert client.get(target).status_code == 404
        client.force_login(portal.viewer)
        assert client.get(target).status_code == 200
        assert client.post(target).status_code == 405
        if name in ("elements-list", "elements-presets"):
            partial = client.get(target, headers=HX).content.decode()
            assert 'id="results"' in partial and "<html" not in partial

    def test_anonymous_htmx_request_is_sent_to_login_as_a_whole_page(self, client, portal):
        response = client.get(url("elements-list", portal), headers=HX)
        assert "/accounts/login/" in response["HX-Redirect"]

    def test_outsider_cannot_see_another_teams_element(self, client, portal):
        element = make_element(portal)
        client.force_login(portal.outsider)
        other = reverse(
            "elements-detail", kwargs={"team": portal.other_team.code, "code": element.code}
        )
        assert client.get(other).status_code == 404

    @pytest.mark.parametrize(
        ("name", "with_element", "least"),
        [
            ("elements-create", False, "member"),
            ("elements-delete", True, "member"),
            ("elements-import", False, "admin"),
            ("elements-presets-sync", False, "admin"),
        ],
    )
    def test_write_pages(self, client, portal, name, with_element, least):
        kwargs = {"code": make_element(portal, element_id="").code} if with_element else {}
        target = url(name, portal, **kwargs)
        anonymous = client.post(target)
        assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
        client.force_login(portal.outsider)
        assert client.post(target).status_code == 404
        client.force_login(portal.viewer)
        assert client.post(target).status_code == 403
        if least == "admin":
            client.force_login(portal.member)
            assert client.post(target).status_code == 403
        client.force_login(portal.owner)
        assert client.put(target).status_code == 405
        assert client.delete(target).status_code == 405

    def test_library_shows_write_actions_by_role(self, client, portal):
        client.force_login(portal.viewer)
        body = client.get(url("elements-list", portal)).content.decode()
        assert "New element" not in body and "Import from Kling" not in body
        client.force_login(portal.member)
        body = client.get(url("elements-list", portal)).content.decode()
        assert "New element" in body and "Import from Kling" not in body
        client.force_login(portal.admin)
        assert "Import from Kling" in client.get(url("elements-list", portal)).content.decode()


# --- the family plugs in -------------------------------------------------------------------


class TestFamily:
    def test_the_new_task_menu_leads_to_the_element_form_which_creates_an_element(
        self, client, portal, media_root
    ):
        client.force_login(portal.member)
        menu = client.get(reverse("tasks-new", kwargs={"team": portal.team.code}))
        create = url("elements-create", portal)
        assert "Custom element" in menu.content.decode()
        assert f'href="{create}"' in menu.content.decode()
        response = client.post(create, {**image_data(), **image_files(refers=2)})
        element = Element.objects.get(team=portal.team)
        assert response.status_code == 302
        assert element.task.family == Family.ELEMENT and element.task.status == Status.QUEUED
        # The three uploads are stored once each, and the task and the element share them.
        names = {element.frontal_image.name, *element.refer_image_names()}
        assert len(names) == 3
        assert {str(p.relative_to(media_root)) for p in stored_files(media_root)} == names

    def test_family_request_body_inlines_the_stored_files(self, portal):
        form = make_form(image_data(), image_files(refers=1), portal.team)
        assert form.is_valid()
        element = element_create(team=portal.team, user=portal.member, data=form.cleaned_data)
        from tasks_app.families import get_family

        body = get_family("element").request_body(element.task, callback_url=None)
        assert body["external_task_id"] == str(element.task.code)
        frontal = body["element_image_list"]["frontal_image"]
        assert isinstance(frontal, str) and not frontal.startswith("data:")
        import base64

        refer = body["element_image_list"]["refer_images"][0]["image_url"]
        assert base64.b64decode(refer).startswith(b"\x89PNG")
