"""The programmatic API (/api/v1/) with team API keys, against the Kling sandbox.

A key made by ``manage.py api_key create`` creates a text2video task through ``POST
/api/v1/tasks``; the background jobs run inline; ``GET`` follows it to ``succeed``; the kept
video downloads through the returned signed link without a session; the task is in the
team's list attributed to the key's member. Then the refusals: read-only 403, revoked 401,
another team's key 404, a budget refusal naming the budget, idempotency, rate limit 429, and
a schemathesis fuzz of the whole schema.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from klingweb.accounts.models import Membership, Role
from klingweb.api.models import ApiKey
from tasks_app.models import Budget, Deduction, Status, Task
from tests.test_tasks_submission import NO_CALLBACKS_HERE, poll

T2V = {
    "family": "text2video",
    "model_name": "kling-v1-6",
    "prompt": "a red fox in the snow",
    "mode": "std",
    "aspect_ratio": "16:9",
    "duration": "5",
}


@pytest.fixture
def sync_jobs(monkeypatch):
    """django-q2 runs enqueued jobs inline (``Conf.SYNC``)."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture
def kling(kling_settings, sync_jobs, portal):
    """The operator default account on the sandbox, jobs inline."""
    kling_settings.PUBLIC_BASE_URL = NO_CALLBACKS_HERE
    return kling_settings


def make_key(team, username: str, *, read_only: bool = False) -> str:
    """A key from ``manage.py api_key create``: the last line of its output."""
    out = io.StringIO()
    args = ["create", "--team", team.name, "--user", username, "--name", "script"]
    if read_only:
        args.append("--read-only")
    call_command("api_key", *args, stdout=out)
    return out.getvalue().strip().splitlines()[-1]


def api(key: str | None = None) -> Client:
    """A client without a session, sending ``key`` as the bearer."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return Client(headers=headers)


def post_task(client: Client, body: dict, capture, **headers):
    with capture(execute=True):
        return client.post(
            "/api/v1/tasks", data=json.dumps(body), content_type="application/json", headers=headers
        )


class TestEndToEnd:
    def test_script_creates_polls_downloads_and_sees_the_task_in_the_list(
        self, portal, kling, fresh_sandbox, django_capture_on_commit_callbacks
    ):
        key = make_key(portal.team, "member")
        assert key.startswith("kw_") and " " not in key
        client = api(key)

        response = post_task(client, T2V, django_capture_on_commit_callbacks)
        assert response.status_code == 202, response.content
        created = response.json()
        assert created["creator"] == "member" and created["family"] == "text2video"
        code = created["code"]
        task = Task.objects.get(code=code)
        assert task.creator == portal.member and task.team == portal.team
        assert task.status == Status.SUBMITTED and task.task_id

        fresh_sandbox.advance(2)
        with django_capture_on_commit_callbacks(execute=True):
            poll(task)  # the poller's work; keeping the media runs inline on commit
        answer = client.get(f"/api/v1/tasks/{code}").json()
        assert answer["status"] == "succeed"
        assert answer["task_id"] == task.task_id
        assert answer["cost"]["final_unit_deduction"] is not None
        assert Deduction.objects.filter(task=task, member=portal.member).count() == 1
        video = [r for r in answer["results"] if r["kind"] == "video" and r["variant"] == "url"][0]
        assert video["kept"] is True

        download = Client().get(video["url"].removeprefix("http://testserver"))
        assert download.status_code == 200
        body = b"".join(download.streaming_content)
        assert len(body) > 0 and download["Content-Type"] == "video/mp4"
        assert Client().get(video["url"].removeprefix("http://testserver") + "x").status_code == 404

        listing = client.get("/api/v1/tasks", {"creator": "member", "family": "text2video"})
        assert [item["code"] for item in listing.json()["items"]] == [code]
        assert listing.json()["items"][0]["creator"] == "member"
        usage = client.get(
            "/api/v1/usage",
            {"from": task.created_at.date().isoformat(), "to": task.created_at.date().isoformat()},
        )
        assert usage.status_code == 200
        assert [m["member"] for m in usage.json()["members"]] == ["member"]

    def test_omitted_fields_take_the_pages_defaults(
        self, portal, kling, django_capture_on_commit_callbacks
    ):
        body = {"family": "text2video", "prompt": "a fox"}
        response = post_task(
            api(make_key(portal.team, "member")), body, django_capture_on_commit_callbacks
        )
        assert response.status_code == 202, response.content
        task = Task.objects.get(code=response.json()["code"])
        assert task.params["mode"] == "std" and task.params["duration"] == "5"
        assert task.params["aspect_ratio"] == "16:9" and task.params["model_name"] == "kling-v1-6"

    def test_form_errors_come_back_with_the_forms_message_and_field(self, portal, kling):
        client = api(make_key(portal.team, "member"))
        response = client.post(
            "/api/v1/tasks",
            data=json.dumps({**T2V, "cfg_scale": 3}),
            content_type="application/json",
        )
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["field"] == "cfg_scale"
        assert error["message"] == "cfg_scale must be between 0 and 1 (got 3)."
        unknown = client.post(
            "/api/v1/tasks",
            data=json.dumps({**T2V, "colour": "red"}),
            content_type="application/json",
        )
        assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "colour"
        bad_image = client.post(
            "/api/v1/tasks",
            data=json.dumps({"family": "image2video", "model_name": "kling-v1-6", "image": "@@"}),
            content_type="application/json",
        )
        assert bad_image.status_code == 400 and bad_image.json()["error"]["field"] == "image"
        assert not Task.objects.exists()

    def test_budget_refusal_names_the_budget(
        self, portal, kling, django_capture_on_commit_callbacks
    ):
        Budget.objects.create(team=portal.team, period="monthly", units=Decimal("1"))
        response = post_task(
            api(make_key(portal.team, "member")), T2V, django_capture_on_commit_callbacks
        )
        assert response.status_code == 402
        error = response.json()["error"]
        assert error["code"] == "budget_exceeded"
        assert error["budget"] == "Team monthly budget"
        assert "monthly budget" in error["message"]
        assert not Task.objects.exists()


class TestCancel:
    """``POST /api/v1/tasks/{code}/cancel``: the task page's Cancel button for scripts."""

    def queued(self, key: str) -> str:
        """A task created through the API whose submission never ran (still queued)."""
        response = api(key).post(
            "/api/v1/tasks", data=json.dumps(T2V), content_type="application/json"
        )
        assert response.status_code == 202, response.content
        assert response.json()["status"] == "queued"
        return response.json()["code"]

    def test_creator_cancels_a_queued_task_and_nothing_is_charged(self, portal, kling):
        key = make_key(portal.team, "member")
        code = self.queued(key)
        response = api(key).post(f"/api/v1/tasks/{code}/cancel")
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "cancelled"
        assert api(key).post(f"/api/v1/tasks/{code}/cancel").status_code == 200  # again: same
        task = Task.objects.get(code=code)
        assert task.status == Status.CANCELLED and not task.task_id
        assert not Deduction.objects.filter(task=task).exists()
        assert "Cancelled by member" in task.events.get(status=Status.CANCELLED).note

    def test_only_the_creator_or_an_admin_may_cancel(self, portal, kling):
        code = self.queued(make_key(portal.team, "admin"))
        member = api(make_key(portal.team, "member")).post(f"/api/v1/tasks/{code}/cancel")
        assert member.status_code == 403
        assert "created this task or an admin" in member.json()["error"]["message"]
        reader = api(make_key(portal.team, "admin", read_only=True))
        assert reader.post(f"/api/v1/tasks/{code}/cancel").status_code == 403
        outsider = api(make_key(portal.other_team, "outsider"))
        assert outsider.post(f"/api/v1/tasks/{code}/cancel").status_code == 404
        assert Task.objects.get(code=code).status == Status.QUEUED
        mine = self.queued(make_key(portal.team, "member"))
        admin = api(make_key(portal.team, "admin")).post(f"/api/v1/tasks/{mine}/cancel")
        assert admin.status_code == 200 and admin.json()["status"] == "cancelled"

    def test_a_task_sent_to_kling_is_409_and_keeps_running(
        self, portal, kling, django_capture_on_commit_callbacks
    ):
        key = make_key(portal.team, "member")
        code = post_task(api(key), T2V, django_capture_on_commit_callbacks).json()["code"]
        assert Task.objects.get(code=code).status == Status.SUBMITTED
        response = api(key).post(f"/api/v1/tasks/{code}/cancel")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "not_cancellable"
        assert response.json()["error"]["message"]
        assert Task.objects.get(code=code).status == Status.SUBMITTED


class TestKeys:
    def test_read_only_key_gets_403_on_writes_and_reads(self, portal, kling):
        client = api(make_key(portal.team, "member", read_only=True))
        response = client.post(
            "/api/v1/tasks", data=json.dumps(T2V), content_type="application/json"
        )
        assert response.status_code == 403
        assert response.json()["error"]["message"] == "This API key is read-only."
        assert client.get("/api/v1/tasks").status_code == 200
        assert not Task.objects.exists()

    def test_revoked_key_gets_401(self, portal, kling):
        key = make_key(portal.team, "member")
        call_command(
            "api_key",
            "revoke",
            "--team",
            portal.team.name,
            "--prefix",
            key.split("_")[1],
            stdout=io.StringIO(),
        )
        response = api(key).get("/api/v1/tasks")
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "The API key has been revoked."

    def test_missing_or_forged_key_gets_401_and_no_session_counts(self, client, portal, kling):
        client.force_login(portal.member)
        assert client.get("/api/v1/tasks").status_code == 401
        key = make_key(portal.team, "member")
        assert api(key[:-2] + "xx").get("/api/v1/tasks").status_code == 401

    def test_demoted_member_keeps_reading_and_leaver_loses_the_key(
        self, portal, kling, django_capture_on_commit_callbacks
    ):
        key = make_key(portal.team, "member")
        Membership.objects.filter(user=portal.member, team=portal.team).update(role=Role.VIEWER)
        response = post_task(api(key), T2V, django_capture_on_commit_callbacks)
        assert response.status_code == 403
        assert api(key).get("/api/v1/tasks").status_code == 200
        Membership.objects.filter(user=portal.member, team=portal.team).delete()
        assert api(key).get("/api/v1/tasks").status_code == 401

    def test_another_teams_key_gets_404_on_this_teams_task(
        self, portal, kling, django_capture_on_commit_callbacks
    ):
        created = post_task(
            api(make_key(portal.team, "member")), T2V, django_capture_on_commit_callbacks
        )
        code = created.json()["code"]
        other = api(make_key(portal.other_team, "outsider"))
        assert other.get(f"/api/v1/tasks/{code}").status_code == 404
        assert other.get("/api/v1/tasks").json()["items"] == []

    def test_admin_page_creates_shows_once_lists_and_revokes(self, client, portal):
        url = reverse("api-keys", kwargs={"team": portal.team.code})
        client.force_login(portal.admin)
        page = client.post(url, {"name": "ci", "scope": "write"})
        assert page.status_code == 200
        key = ApiKey.objects.get(name="ci")
        text = page.content.decode()
        assert f"kw_{key.prefix}_" in text and key.created_by == portal.admin
        again = client.get(url).content.decode()
        assert f"…{key.last4}" in again
        raw = text.split('id="new-key-text">')[1].split("<")[0]
        assert raw not in again
        revoke = reverse("api-key-revoke", kwargs={"team": portal.team.code, "key": key.code})
        assert client.post(revoke).status_code == 302
        assert api(raw).get("/api/v1/tasks").status_code == 401

    def test_elements_list_is_the_teams_only(self, portal, kling):
        from elements_app.models import Element

        Element.objects.create(team=portal.team, name="Blue fox", creator=portal.member)
        Element.objects.create(team=portal.other_team, name="Red fox", creator=portal.outsider)
        items = api(make_key(portal.team, "viewer", read_only=True)).get("/api/v1/elements")
        assert [e["name"] for e in items.json()] == ["Blue fox"]

    def test_admin_page_refuses_members_and_outsiders(self, client, portal):
        url = reverse("api-keys", kwargs={"team": portal.team.code})
        client.force_login(portal.member)
        assert client.get(url).status_code == 403
        client.force_login(portal.outsider)
        assert client.get(url).status_code == 404
        client.force_login(portal.admin)
        assert client.put(url).status_code == 405


class TestIdempotencyAndLimits:
    def test_same_key_same_body_is_one_task_other_body_409(
        self, portal, kling, django_capture_on_commit_callbacks
    ):
        client = api(make_key(portal.team, "member"))
        first = post_task(
            client, T2V, django_capture_on_commit_callbacks, **{"Idempotency-Key": "k1"}
        )
        again = post_task(
            client, T2V, django_capture_on_commit_callbacks, **{"Idempotency-Key": "k1"}
        )
        assert first.status_code == 202 and again.status_code == 200
        assert first.json()["code"] == again.json()["code"]
        other = post_task(
            client,
            {**T2V, "prompt": "a cat"},
            django_capture_on_commit_callbacks,
            **{"Idempotency-Key": "k1"},
        )
        assert other.status_code == 409
        assert Task.objects.count() == 1

    def test_rate_limit_answers_429_with_retry_after(self, portal, settings):
        settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "api-key": (3, 60)}
        client = api(make_key(portal.team, "member"))
        statuses = [client.get("/api/v1/tasks").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        response = client.get("/api/v1/tasks")
        assert 1 <= int(response["Retry-After"]) <= 60
        assert response.json()["error"]["code"] == "rate_limited"

    def test_cursor_pagination_walks_every_task_once(
        self, portal, kling, django_capture_on_commit_callbacks
    ):
        client = api(make_key(portal.team, "member"))
        codes = [
            post_task(
                client, {**T2V, "prompt": f"p{i}"}, django_capture_on_commit_callbacks
            ).json()["code"]
            for i in range(5)
        ]
        seen, cursor = [], None
        while True:
            page = client.get(
                "/api/v1/tasks", {"limit": 2, **({"cursor": cursor} if cursor else {})}
            ).json()
            seen += [item["code"] for item in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == list(reversed(codes))
        assert client.get("/api/v1/tasks", {"cursor": "forged"}).status_code == 400


# -- multipart uploads and elements ----------------------------------------------------


def png(name: str, width: int = 400, height: int = 400):
    """A PNG file part (passes the image rule unless made smaller than 300 px)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.test_tasks_forms import image_bytes

    return SimpleUploadedFile(name, image_bytes(width, height), content_type="image/png")


def stored_files(settings) -> list:
    """Every file under the test's MEDIA_ROOT (uploads, kept files...)."""
    from pathlib import Path

    root = Path(settings.MEDIA_ROOT)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


ELEMENT = {
    "element_name": "Hero",
    "element_description": "A brave hero in a red cape.",
    "reference_type": "image_refer",
    "element_image_list": {
        "frontal_image": "https://img.example/hero/front.png",
        "refer_images": [
            {"image_url": "https://img.example/hero/side.png"},
            {"image_url": "https://img.example/hero/back.jpg"},
        ],
    },
    "tag_list": [{"tag_id": "o_102"}],
}


def post_element(client: Client, capture, *, data=None, body=None, **headers):
    """POST /api/v1/elements as JSON (``body``) or multipart (``data``), jobs on commit."""
    with capture(execute=True):
        if body is not None:
            return client.post(
                "/api/v1/elements",
                data=json.dumps(body),
                content_type="application/json",
                headers=headers,
            )
        return client.post("/api/v1/elements", data=data, headers=headers)


class TestMultipartTasks:
    def test_image2video_with_the_image_as_a_file_part(
        self, portal, kling, fresh_sandbox, django_capture_on_commit_callbacks
    ):
        client = api(make_key(portal.team, "member"))
        data = {
            "family": "image2video",
            "model_name": "kling-v1-6",
            "prompt": "the fox turns its head",
            "watermark_info": '{"enabled": true}',
            "image": png("fox.png"),
        }
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post("/api/v1/tasks", data=data)
        assert response.status_code == 202, response.content
        task = Task.objects.get(code=response.json()["code"])
        assert task.params["image"]["$file"].endswith(".png")  # stored, sent by URL
        assert task.params["watermark_info"] == {"enabled": True}
        assert task.status == Status.SUBMITTED and task.creator == portal.member

    def test_a_bad_file_part_gets_the_forms_message_and_nothing_is_stored(
        self, portal, kling, settings
    ):
        client = api(make_key(portal.team, "member"))
        data = {"family": "image2video", "model_name": "kling-v1-6", "image": png("s.png", 299)}
        response = client.post("/api/v1/tasks", data=data)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["field"] == "image"
        assert error["message"] == "Image is 299×400 px; both sides must be at least 300 px."
        unknown = client.post("/api/v1/tasks", data={**data, "image": png("f.png"), "x": png("y")})
        assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "x"
        assert not Task.objects.exists() and stored_files(settings) == []

    def test_element_family_points_to_the_elements_endpoint(self, portal, kling):
        response = api(make_key(portal.team, "member")).post(
            "/api/v1/tasks", data=json.dumps({"family": "element"}), content_type=JSON
        )
        assert response.status_code == 400
        assert "POST /api/v1/elements" in response.json()["error"]["message"]


JSON = "application/json"


class TestElements:
    def test_json_with_urls_creates_the_element_which_becomes_ready(
        self, portal, kling, fresh_sandbox, django_capture_on_commit_callbacks
    ):
        from elements_app.models import Element

        client = api(make_key(portal.team, "member"))
        response = post_element(client, django_capture_on_commit_callbacks, body=ELEMENT)
        assert response.status_code == 202, response.content
        created = response.json()
        assert created["status"] == "creating" and created["creator"] == "member"
        element = Element.objects.get(code=created["code"])
        task = element.task
        assert str(task.code) == created["task_code"] and task.family == "element"
        assert task.params["element_image_list"] == ELEMENT["element_image_list"]
        assert task.params["tag_list"] == [{"tag_id": "o_102"}]
        assert task.status == Status.SUBMITTED  # the sandbox accepted the create call

        fresh_sandbox.advance(5)
        poll(task)
        ready = client.get(f"/api/v1/elements/{element.code}").json()
        assert ready["status"] == "succeed" and ready["element_id"]
        assert [e["code"] for e in client.get("/api/v1/elements").json()] == [created["code"]]
        other = api(make_key(portal.other_team, "outsider"))
        assert other.get(f"/api/v1/elements/{element.code}").status_code == 404

    def test_multipart_files_are_stored_and_checked_like_the_page(
        self, portal, kling, fresh_sandbox, django_capture_on_commit_callbacks
    ):
        from elements_app.models import Element

        data = {
            "element_name": "Fox",
            "element_description": "A red fox.",
            "frontal_image": png("front.png"),
            "refer_images": [png("left.png"), png("right.png"), png("back.png")],
            "tag_list": ["o_103", "o_108"],
        }
        response = post_element(
            api(make_key(portal.team, "member")), django_capture_on_commit_callbacks, data=data
        )
        assert response.status_code == 202, response.content
        element = Element.objects.get(code=response.json()["code"])
        assert element.frontal_image.name.endswith(".png")
        assert len(element.refer_image_names()) == 3
        assert element.tags == [("o_103", "Animal"), ("o_108", "Others")]
        images = element.task.params["element_image_list"]
        assert images["frontal_image"] == {"$file": element.frontal_image.name}
        assert element.task.status == Status.SUBMITTED

    @pytest.mark.parametrize(
        ("change", "field", "message"),
        [
            (
                {"element_name": "x" * 21},
                "element_name",
                "Ensure this value has at most 20 characters (it has 21).",
            ),
            (
                {
                    "element_image_list": {
                        "frontal_image": "https://img.example/f.png",
                        "refer_images": [
                            {"image_url": f"https://img.example/{i}.png"} for i in "abcd"
                        ],
                    }
                },
                "element_image_list.refer_images",
                "Add 1 to 3 images from other angles (you gave 4).",
            ),
            (
                {
                    "element_image_list": {
                        "refer_images": [{"image_url": "https://i.example/a.png"}]
                    }
                },
                "element_image_list.frontal_image",
                "Add a frontal image.",
            ),
            (
                {"reference_type": "video_refer", "element_image_list": None},
                "element_video_list.refer_videos",
                "Add one reference video.",
            ),
            ({"tag_list": [{"tag_id": "o_999"}]}, "tag_list", None),
        ],
    )
    def test_bad_input_gets_the_forms_message_and_creates_nothing(
        self, portal, kling, settings, django_capture_on_commit_callbacks, change, field, message
    ):
        from elements_app.forms import ElementForm
        from elements_app.models import Element

        body = {key: value for key, value in {**ELEMENT, **change}.items() if value is not None}
        response = post_element(
            api(make_key(portal.team, "member")), django_capture_on_commit_callbacks, body=body
        )
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert error["field"] == field
        if message is None:  # the form's own wording of a bad choice
            form = ElementForm({"tags": ["o_999"]}, team=portal.team)
            message = form.errors["tags"][0]
        assert error["message"] == message
        assert not Element.objects.exists() and not Task.objects.exists()

    def test_a_small_base64_image_is_refused_with_the_image_rule_and_nothing_stored(
        self, portal, kling, settings
    ):
        import base64

        from tests.test_tasks_forms import image_bytes

        small = base64.b64encode(image_bytes(200, 400)).decode()
        body = {**ELEMENT, "element_image_list": {**ELEMENT["element_image_list"]}}
        body["element_image_list"]["frontal_image"] = small
        response = api(make_key(portal.team, "member")).post(
            "/api/v1/elements", data=json.dumps(body), content_type=JSON
        )
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["field"] == "element_image_list.frontal_image"
        assert error["message"] == (
            "Frontal image (frontal_image): Image is 200×400 px; both sides must be at least 300 px."
        )
        assert stored_files(settings) == []

    def test_read_only_key_gets_403_and_creates_nothing(self, portal, kling):
        from elements_app.models import Element

        client = api(make_key(portal.team, "member", read_only=True))
        response = client.post("/api/v1/elements", data=json.dumps(ELEMENT), content_type=JSON)
        assert response.status_code == 403
        assert response.json()["error"]["message"] == "This API key is read-only."
        assert not Element.objects.exists()

    def test_idempotent_retry_gives_the_same_element_and_another_body_409(
        self, portal, kling, django_capture_on_commit_callbacks
    ):
        from elements_app.models import Element

        client = api(make_key(portal.team, "member"))

        def send(name="Fox", front="front.png"):
            data = {
                "element_name": name,
                "element_description": "A red fox.",
                "frontal_image": png(front),
                "refer_images": [png("left.png")],
            }
            return post_element(
                client, django_capture_on_commit_callbacks, data=data, **{"Idempotency-Key": "e1"}
            )

        first, again = send(), send()
        assert first.status_code == 202 and again.status_code == 200
        assert first.json()["code"] == again.json()["code"]
        assert send(name="Wolf").status_code == 409
        assert Element.objects.count() == 1 and Task.objects.count() == 1
        # A task made with this key earlier is not an element: the key cannot be reused.
        assert (
            post_task(client, T2V, django_capture_on_commit_callbacks, **{"Idempotency-Key": "e1"})
        ).status_code == 409

    def test_budget_refusal_names_the_budget(
        self, portal, kling, django_capture_on_commit_callbacks
    ):
        from elements_app.models import Element

        Budget.objects.create(team=portal.team, period="daily", units=Decimal("0.01"))
        response = post_element(
            api(make_key(portal.team, "member")), django_capture_on_commit_callbacks, body=ELEMENT
        )
        assert response.status_code == 402
        assert response.json()["error"]["budget"] == "Team daily budget"
        assert not Element.objects.exists()


class TestSchema:
    def test_docs_page_is_served_locally(self):
        page = Client().get("/api/v1/docs")
        assert page.status_code == 200
        assert "script-src 'self'" in page["Content-Security-Policy"]
        text = page.content.decode()
        assert "/static/ninja/swagger-ui-bundle.js" in text and "cdn" not in text.lower()

    def test_fuzz_whole_api_no_5xx_no_schema_break(self, portal, settings):
        import schemathesis
        from django.core.wsgi import get_wsgi_application

        settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "api-key": (100000, 60)}
        from django.core.signals import request_finished, request_started
        from django.db import close_old_connections

        key = make_key(portal.team, "member")
        # As Django's test client does: the WSGI app must not close the test's connection.
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            self._fuzz(schemathesis, get_wsgi_application(), key)
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)

    def _fuzz(self, schemathesis, app, key):
        from hypothesis import HealthCheck, Phase, given
        from hypothesis import settings as hsettings
        from schemathesis.checks import not_a_server_error
        from schemathesis.specs.openapi.checks import (
            response_schema_conformance,
            status_code_conformance,
        )

        schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
        statuses: dict[str, set[int]] = {}
        for operation in schema.get_all_operations():
            op = operation.ok()
            strategy = op.as_strategy()

            @given(case=strategy)
            @hsettings(
                max_examples=20,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def check(case):
                response = case.call_and_validate(
                    headers={"Authorization": f"Bearer {key}"},
                    checks=[
                        not_a_server_error,
                        status_code_conformance,
                        response_schema_conformance,
                    ],
                )
                statuses.setdefault(case.operation.label, set()).add(response.status_code)

            check()
        # Every operation was called, and some calls got past validation.
        assert set(statuses) == {
            "POST /api/v1/tasks",
            "GET /api/v1/tasks/{code}",
            "POST /api/v1/tasks/{code}/cancel",
            "GET /api/v1/tasks",
            "GET /api/v1/usage",
            "GET /api/v1/elements",
            "POST /api/v1/elements",
            "GET /api/v1/elements/{code}",
        }, statuses
        assert 200 in statuses["GET /api/v1/tasks"] and 400 in statuses["POST /api/v1/tasks"]
        assert 400 in statuses["POST /api/v1/elements"]

    def test_both_request_shapes_are_in_the_schema(self):
        schema = Client().get("/api/v1/openapi.json").json()
        for path, json_schema, form_schema in (
            ("/api/v1/tasks", "TaskIn", "TaskMultipartIn"),
            ("/api/v1/elements", "ElementIn", "ElementMultipartIn"),
        ):
            content = schema["paths"][path]["post"]["requestBody"]["content"]
            assert content["application/json"]["schema"]["$ref"].endswith(json_schema)
            assert content["multipart/form-data"]["schema"]["$ref"].endswith(form_schema)
        parts = schema["components"]["schemas"]["TaskMultipartIn"]["properties"]
        assert parts["image"]["format"] == "binary" and parts["sound_file"]["format"] == "binary"
        element_parts = schema["components"]["schemas"]["ElementMultipartIn"]["properties"]
        assert element_parts["refer_images"]["items"]["format"] == "binary"
