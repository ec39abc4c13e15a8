"""CSRF on every state-changing view, and no state change over GET.

- Every URL that accepts POST (``RULES`` of ``test_security_access``; a URL without a rule
  fails there) is POSTed by someone allowed to use it with a CSRF-enforcing client and no
  token, a wrong token, and (HTMX) no ``X-CSRFToken`` header: each answers Django's 403
  CSRF page and changes nothing. The callback receiver is an exception: csrf_exempt
  by design, authenticated by its signed token; so is ``/api/v1/`` (a bearer API key, the
  session never counts there).
- With the token the page carries (``hx-headers`` on ``<body>``) a POST goes through.
- Every URL is requested by GET (plain and HTMX) as an admin who is also staff, and as
  anonymous: no row of any table changes.
"""

from __future__ import annotations

import re

import pytest
from django.apps import apps
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse

from tasks_app.callbacks import callback_token_for
from tasks_app.models import Task
from tests.test_security_access import (
    HTMX,
    PUBLIC_LEVEL,
    RULES,
    STAFF,
    World,
    own_url,
    routes,
)
from tests.test_security_access import world as _world_fixture

CSRF_PAGE = "CSRF verification failed"
world = _world_fixture  # the access suite's fixture: both teams' objects


@pytest.fixture(autouse=True)
def isolated(settings, tmp_path, kling_settings):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.AXES_ENABLED = False


def everything() -> dict[str, list]:
    """Every row of every table (sessions aside), to compare before and after."""
    rows = {}
    for model in apps.get_models():
        if model is Session:
            continue
        rows[model._meta.label] = list(model._default_manager.order_by("pk").values())
    return rows


def changed_tables(before: dict, after: dict) -> list[str]:
    return [label for label in before if before[label] != after.get(label)]


def _poster(world: World, rule) -> object | None:
    """Someone the rule lets POST (None: anonymous, for public URLs)."""
    level = rule.write or rule.read
    if level == PUBLIC_LEVEL:
        return None
    if level == STAFF:
        return world.staff
    return world.portal.owner


def _post_urls(world: World) -> list[tuple[str, str, object]]:
    out = []
    for route in routes():
        rule = RULES[route.name]
        if "POST" not in rule.methods or route.name == "tasks-callback":
            continue
        if route.route.startswith("api/v1/"):
            continue  # bearer keys only, never the session: no CSRF (tests/test_api.py)
        out.append((route.name, own_url(route, world), _poster(world, rule)))
    return out


def test_every_post_without_a_csrf_token_is_refused(world):
    urls = _post_urls(world)
    assert len(urls) >= 25
    clients = {}
    for user in {user for _, _, user in urls}:
        clients[user] = Client(enforce_csrf_checks=True)
        if user is not None:
            clients[user].force_login(user)  # before the snapshot: it stamps last_login
    before = everything()
    failures = []
    for name, url, user in urls:
        client = clients[user]
        attempts = [
            ("no token", {}, {}),
            ("HTMX, no header", {}, HTMX),
            ("wrong token", {"csrfmiddlewaretoken": "x" * 64}, {}),
            ("HTMX, wrong header", {}, {**HTMX, "HTTP_X_CSRFTOKEN": "y" * 64}),
        ]
        for label, data, extra in attempts:
            response = client.post(url, data, **extra)
            if response.status_code != 403 or CSRF_PAGE not in response.content.decode():
                failures.append(f"{name} {url} ({label}): {response.status_code}")
    assert not failures, "POST without a valid CSRF token was not refused:\n" + "\n".join(failures)
    assert changed_tables(before, everything()) == []


def test_the_pages_token_lets_a_post_through(world):
    """Positive control: the token in ``hx-headers`` is accepted (HTMX) and as a field."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.portal.admin)
    team = world.portal.team
    page = client.get(reverse("tasks-budgets", kwargs={"team": team.code})).content.decode()
    token = re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)
    url = reverse("tasks-budgets", kwargs={"team": team.code})
    data = {"period": "monthly", "units": "5"}
    assert client.post(url, data, **HTMX, HTTP_X_CSRFTOKEN=token).status_code == 200
    assert client.post(url, {**data, "csrfmiddlewaretoken": token}).status_code == 302


def test_callback_receiver_is_csrf_exempt_and_needs_its_token(world):
    client = Client(enforce_csrf_checks=True)
    task = Task.objects.filter(team=world.portal.team).first()
    good = reverse("tasks-callback", kwargs={"token": callback_token_for(task)})
    bad = reverse("tasks-callback", kwargs={"token": f"{task.code}:forged"})
    assert client.post(bad, "{}", content_type="application/json").status_code == 404
    # No CSRF refusal: the answer is the receiver's own (400: not a task object).
    assert client.post(good, "{}", content_type="application/json").status_code == 400


def test_no_get_changes_anything(world):
    portal = world.portal
    portal.admin.is_staff = True
    portal.admin.save(update_fields=["is_staff"])
    signed_in = Client(raise_request_exception=False)
    signed_in.force_login(portal.admin)
    anonymous = Client(raise_request_exception=False)
    before = everything()
    failures = []
    for route in routes():
        rule = RULES[route.name]
        url = own_url(route, world)
        for client in (signed_in, anonymous):
            for extra in ({}, HTMX):
                response = client.get(url, **extra)
                if response.status_code >= 500:
                    failures.append(f"GET {url} [{route.name}]: {response.status_code}")
                now = everything()
                changed = changed_tables(before, now)
                if changed:
                    failures.append(f"GET {url} [{route.name}] changed {changed}")
                    before = now
        assert rule is not None
    assert not failures, "\n".join(failures)
