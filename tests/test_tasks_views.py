"""Task pages: access rules, HTMX partials, filters, the create flow, files."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from klingweb.accounts.models import KlingAccount
from tasks_app.models import Budget, BudgetPeriod, MediaKind, Status, Task, TaskEvent, TaskMedia
from tests.test_tasks_forms import image_bytes, png_upload, upload, wav_upload

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def no_jobs(monkeypatch):
    """Record what would be enqueued instead of running it (the views never call Kling)."""
    calls = []
    monkeypatch.setattr(
        "django_q.tasks.async_task", lambda func, *args, **kw: calls.append((func, args))
    )
    return calls


def make_task(team, creator=None, **kw) -> Task:
    """A task row as the services would have left it."""
    defaults = {"family": "text2video", "prompt": "a red fox in snow", "status": Status.QUEUED}
    defaults.update(kw)
    return Task.objects.create(team=team, creator=creator, **defaults)


def url(route, team, **kw):
    return reverse(route, kwargs={"team": team.code, **kw})


# -- the lists --------------------------------------------------------------------------


class TestTaskList:
    def test_member_sees_team_tasks_and_create_button(self, client, portal):
        make_task(portal.team, portal.owner, prompt="owner's fox")
        make_task(portal.other_team, portal.outsider, prompt="secret of red team")
        client.force_login(portal.member)
        response = client.get(url("tasks-list", portal.team))
        assert response.status_code == 200
        body = response.content.decode()
        assert "owner&#x27;s fox" in body
        assert "secret of red team" not in body
        assert url("tasks-new", portal.team) in body or "New task" in body

    def test_viewer_sees_list_without_create_buttons(self, client, portal):
        make_task(portal.team, portal.owner)
        client.force_login(portal.viewer)
        response = client.get(url("tasks-list", portal.team))
        assert response.status_code == 200
        assert "New task" not in response.content.decode()

    def test_anonymous_redirected_to_login(self, client, portal):
        response = client.get(url("tasks-list", portal.team))
        assert response.status_code == 302
        assert reverse("accounts-login") in response["Location"]

    def test_outsider_gets_404(self, client, portal):
        client.force_login(portal.outsider)
        assert client.get(url("tasks-list", portal.team)).status_code == 404

    def test_post_is_405(self, client, portal):
        client.force_login(portal.member)
        assert client.post(url("tasks-list", portal.team)).status_code == 405

    def test_empty_state(self, client, portal):
        client.force_login(portal.member)
        body = client.get(url("tasks-list", portal.team)).content.decode()
        assert "has no tasks yet" in body
        assert "Create the first task" in body

    def test_htmx_renders_only_the_table(self, client, portal):
        make_task(portal.team, portal.member)
        client.force_login(portal.member)
        response = client.get(url("tasks-list", portal.team), {"q": "fox"}, **HTMX)
        body = response.content.decode()
        assert body.lstrip().startswith('<section id="task-table"')
        assert "<html" not in body
        assert "red fox" in body

    def test_filters(self, client, portal):
        make_task(portal.team, portal.member, prompt="alpha", status=Status.SUCCEED)
        make_task(portal.team, portal.owner, prompt="beta", family="avatar")
        make_task(
            portal.team, portal.owner, prompt="gamma", task_id="vendor-xyz-1", status="processing"
        )
        old = make_task(portal.team, portal.owner, prompt="delta")
        old.created_at = timezone.now() - timedelta(days=10)
        old.save()
        client.force_login(portal.member)
        list_url = url("tasks-list", portal.team)

        def shown(**query):
            body = client.get(list_url, query).content.decode()
            return {p for p in ("alpha", "beta", "gamma", "delta") if p in body}

        assert shown(status="succeed") == {"alpha"}
        # "Unfinished" is queued or at Kling; "At Kling" leaves the queued ones out.
        assert shown(status="unfinished") == {"beta", "gamma", "delta"}
        assert shown(status="in_flight") == {"gamma"}
        body = client.get(list_url).content.decode()
        assert "Unfinished (queued or at Kling)" in body and "In flight" not in body
        assert shown(family="avatar") == {"beta"}
        assert shown(creator=str(portal.member.pk)) == {"alpha"}
        assert shown(q="xyz") == {"gamma"}
        assert shown(q=str(old.code)[:13]) == {"delta"}
        today = timezone.localdate().isoformat()
        assert shown(date_from=today) == {"alpha", "beta", "gamma"}
        past = (timezone.localdate() - timedelta(days=9)).isoformat()
        assert shown(date_to=past) == {"delta"}
        assert (
            "No task matches these filters" in client.get(list_url, {"q": "zzz"}).content.decode()
        )

    def test_sort_and_pagination(self, client, portal):
        now = timezone.now()
        for i in range(30):
            make_task(
                portal.team,
                portal.member,
                prompt=f"task number {i:02d}!",
                created_at=now - timedelta(minutes=30 - i),
            )
        client.force_login(portal.member)
        list_url = url("tasks-list", portal.team)
        first = client.get(list_url).content.decode()
        assert "task number 29!" in first and "task number 04!" not in first
        assert "Page 1 of 2" in first
        second = client.get(list_url, {"page": 2}).content.decode()
        assert "task number 04!" in second and "task number 29!" not in second
        oldest = client.get(list_url, {"sort": "created"}).content.decode()
        assert oldest.index("task number 00!") < oldest.index("task number 01!")
        assert "task number 29!" not in oldest

    def test_filter_form_keeps_querystring_in_pagination(self, client, portal):
        for i in range(26):
            make_task(portal.team, portal.member, prompt=f"fox {i}")
        client.force_login(portal.member)
        body = client.get(url("tasks-list", portal.team), {"q": "fox"}, **HTMX).content.decode()
        assert "q=fox&amp;page=2" in body
        assert 'hx-push-url="true"' in body

    def test_my_tasks_only_mine(self, client, portal):
        make_task(portal.team, portal.member, prompt="mine indeed")
        make_task(portal.team, portal.owner, prompt="not mine")
        client.force_login(portal.member)
        response = client.get(url("tasks-mine", portal.team))
        body = response.content.decode()
        assert "mine indeed" in body and "not mine" not in body
        assert 'name="creator"' not in body

    def test_my_tasks_access(self, client, portal):
        assert client.get(url("tasks-mine", portal.team)).status_code == 302
        client.force_login(portal.outsider)
        assert client.get(url("tasks-mine", portal.team)).status_code == 404
        client.force_login(portal.viewer)
        assert client.get(url("tasks-mine", portal.team)).status_code == 200
        assert client.post(url("tasks-mine", portal.team)).status_code == 405
        assert (
            "You have not created"
            in client.get(url("tasks-mine", portal.team), **HTMX).content.decode()
        )


class TestRow:
    def test_in_flight_row_does_not_poll_itself(self, client, portal):
        # The page's one live request (tests/test_live.py) refreshes rows, not each row.
        task = make_task(portal.team, portal.member, status=Status.PROCESSING)
        client.force_login(portal.viewer)
        row_url = url("tasks-row", portal.team, code=task.code)
        body = client.get(row_url, **HTMX).content.decode()
        assert body.lstrip().startswith("<tr")
        assert "hx-trigger" not in body
        assert "Processing" in body

    def test_finished_row_stops_polling_and_shows_thumbnail(self, client, portal):
        task = make_task(
            portal.team,
            portal.member,
            family="multi_shot",
            status=Status.SUCCEED,
            final_unit_deduction=Decimal("4"),
            finished_at=timezone.now(),
            result={"images": [{"index": 0, "url_1": "https://cdn.example/1.png"}]},
        )
        client.force_login(portal.member)
        body = client.get(url("tasks-row", portal.team, code=task.code), **HTMX).content.decode()
        assert "hx-trigger" not in body
        assert '<img class="thumb" src="https://cdn.example/1.png"' in body
        assert ">4<" in body

    def test_row_access(self, client, portal):
        task = make_task(portal.team, portal.member)
        row_url = url("tasks-row", portal.team, code=task.code)
        assert client.get(row_url).status_code == 302
        client.force_login(portal.outsider)
        assert client.get(row_url).status_code == 404
        other = make_task(portal.other_team, portal.outsider)
        client.force_login(portal.member)
        assert client.get(url("tasks-row", portal.team, code=other.code)).status_code == 404
        assert client.post(row_url).status_code == 405


# -- create -----------------------------------------------------------------------------


class TestCreate:
    def test_new_task_menu(self, client, portal):
        client.force_login(portal.member)
        body = client.get(url("tasks-new", portal.team)).content.decode()
        for family in ("avatar", "video_extend", "multi_shot", "text2video", "image2video"):
            assert url("tasks-create", portal.team, family=family) in body
        client.force_login(portal.viewer)
        assert client.get(url("tasks-new", portal.team)).status_code == 403

    @pytest.mark.parametrize(
        "family", ["avatar", "video_extend", "multi_shot", "text2video", "image2video"]
    )
    def test_every_form_renders(self, client, portal, family):
        client.force_login(portal.member)
        response = client.get(url("tasks-create", portal.team, family=family))
        assert response.status_code == 200
        body = response.content.decode()
        assert 'id="task-form"' in body
        assert f'hx-post="{url("tasks-create", portal.team, family=family)}"' in body

    def test_prompt_has_live_counter(self, client, portal):
        client.force_login(portal.member)
        body = client.get(url("tasks-create", portal.team, family="avatar")).content.decode()
        assert 'data-charcount="2500"' in body
        assert 'id="id_prompt-count"' in body and "0 / 2500" in body
        assert "js/tasks.js" in body

    def test_create_access(self, client, portal):
        create = url("tasks-create", portal.team, family="text2video")
        assert client.get(create).status_code == 302
        client.force_login(portal.outsider)
        assert client.get(create).status_code == 404
        client.force_login(portal.viewer)
        assert client.get(create).status_code == 403
        assert client.post(create, {"prompt": "x"}).status_code == 403
        client.force_login(portal.member)
        assert client.put(create).status_code == 405
        assert client.get(url("tasks-create", portal.team, family="nope")).status_code == 404

    def test_valid_post_queues_and_redirects(
        self, client, portal, no_jobs, django_capture_on_commit_callbacks
    ):
        client.force_login(portal.member)
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                url("tasks-create", portal.team, family="text2video"),
                {
                    "model_name": "kling-v1-6",
                    "prompt": "a fox",
                    "mode": "pro",
                    "aspect_ratio": "1:1",
                    "duration": "10",
                },
            )
        task = Task.objects.get()
        assert response.status_code == 302
        assert response["Location"] == url("tasks-detail", portal.team, code=task.code)
        assert task.status == Status.QUEUED
        assert task.creator == portal.member
        assert (task.model_name, task.mode, task.prompt) == ("kling-v1-6", "pro", "a fox")
        assert task.kling_account is None  # bound to an account only when sent
        assert task.params["duration"] == "10"
        assert list(task.events.values_list("status", flat=True)) == ["queued"]
        assert no_jobs == [("tasks_app.jobs.submit_task", (task.pk,))]

    def test_htmx_post_answers_hx_redirect(self, client, portal, no_jobs):
        client.force_login(portal.member)
        response = client.post(
            url("tasks-create", portal.team, family="multi_shot"),
            {"frontal_image_file": png_upload()},
            **HTMX,
        )
        task = Task.objects.get()
        assert response["HX-Redirect"] == url("tasks-detail", portal.team, code=task.code)
        assert task.params["element_frontal_image"]["$file"].endswith(".png")
        assert "face.png" in task.summary

    def test_htmx_invalid_post_rerenders_form_with_errors_by_fields(self, client, portal, no_jobs):
        client.force_login(portal.member)
        response = client.post(
            url("tasks-create", portal.team, family="avatar"),
            {"mode": "std", "prompt": "x" * 2501, "audio_id": "a1"},
            **HTMX,
        )
        assert response.status_code == 200
        body = response.content.decode()
        assert body.lstrip().startswith('<form id="task-form"')
        assert "Prompt is 2501 characters long; the limit is 2500." in body
        assert "Upload the avatar image or paste its URL." in body
        assert Task.objects.count() == 0
        assert no_jobs == []

    def test_image_error_shown_next_to_image_field(self, client, portal, no_jobs):
        client.force_login(portal.member)
        response = client.post(
            url("tasks-create", portal.team, family="avatar"),
            {"mode": "std", "audio_id": "a1", "image_file": png_upload(299, 400)},
            **HTMX,
        )
        body = response.content.decode()
        group = body[body.index('id="id_image_file-group"') :]
        group = group[: group.index("</fieldset>")]
        assert "Image is 299×400 px; both sides must be at least 300 px." in group

    def test_text_file_named_png_refused_through_the_page(self, client, portal, no_jobs):
        client.force_login(portal.member)
        response = client.post(
            url("tasks-create", portal.team, family="multi_shot"),
            {"frontal_image_file": upload("face.png", b"plain text " * 50, "image/png")},
        )
        assert response.status_code == 200
        assert "not a JPG or PNG image" in response.content.decode()
        assert Task.objects.count() == 0

    def test_a_one_unit_budget_refuses_the_task_names_itself_and_keeps_no_upload(
        self, client, portal, no_jobs, settings
    ):
        """A real team budget of 0.4 units a day; an AI multi-shot task is estimated at 0.5
        (the vendor's per-call price). The
        page says which budget refused it; no task exists, nothing was queued, and the
        image of that submission is in storage only as a kept upload for the next try
        (issue 14 item 8), which the task does not reference."""
        Budget.objects.create(team=portal.team, period=BudgetPeriod.DAILY, units=Decimal("0.4"))
        media = Path(settings.MEDIA_ROOT)
        client.force_login(portal.member)
        create = url("tasks-create", portal.team, family="multi_shot")

        response = client.post(create, {"frontal_image_file": png_upload()}, **HTMX)

        assert response.status_code == 200
        page = response.content.decode()
        assert "Team daily budget: 0 of 0.4 units spent; this task needs about 0.5." in page
        assert Task.objects.count() == 0
        assert no_jobs == []
        left = [p for p in media.rglob("*") if p.is_file()]
        assert len(left) == 1 and "/kept/" in left[0].as_posix()
        assert "kept: " in page and "face.png" in page

        # The same submission under a budget that allows it stores the image and queues.
        Budget.objects.filter(team=portal.team).update(units=Decimal("100"))
        response = client.post(create, {"frontal_image_file": png_upload()}, **HTMX)
        task = Task.objects.get()
        stored = task.params["element_frontal_image"]["$file"]
        assert (media / stored).is_file()
        not_kept = [p for p in media.rglob("*") if p.is_file() and "/kept/" not in p.as_posix()]
        assert not_kept == [media / stored]

    def test_run_again_prefills_from_an_earlier_task(self, client, portal, no_jobs):
        client.force_login(portal.member)
        client.post(
            url("tasks-create", portal.team, family="image2video"),
            {
                "model_name": "kling-v1-5",
                "mode": "pro",
                "duration": "10",
                "prompt": "dancing leaves",
                "image_file": png_upload(),
                "cfg_scale": "0.3",
            },
        )
        first = Task.objects.get()
        page = client.get(
            url("tasks-create", portal.team, family="image2video"), {"from": str(first.code)}
        )
        body = page.content.decode()
        assert "dancing leaves" in body
        assert 'value="kling-v1-5" selected' in body
        assert 'value="0.3"' in body
        assert "Using the file of the earlier task" in body
        # Sending the prefilled form again creates a second task with the same image.
        form = page.context["form"]
        data = {k: v for k, v in form.initial.items() if v is not None}
        client.post(
            url("tasks-create", portal.team, family="image2video") + f"?from={first.code}", data
        )
        second = Task.objects.exclude(pk=first.pk).get()
        assert second.params["image"] == first.params["image"]
        assert second.params["prompt"] == "dancing leaves"

    def test_extend_prefill_from_query(self, client, portal):
        make_task(
            portal.team,
            portal.member,
            status=Status.SUCCEED,
            model_name="kling-v1",
            finished_at=timezone.now(),
            result={"videos": [{"id": "vid-77", "url": "https://x/v.mp4", "duration": "5"}]},
        )
        client.force_login(portal.member)
        body = client.get(
            url("tasks-create", portal.team, family="video_extend"), {"video_id": "vid-77"}
        ).content.decode()
        assert 'value="vid-77" selected' in body

    def test_multi_shot_prefill_from_query(self, client, portal):
        client.force_login(portal.member)
        body = client.get(
            url("tasks-create", portal.team, family="multi_shot"),
            {"frontal_image_url": "https://example.com/el.png"},
        ).content.decode()
        assert 'value="https://example.com/el.png"' in body


# -- the task page ----------------------------------------------------------------------


class TestDetail:
    def test_in_flight_detail_refreshes_its_live_region(self, client, portal):
        task = make_task(portal.team, portal.member, status=Status.SUBMITTED, task_id="k-1")
        TaskEvent.objects.create(task=task, status=Status.QUEUED, source="form")
        TaskEvent.objects.create(task=task, status=Status.SUBMITTED, source="submit")
        client.force_login(portal.viewer)
        detail = url("tasks-detail", portal.team, code=task.code)
        body = client.get(detail).content.decode()
        assert f'hx-get="{detail}" hx-trigger="every 3s"' in body
        assert "k-1" in body
        partial = client.get(detail, **HTMX).content.decode()
        assert partial.lstrip().startswith('<section id="task-live"')
        assert "Status history" in partial and "via submit" in partial
        assert "Run again" not in body  # viewers cannot create

    def test_error_shows_vendor_code_message_and_request_id(self, client, portal):
        task = make_task(
            portal.team,
            portal.member,
            status=Status.ERROR,
            error_code=1201,
            error_message="video_id: unknown video",
            error_request_id="req-123",
            finished_at=timezone.now(),
        )
        client.force_login(portal.member)
        body = client.get(url("tasks-detail", portal.team, code=task.code)).content.decode()
        assert "code 1201" in body and "video_id: unknown video" in body and "req-123" in body
        assert "hx-trigger" not in body

    def test_succeeded_video_with_vendor_urls_and_days_left(self, client, portal):
        task = make_task(
            portal.team,
            portal.member,
            status=Status.SUCCEED,
            model_name="kling-v1-6",
            final_unit_deduction=Decimal("35"),
            finished_at=timezone.now() - timedelta(days=3),
            vendor_created_at=timezone.now() - timedelta(days=3),
            result={
                "videos": [{"id": "v9", "url": "https://cdn.example/v9.mp4", "duration": "5.1"}]
            },
        )
        client.force_login(portal.member)
        body = client.get(url("tasks-detail", portal.team, code=task.code)).content.decode()
        assert '<video controls preload="metadata" src="https://cdn.example/v9.mp4">' in body
        assert "Kling deletes them in 27 days" in body
        assert "?video_id=v9" in body and "Extend this video" in body
        assert "Run again with these settings" in body
        assert "35</strong> units" in body
        assert 'id="task-json"' in body

    def test_results_deleted_by_vendor(self, client, portal):
        task = make_task(
            portal.team,
            portal.member,
            family="multi_shot",
            status=Status.SUCCEED,
            finished_at=timezone.now() - timedelta(days=31),
            vendor_created_at=timezone.now() - timedelta(days=31),
            result={"images": [{"index": 0, "url_1": "https://cdn.example/1.png"}]},
        )
        client.force_login(portal.member)
        body = client.get(url("tasks-detail", portal.team, code=task.code)).content.decode()
        assert "Kling deleted these results" in body
        assert "https://cdn.example/1.png" not in body.split("Settings sent")[0]

    def test_kept_media_preferred_and_served_to_members(self, client, portal, settings):
        from django.core.files.base import ContentFile

        task = make_task(
            portal.team,
            portal.member,
            family="multi_shot",
            status=Status.SUCCEED,
            finished_at=timezone.now(),
            result={"images": [{"index": 0, "url_1": "https://cdn.example/1.png"}]},
        )
        media = TaskMedia(
            task=task,
            kind=MediaKind.IMAGE,
            index=0,
            variant="url_1",
            source_url="https://cdn.example/1.png",
            content_type="image/png",
            kept_at=timezone.now(),
        )
        media.file.save("kept.png", ContentFile(image_bytes(300, 300)), save=True)
        client.force_login(portal.member)
        body = client.get(url("tasks-detail", portal.team, code=task.code)).content.decode()
        media_url = url("tasks-media-file", portal.team, code=task.code, media=media.code)
        assert f'src="{media_url}"' in body
        assert "Kept in the portal" in body
        response = client.get(media_url)
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert "attachment" in client.get(media_url, {"download": "1"})["Content-Disposition"]
        client.force_login(portal.outsider)
        assert client.get(media_url).status_code == 404

    def test_download_all_streams_every_kept_file_in_one_zip(self, client, portal):
        import io
        import zipfile

        from django.core.files.base import ContentFile

        task = make_task(
            portal.team,
            portal.member,
            family="multi_shot",
            status=Status.SUCCEED,
            finished_at=timezone.now(),
            result={
                "images": [{"index": i, "url_1": f"https://cdn.example/{i}.png"} for i in (1, 2, 3)]
            },
        )
        originals = {}
        for index in (1, 2, 3):
            data = image_bytes(200 + index, 200)
            media = TaskMedia(
                task=task,
                kind=MediaKind.IMAGE,
                index=index,
                variant="url_1",
                source_url=f"https://cdn.example/{index}.png",
                content_type="image/png",
                size=len(data),
                kept_at=timezone.now(),
            )
            media.file.save(f"kept-{index}.png", ContentFile(data), save=True)
            originals[f"{task.code}-image-{index}.png"] = data
        client.force_login(portal.viewer)
        zip_url = url("tasks-media-zip", portal.team, code=task.code)
        body = client.get(url("tasks-detail", portal.team, code=task.code)).content.decode()
        assert f'href="{zip_url}"' in body and "Download all 3 files (zip)" in body
        response = client.get(zip_url)
        assert response.status_code == 200 and response.streaming
        assert response["Content-Type"] == "application/zip"
        assert f'filename="{task.code}.zip"' in response["Content-Disposition"]
        payload = b"".join(response.streaming_content)
        assert int(response["Content-Length"]) == len(payload)
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            assert archive.testzip() is None
            assert {name: archive.read(name) for name in archive.namelist()} == originals
        client.force_login(portal.outsider)
        assert client.get(zip_url).status_code == 404

    def test_download_all_is_404_while_nothing_is_kept(self, client, portal):
        task = make_task(portal.team, portal.member, status=Status.SUCCEED)
        client.force_login(portal.member)
        assert client.get(url("tasks-media-zip", portal.team, code=task.code)).status_code == 404

    def test_an_extension_links_the_task_whose_video_it_extends(self, client, portal):
        source = make_task(
            portal.team,
            portal.member,
            family="text2video",
            status=Status.SUCCEED,
            prompt="A fox in the snow",
            result={"videos": [{"id": "vid-777", "url": "https://cdn.example/v.mp4"}]},
        )
        extension = make_task(
            portal.team, portal.member, family="video_extend", params={"video_id": "vid-777"}
        )
        pasted = make_task(
            portal.team, portal.member, family="video_extend", params={"video_id": "vid-elsewhere"}
        )
        client.force_login(portal.viewer)
        body = client.get(url("tasks-detail", portal.team, code=extension.code)).content.decode()
        source_url = url("tasks-detail", portal.team, code=source.code)
        assert f'Extends a video of <a href="{source_url}">' in body and "A fox in the snow" in body
        other = client.get(url("tasks-detail", portal.team, code=pasted.code)).content.decode()
        assert "Extends a video of" not in other

    def test_detail_access(self, client, portal):
        task = make_task(portal.team, portal.member)
        detail = url("tasks-detail", portal.team, code=task.code)
        assert client.get(detail).status_code == 302
        client.force_login(portal.outsider)
        assert client.get(detail).status_code == 404
        client.force_login(portal.viewer)
        assert client.get(detail).status_code == 200
        assert client.post(detail).status_code == 405

    def test_json_export(self, client, portal):
        task = make_task(
            portal.team,
            portal.member,
            params={"prompt": "fox"},
            final_unit_deduction=Decimal("2.5"),
        )
        client.force_login(portal.viewer)
        response = client.get(url("tasks-json", portal.team, code=task.code))
        assert response.status_code == 200
        data = response.json()
        assert data["params"] == {"prompt": "fox"} and data["final_unit_deduction"] == "2.5"
        client.force_login(portal.outsider)
        assert client.get(url("tasks-json", portal.team, code=task.code)).status_code == 404

    def test_uploaded_inputs_shown_and_served_safely(self, client, portal, no_jobs):
        client.force_login(portal.member)
        client.post(
            url("tasks-create", portal.team, family="avatar"),
            {
                "mode": "std",
                "image_file": png_upload(name="evil.svg"),
                "sound_file": wav_upload(name="v.html"),
            },
        )
        task = Task.objects.get()
        body = client.get(url("tasks-detail", portal.team, code=task.code)).content.decode()
        image_name = task.params["image"]["$file"]
        prefix = f"uploads/{portal.team.code}/"
        image_url = url("tasks-input", portal.team, name=image_name[len(prefix) :])
        assert f'<img class="preview" src="{image_url}"' in body
        response = client.get(image_url)
        assert response["Content-Type"] == "image/png"
        assert "sandbox" in response["Content-Security-Policy"]
        sound_name = task.params["sound_file"]["$file"]
        assert sound_name.endswith(".wav")
        assert (
            client.get(url("tasks-input", portal.team, name=sound_name[len(prefix) :]))[
                "Content-Type"
            ]
            == "audio/wav"
        )
        client.force_login(portal.outsider)
        assert client.get(image_url).status_code == 404
        client.force_login(portal.member)
        assert (
            client.get(url("tasks-input", portal.team, name="../../etc/passwd")).status_code == 404
        )


class TestAccountBanner:
    def test_admins_see_why_submissions_are_paused(self, client, portal):
        account = KlingAccount.objects.operator_default()
        account.paused_at = timezone.now()
        account.paused_code = 1102
        account.paused_message = (
            "Submissions are paused: the Kling resource pack is used up or expired (pack empty)."
        )
        account.paused_request_id = "req-pause"
        account.save()
        client.force_login(portal.admin)
        body = client.get(url("tasks-list", portal.team)).content.decode()
        assert "code 1102" in body and "resource pack is used up" in body and "req-pause" in body
        client.force_login(portal.member)
        body = client.get(url("tasks-list", portal.team)).content.decode()
        assert "Sending tasks to Kling is paused" in body and "req-pause" not in body
