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
