"""Finish list of issue 14 item 11 (the parts on the live-pages branch): a favicon."""

from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_favicon_ico_is_never_a_404(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    location = response["Location"]
    assert location.endswith("/img/favicon.ico")
    path = finders.find("img/favicon.ico")
    assert path is not None
    with open(path, "rb") as handle:
        assert handle.read(4) == b"\x00\x00\x01\x00"  # an ICO file
    assert client.post("/favicon.ico").status_code == 405


def test_every_page_names_its_icon(client, portal):
    pages = [client.get(reverse("accounts-login"))]
    client.force_login(portal.member)
    pages.append(client.get(reverse("tasks-list", kwargs={"team": portal.team.code})))
    for page in pages:
        assert page.status_code == 200
        body = page.content.decode()
        assert 'rel="icon"' in body and "img/favicon.svg" in body
    assert finders.find("img/favicon.svg") is not None


# -- error pages: styled, in words, with the way back ------------------------------------


def test_viewer_opening_a_create_form_gets_a_styled_403_with_the_way_back(client, portal):
    client.force_login(portal.viewer)
    url = reverse("tasks-create", kwargs={"team": portal.team.code, "family": "text2video"})
    response = client.get(url)
    assert response.status_code == 403
    body = response.content.decode()
    assert "You cannot do this here" in body
    assert "Your role in this team does not allow this." in body
    assert "css/app.css" in body and 'class="topbar"' in body
    assert f'href="{reverse("home")}" data-back>Back</a>' in body
    assert "Your tasks</a>" in body


def test_outsider_gets_a_styled_404_that_reveals_nothing(client, portal):
    client.force_login(portal.outsider)
    response = client.get(reverse("tasks-list", kwargs={"team": portal.team.code}))
    assert response.status_code == 404
    body = response.content.decode()
    assert "This page does not exist" in body and "css/app.css" in body
    assert portal.team.name not in body and "No such team" not in body
    assert f'href="{reverse("home")}"' in body


def test_anonymous_404_offers_sign_in(client):
    body = client.get("/no/such/page/").content.decode()
    assert "This page does not exist" in body
    assert f'href="{reverse("accounts-login")}"' in body


def test_server_error_page_is_styled_and_needs_no_database(rf):
    from django.views.defaults import server_error

    response = server_error(rf.get("/t/x/"))
    assert response.status_code == 500
    body = response.content.decode()
    assert "Something went wrong on our side" in body
    assert "css/app.css" in body and 'href="/"' in body


# -- human labels: results counted from 1 ------------------------------------------------


def test_task_page_names_results_from_one(client, portal):
    from django.utils import timezone

    from tasks_app.models import Status, Task

    shots = Task.objects.create(
        team=portal.team,
        creator=portal.member,
        family="multi_shot",
        status=Status.SUCCEED,
        finished_at=timezone.now(),
        result={
            "images": [
                {
                    "index": 0,
                    "url_1": "https://cdn.example/a.png",
                    "url_2": "https://cdn.example/b.png",
                }
            ]
        },
    )
    video = Task.objects.create(
        team=portal.team,
        creator=portal.member,
        family="text2video",
        status=Status.SUCCEED,
        finished_at=timezone.now(),
        result={"videos": [{"id": "v1", "url": "https://cdn.example/v.mp4", "duration": "5"}]},
    )
    client.force_login(portal.member)
    page = client.get(
        reverse("tasks-detail", kwargs={"team": portal.team.code, "code": shots.code})
    )
    body = page.content.decode()
    assert "Image 1 · view 1" in body and "Image 1 · view 2" in body
    assert "Image 0" not in body and "· url_1" not in body
    page = client.get(
        reverse("tasks-detail", kwargs={"team": portal.team.code, "code": video.code})
    )
    body = page.content.decode()
    assert "Video 1" in body and "Video 0" not in body
