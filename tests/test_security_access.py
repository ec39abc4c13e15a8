"""Access rules of every URL, for every role, and another team's codes in every parameter.

Extends the access walker (``tests/test_access_walker.py``, which requests every URL with
another team's codes in the path):

- ``test_every_url_answers_each_role_as_the_rules_say``: every URL pattern of the project
  has an entry in ``RULES`` (methods, least role to read, least role to write); each URL of
  the requester's own team is requested by GET and POST, plain and HTMX, as anonymous,
  an outsider, a viewer, a member, an admin, the owner and a staff user, and must answer
  what its rule says: anonymous → the login page; wrong method → 405; outsider → 404;
  a role too weak → 403; staff pages → 404 for non-staff; otherwise a page (not 403/404/405,
  not 5xx). A URL added without a rule fails the test.
- ``test_mixed_codes_in_the_path_are_404``: one identifier of the other team among the
  requester's own in the path (own task + other team's media, ...) is 404 everywhere.
- ``test_other_teams_codes_in_query_and_form_fields_reveal_and_touch_nothing``: every GET
  and POST URL of the own team, plain and HTMX, with the other team's codes in every
  parameter name the portal reads (``from``, ``video_id``, ``element``, ``*_stored``,
  ``creator``, ``member``, ``team``, ``q``…): no page shows the other team's data, nothing
  of the other team changes, no task of the own team refers to the other team's objects.
- Targeted cases with clear failure messages: "run again" ``?from=``, the video-extend
  picker and pasted ``video_id``, the element prefill, earlier-upload names (with ``..``),
  list filters, the budget member, ``tasks-input`` path tricks.
POSTs that the rules allow run inside a transaction that is rolled back, so each request
sees the same data; calls to Kling from views go to the loopback sandbox.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlencode, urlparse

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client
from django.urls import get_resolver, reverse

from klingweb.accounts.models import ROLE_RANK, KlingAccount, Membership, Role
from tasks_app.families import registry
from tasks_app.models import Budget, Status, Task, TaskMedia
from tasks_app.uploads import upload_save
from tests.conftest import make_user
from tests.test_access_walker import (
    Route,
    _body,
    iter_routes,
    make_cast,
    snapshot,
    urls_for,
)
from tests.test_tasks_forms import png_upload

HTMX = {"HTTP_HX_REQUEST": "true"}

PUBLIC_LEVEL = "public"  # no sign-in needed
LOGIN = "login"  # any signed-in user, no team
STAFF = "staff"  # is_staff; everybody else 404


@dataclass(frozen=True)
class Rule:
    """What a URL accepts: ``methods``; least level to GET (``read``) and to POST
    (``write``): a ``Role`` (team-scoped), ``LOGIN``, ``STAFF`` or ``PUBLIC_LEVEL``.
    ``missing_ok``: the object the walker fills in may have no file, so a permitted
    request may still be 404."""

    methods: tuple[str, ...]
    read: str
    write: str | None = None
    missing_ok: bool = False


V, M, A = Role.VIEWER, Role.MEMBER, Role.ADMIN
G, P, GP = ("GET",), ("POST",), ("GET", "POST")

#: Every URL name of the project (Django admin and static files aside) and its rule.
RULES: dict[str, Rule] = {
    "home": Rule(G, LOGIN),
    # accounts: public by design, then login-only, then team settings
    "favicon": Rule(G, PUBLIC_LEVEL),
    "accounts-login": Rule(GP, PUBLIC_LEVEL, PUBLIC_LEVEL),
    "accounts-logout": Rule(P, PUBLIC_LEVEL, PUBLIC_LEVEL),
    "accounts-password-reset": Rule(GP, PUBLIC_LEVEL, PUBLIC_LEVEL),
    "accounts-password-reset-done": Rule(G, PUBLIC_LEVEL),
    "accounts-password-reset-confirm": Rule(GP, PUBLIC_LEVEL, PUBLIC_LEVEL),
    "accounts-password-reset-complete": Rule(G, PUBLIC_LEVEL),
    "accounts-invitation-accept": Rule(GP, PUBLIC_LEVEL, PUBLIC_LEVEL),
    "accounts-signup": Rule(GP, PUBLIC_LEVEL, PUBLIC_LEVEL),
    "accounts-password-change": Rule(GP, LOGIN, LOGIN),
    "accounts-password-change-done": Rule(G, LOGIN),
    "accounts-team-create": Rule(GP, LOGIN, LOGIN),
    "accounts-settings": Rule(G, V),
    "accounts-team-update": Rule(P, A, A),
    "accounts-leave": Rule(P, V, V),
    "accounts-member-role": Rule(P, A, A),
    "accounts-member-remove": Rule(P, A, A),
    "accounts-invitation-create": Rule(P, A, A),
    "accounts-invitation-revoke": Rule(P, A, A),
    "accounts-kling-create": Rule(GP, A, A),
    "accounts-kling-use-default": Rule(P, A, A),
    "accounts-kling-detail": Rule(GP, A, A),
    "accounts-kling-use": Rule(P, A, A),
    "accounts-kling-test": Rule(P, A, A),
    "accounts-kling-unpause": Rule(P, A, A),
    # a vendor call's status partial: admins, and the member who started the call (the
    # walker's call was started by the owner, so members and viewers get 403)
    "accounts-call-status": Rule(G, A),
    # tasks
    "tasks-list": Rule(G, V),
    "tasks-mine": Rule(G, V),
    "tasks-new": Rule(G, M),
    "tasks-create": Rule(GP, M, M),
    "tasks-estimate": Rule(G, V),  # the vendor's price list for the form's options
    "tasks-detail": Rule(G, V),
    "tasks-row": Rule(G, V),
    # Members cancel their own tasks only; the walker's task is the owner's (own cast).
    "tasks-cancel": Rule(P, A, A),
    # Ending a stale task by hand (lost at vendor): admins and owners only.
    "tasks-end": Rule(P, A, A),
    "tasks-json": Rule(G, V),
    "tasks-live": Rule(G, V),
    "tasks-mine-live": Rule(G, V),
    "tasks-media-file": Rule(G, V, missing_ok=True),
    "tasks-media-zip": Rule(G, V, missing_ok=True),
    "tasks-input": Rule(G, V),
    "tasks-callback": Rule(P, PUBLIC_LEVEL, PUBLIC_LEVEL),  # the token is the key
    "tasks-kling-input": Rule(G, PUBLIC_LEVEL),  # the signed token is the key (Kling fetches)
    # budgets and operations pages
    "tasks-budgets": Rule(GP, V, A),
    "tasks-budget-delete": Rule(P, A, A),
    "tasks-reconciliation": Rule(G, STAFF),
    "tasks-reconciliation-resolve": Rule(P, STAFF, STAFF),
    "tasks-stale": Rule(G, STAFF),
    # usage
    "usage-team": Rule(G, V),
    "usage-team-export": Rule(G, V),
    "usage-mine": Rule(G, LOGIN),
    "usage-mine-export": Rule(G, LOGIN),
    "usage-company": Rule(G, STAFF),
    "usage-company-export": Rule(G, STAFF),
    # elements
    "elements-list": Rule(G, V),
    "elements-live": Rule(G, V),
    "elements-create": Rule(GP, M, M),
    "elements-import": Rule(GP, A, A),
    "elements-presets": Rule(G, V),
    "elements-presets-sync": Rule(P, A, A),
    "elements-detail": Rule(G, V),
    "elements-card": Rule(G, V),
    "elements-file": Rule(G, V, missing_ok=True),
    # members may delete the elements they created (the walker's element is the member's)
    "elements-delete": Rule(GP, M, M),
    # API keys (team settings), and the API itself: its callers carry a team API key, not
    # a session, so for this table it is public; tests/test_api.py and the access walker's
    # bearer walk check the key's team and scope.
    "api-keys": Rule(GP, A, A),
    "api-key-revoke": Rule(P, A, A),
    "api-webhooks": Rule(GP, A, A),
    "api-webhook-test": Rule(P, A, A),
    "api-webhook-rotate": Rule(P, A, A),
    "api-webhook-delete": Rule(P, A, A),
    "api-media": Rule(G, PUBLIC_LEVEL),  # the signed, expiring token is the key
    "api-root": Rule(G, PUBLIC_LEVEL),
    "openapi-json": Rule(G, PUBLIC_LEVEL),
    "openapi-view": Rule(G, PUBLIC_LEVEL),
    "api-tasks-create": Rule(GP, PUBLIC_LEVEL, PUBLIC_LEVEL),
    "api-tasks-list": Rule(GP, PUBLIC_LEVEL, PUBLIC_LEVEL),
    "api-tasks-detail": Rule(G, PUBLIC_LEVEL),
    "api-tasks-cancel": Rule(P, PUBLIC_LEVEL),
    "api-usage": Rule(G, PUBLIC_LEVEL),
    "api-elements-list": Rule(G, PUBLIC_LEVEL),
    "api-elements-create": Rule(GP, PUBLIC_LEVEL, PUBLIC_LEVEL),
    "api-elements-detail": Rule(G, PUBLIC_LEVEL),
}

#: Marks of the other team's data: none may show on any page of the requester.
RED = {
    "prompt": "RED-PROMPT-7f3a9",
    "summary": "RED-SUMMARY-7f3a9",
    "video": "RED-VIDEO-7f3a9",
    "element": "RED-ELEM-7f3a9",
}


@pytest.fixture(autouse=True)
def isolated(settings, tmp_path, kling_settings):
    """Uploads in a temporary MEDIA_ROOT; the operator account on the loopback sandbox."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.AXES_ENABLED = False


@dataclass
class World:
    """Both teams' objects, the own team's URL per route, and the other team's codes."""

    portal: object
    own: object  # Cast of portal.team
    other: object  # Cast of portal.other_team
    staff: object
    own_upload: str  # storage name of an upload of portal.team
    red_upload: str  # storage name of an upload of portal.other_team
    red_task: Task
    red_element: object
    red_media: TaskMedia


def _to_sandbox(sandbox) -> None:
    """Every stored Kling account talks to the loopback sandbox, never the internet."""
    KlingAccount.objects.filter(is_operator_default=False).update(
        region="custom", custom_base_url=sandbox.base_url
    )
    for account in KlingAccount.objects.all():
        account.refresh_from_db()
        host = urlparse(account.base_url).hostname if account.base_url else "127.0.0.1"
        assert host == "127.0.0.1", account.base_url


@pytest.fixture
def world(portal, fresh_sandbox) -> World:
    red_upload = upload_save(team=portal.other_team, file=png_upload(), kind="image")
    own_upload = upload_save(team=portal.team, file=png_upload(), kind="image")
    red_task = Task.objects.create(
        team=portal.other_team,
        creator=portal.outsider,
        family="text2video",
        status=Status.SUCCEED,
        prompt=RED["prompt"],
        summary=RED["summary"],
        task_id="red-task-1",
        params={"prompt": RED["prompt"], "image": {"$file": red_upload}},
        result={
            "videos": [{"id": RED["video"], "url": "https://cdn.example/red.mp4", "duration": "5"}]
        },
    )
    red_media = TaskMedia.objects.create(
        task=red_task, kind="video", index=0, variant="url", source_url="https://cdn.example/r"
    )
    other = make_cast(portal.other_team, portal.outsider)
    own = make_cast(portal.team, portal.owner)
    Element = _element_model()
    red_element = Element.objects.filter(team=portal.other_team).first()
    Element.objects.filter(pk=red_element.pk).update(name=RED["element"][:20])
    # The walker's own element is the member's, so "creator may delete" is exercised.
    Element.objects.filter(team=portal.team).update(creator=portal.member)
    _to_sandbox(fresh_sandbox)
    staff = make_user("staffer", is_staff=True)
    return World(
        portal=portal,
        own=own,
        other=other,
        staff=staff,
        own_upload=own_upload,
        red_upload=red_upload,
        red_task=red_task,
        red_element=red_element,
        red_media=red_media,
    )


def _element_model():
    from elements_app.models import Element

    return Element


def routes() -> list[Route]:
    return [r for r in iter_routes(get_resolver().url_patterns) if isinstance(r, Route)]


def own_url(route: Route, world: World) -> str:
    """The URL of ``route`` for the requester's own team (real objects of that team)."""
    if route.name == "tasks-input":
        rest = world.own_upload.split("/", 2)[2]  # after uploads/<team code>/
        return reverse("tasks-input", kwargs={"team": world.own.target.code, "name": rest})
    return urls_for(route, world.own)[0]


@contextmanager
def rolled_back():
    """Run a request and throw its database changes away."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


# --- Every URL, every role ------------------------------------------------------------------


def _level_ok(user, level: str, world: World) -> bool | None:
    """Whether ``user`` (None = anonymous) passes ``level``; None when the answer is the
    login page."""
    if level == PUBLIC_LEVEL:
        return True
    if user is None:
        return None
    if level == LOGIN:
        return True
    if level == STAFF:
        return bool(user.is_staff)
    membership = Membership.objects.filter(team=world.own.target, user=user).first()
    if membership is None:
        return False
    return ROLE_RANK[membership.role] >= ROLE_RANK[level]


def expected(rule: Rule, method: str, user, world: World) -> str:
    """``login`` | ``405`` | ``404`` | ``403`` | ``ok`` for one request."""
    level = rule.read if method == "GET" else (rule.write or rule.read)
    if rule.read != PUBLIC_LEVEL and user is None:
        return "login"
    if method not in rule.methods:
        return "405"
    passed = _level_ok(user, level, world)
    if passed is None:
        return "login"
    if passed:
        return "ok"
    if level == STAFF:
        return "404"
    is_member = Membership.objects.filter(team=world.own.target, user=user).exists()
    return "403" if is_member else "404"


def verdict(response, want: str, rule: Rule) -> str | None:
    status = response.status_code
    if want == "login":
        location = urlparse(response.get("Location", "")).path
        if status == 302 and location in (reverse("accounts-login"), "/admin/login/"):
            return None
        return f"wanted the login page, got {status} {location}"
    if want in ("403", "404", "405"):
        return None if str(status) == want else f"wanted {want}, got {status}"
    if status >= 500 or status in (401, 403, 405):
        return f"wanted a page, got {status}"
    if status == 404 and not rule.missing_ok:
        return "wanted a page, got 404"
    if status in (301, 302) and urlparse(response["Location"]).path == reverse("accounts-login"):
        return "wanted a page, got the login redirect"
    return None


def test_every_url_answers_each_role_as_the_rules_say(world):
    portal = world.portal
    all_routes = routes()
    missing = sorted({r.name or r.route for r in all_routes} - set(RULES))
    assert not missing, f"URLs without an access rule in RULES (add them): {missing}"
    cast = {
        "anonymous": None,
        "outsider": portal.outsider,
        "viewer": portal.viewer,
        "member": portal.member,
        "admin": portal.admin,
        "owner": portal.owner,
        "staff": world.staff,
    }
    failures: list[str] = []
    checked = 0
    for who, user in cast.items():
        client = Client(raise_request_exception=False)
        if user is not None:
            client.force_login(user)
        for route in all_routes:
            rule = RULES[route.name]
            if rule.read == PUBLIC_LEVEL:
                continue  # public by design; the CSRF and callback suites cover them
            url = own_url(route, world)
            for method in ("GET", "POST"):
                want = expected(rule, method, user, world)
                for extra in ({}, HTMX):
                    with rolled_back():
                        response = client.generic(method, url, **extra)
                    checked += 1
                    problem = verdict(response, want, rule)
                    if problem:
                        tag = " (HTMX)" if extra else ""
                        failures.append(f"{who} {method}{tag} {url} [{route.name}]: {problem}")
    assert not failures, "Access rules not kept:\n" + "\n".join(failures)
    assert checked > 500


def test_rules_table_matches_the_views_on_record(world):
    """The table is not vacuous: spot checks of roles the issue names."""
    portal = world.portal
    settings_url = reverse("accounts-settings", kwargs={"team": portal.team.code})
    viewer = Client()
    viewer.force_login(portal.viewer)
    assert viewer.get(settings_url).status_code == 200
    assert viewer.post(reverse("tasks-budgets", kwargs={"team": portal.team.code})).status_code == (
        403
    )
    assert viewer.get(reverse("tasks-new", kwargs={"team": portal.team.code})).status_code == 403
    outsider = Client()
    outsider.force_login(portal.outsider)
    assert outsider.get(settings_url).status_code == 404
    assert Client().get(settings_url).status_code == 302


def test_django_admin_is_for_staff_only(world):
    portal = world.portal
    account = KlingAccount.objects.filter(team=portal.team).first()
    url = reverse("admin:accounts_klingaccount_change", args=[account.pk])
    for user in (portal.owner, portal.outsider):
        client = Client()
        client.force_login(user)
        response = client.get(url)
        assert response.status_code == 302
        assert urlparse(response["Location"]).path == "/admin/login/"


# --- Another team's codes in the path, mixed with the own team's -----------------------------


def test_mixed_codes_in_the_path_are_404(world):
    """Each UUID of a path in turn replaced by the other team's object of the same kind."""
    client = Client(raise_request_exception=False)
    client.force_login(world.portal.owner)
    failures: list[str] = []
    mixed = 0
    for route in routes():
        kwargs_ = [k for k in route.uuid_kwargs if k != "team"]
        if not kwargs_ or RULES[route.name].read in (PUBLIC_LEVEL, STAFF):
            continue
        own = dict(zip(route.converters, _values(route, world.own), strict=False))
        red = dict(zip(route.converters, _values(route, world.other), strict=False))
        if route.name == "tasks-media-file":
            red["media"] = str(world.red_media.code)
        for kwarg in kwargs_:
            values = {**own, kwarg: red[kwarg]}
            url = reverse(route.name, kwargs=values)
            for method in ("GET", "POST"):
                for extra in ({}, HTMX):
                    with rolled_back():
                        response = client.generic(method, url, **extra)
                    mixed += 1
                    if response.status_code not in (404, 405):
                        failures.append(
                            f"{method} {url} [{route.name}, {kwarg} of the other team]: "
                            f"{response.status_code}"
                        )
    assert not failures, "\n".join(failures)
    assert mixed >= 20


def _values(route: Route, cast) -> list[str]:
    """The values ``urls_for`` fills in, in the order of the route's converters."""
    from tests.test_access_walker import uuid_candidates, value_for

    values = []
    for kwarg, converter in route.converters.items():
        if kwarg in route.uuid_kwargs:
            values.append(str(uuid_candidates(route, kwarg, cast)[0]))
        else:
            values.append(value_for(kwarg, converter))
    return values


# --- Another team's codes in every query parameter and form field -----------------------------


def red_params(world: World) -> dict[str, str]:
    """Every parameter name the portal reads, filled with the other team's identifiers."""
    red = world.red_task
    other = world.other.target
    outsider = world.portal.outsider
    membership = Membership.objects.filter(team=other).first()
    values = {
        "from": str(red.code),
        "code": str(red.code),
        "task": str(red.code),
        "video_id": RED["video"],
        "source_video": RED["video"],
        "element": str(world.red_element.code),
        "frontal_image_url": "https://cdn.example/red-frontal.png",
        "team": str(other.code),
        "member": outsider.get_username(),
        "creator": str(outsider.pk),
        "user": str(outsider.pk),
        "account": str(KlingAccount.objects.filter(team=other).first().code),
        "invitation": str(uuid.uuid4()),
        "media": str(world.red_media.code),
        "q": str(red.code),
        "name": world.red_upload,
        "role": Role.MEMBER,
        "membership": str(membership.code),
    }
    for family in registry().values():
        for field in family.get_form_class().base_fields:
            if field.endswith("_stored"):
                values[field] = world.red_upload
        form_class = family.get_form_class()
        for spec in getattr(form_class, "inputs", ()):
            values[f"{spec.name}_stored"] = world.red_upload
    return values


def red_markers(world: World) -> list[str]:
    """What only the other team's pages may show (never values the requester sends)."""
    return [
        world.other.target.name,
        RED["prompt"],
        RED["summary"],
        RED["element"][:20],
        world.portal.outsider.email,
    ]


def red_state(world: World) -> list:
    other = snapshot(world.other)
    return [other, list(Task.objects.filter(team=world.other.target).values())]


def own_tasks_touching_red(world: World) -> list[str]:
    """Tasks of the own team whose params name the other team's video or upload."""
    found = []
    for task in Task.objects.filter(team=world.own.target):
        text = str(task.params)
        if RED["video"] in text or world.red_upload in text or str(world.red_task.code) in text:
            found.append(f"{task.family} {task.params}")
    return found


def test_other_teams_codes_in_query_and_form_fields_reveal_and_touch_nothing(world):
    client = Client(raise_request_exception=False)
    client.force_login(world.portal.owner)
    params = red_params(world)
    markers = red_markers(world)
    before = red_state(world)
    failures: list[str] = []
    for route in routes():
        rule = RULES[route.name]
        if rule.read in (PUBLIC_LEVEL, STAFF):
            continue
        base = own_url(route, world)
        for family in _families_for(route):
            url = (
                base
                if family is None
                else reverse(
                    "tasks-create", kwargs={"team": world.own.target.code, "family": family}
                )
            )
            for method in rule.methods:
                for extra in ({}, HTMX):
                    with rolled_back():
                        if method == "GET":
                            response = client.get(f"{url}?{urlencode(params)}", **extra)
                        else:
                            response = client.post(url, params, **extra)
                        touched = own_tasks_touching_red(world)
                        changed = red_state(world) != before
                    tag = f"{method}{' (HTMX)' if extra else ''} {url} [{route.name}]"
                    if response.status_code >= 500:
                        failures.append(f"{tag}: {response.status_code}")
                    body = _body(response)
                    shown = [m for m in markers if m and m in body]
                    if shown:
                        failures.append(f"{tag}: shows the other team's {shown}")
                    if touched:
                        failures.append(f"{tag}: queued a task on the other team's {touched}")
                    if changed:
                        failures.append(f"{tag}: changed the other team's data")
    assert not failures, "\n".join(failures)


def _families_for(route: Route) -> list[str | None]:
    """``tasks-create`` is walked once per family; other routes once."""
    if route.name == "tasks-create":
        return list(registry())
    return [None]


# --- Targeted cases ---------------------------------------------------------------------------


def _create_url(world: World, family: str) -> str:
    return reverse("tasks-create", kwargs={"team": world.own.target.code, "family": family})


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_run_again_from_another_teams_task_prefills_nothing(world, htmx):
    client = Client()
    client.force_login(world.portal.member)
    extra = HTMX if htmx else {}
    response = client.get(f"{_create_url(world, 'text2video')}?from={world.red_task.code}", **extra)
    assert response.status_code == 200
    body = response.content.decode()
    assert RED["prompt"] not in body
    assert response.context["source"] is None
    assert world.red_upload not in body


def test_video_extend_refuses_another_teams_video(world):
    client = Client()
    client.force_login(world.portal.member)
    url = _create_url(world, "video_extend")
    common = {"prompt": "go on", "negative_prompt": "", "cfg_scale": "0.5"}
    # The picker offers only the own team's videos...
    page = client.get(f"{url}?video_id={RED['video']}").content.decode()
    assert f'<option value="{RED["video"]}"' not in page
    # ...so the other team's id is refused in the picker and when pasted.
    for data in ({"source_video": RED["video"]}, {"video_id": RED["video"]}):
        for extra in ({}, HTMX):
            response = client.post(url, {**common, **data}, **extra)
            assert response.status_code == 200, data
            assert response.context["form"].errors, data
    assert not Task.objects.filter(team=world.portal.team, family="video_extend").exists()


@pytest.mark.parametrize(
    "stored",
    [
        "{red}",
        "uploads/{own}/../{other}/{rest}",
        "uploads/{own}/image/../../{other}/{rest}",
        "/{red}",
        "../../etc/passwd",
    ],
)
def test_earlier_upload_of_another_team_is_refused(world, stored):
    client = Client()
    client.force_login(world.portal.member)
    rest = world.red_upload.split("/", 2)[2]
    value = stored.format(
        red=world.red_upload, own=world.own.target.code, other=world.other.target.code, rest=rest
    )
    before = Task.objects.filter(team=world.portal.team).count()
    response = client.post(_create_url(world, "multi_shot"), {"frontal_image_stored": value})
    assert response.status_code == 200
    assert "earlier upload is gone" in str(response.context["form"].errors)
    assert Task.objects.filter(team=world.portal.team).count() == before


def test_element_prefill_of_another_teams_element_shows_nothing(world):
    client = Client()
    client.force_login(world.portal.member)
    query = urlencode(
        {"frontal_image_url": "https://cdn.example/x.png", "element": world.red_element.code}
    )
    body = client.get(f"{_create_url(world, 'multi_shot')}?{query}").content.decode()
    assert RED["element"][:20] not in body


@pytest.mark.parametrize(
    "route,query",
    [
        ("tasks-list", {"creator": "{outsider_pk}"}),
        ("tasks-list", {"q": "{red_code}"}),
        ("tasks-list", {"q": RED["prompt"]}),
        ("tasks-mine", {"q": RED["prompt"]}),
        ("elements-list", {"q": RED["element"][:20], "deleted": "1"}),
        ("usage-team", {"member": "outsider"}),
    ],
)
def test_filters_never_reach_another_team(world, route, query):
    client = Client()
    client.force_login(world.portal.owner)
    values = {
        k: v.format(outsider_pk=world.portal.outsider.pk, red_code=world.red_task.code)
        for k, v in query.items()
    }
    url = reverse(route, kwargs={"team": world.portal.team.code})
    for extra in ({}, HTMX):
        response = client.get(f"{url}?{urlencode(values)}", **extra)
        assert response.status_code == 200
        body = response.content.decode()
        for marker in (RED["prompt"], RED["summary"], world.portal.outsider.email):
            if marker not in values.values():  # the search box shows what was typed
                assert marker not in body, (route, query, marker)
        if "q" in values and route.startswith("tasks") and not extra:
            assert list(response.context["tasks"]) == [], (route, query)


def test_my_usage_of_another_teams_code_shows_no_team_data(world):
    client = Client()
    client.force_login(world.portal.owner)
    response = client.get(f"{reverse('usage-mine')}?team={world.other.target.code}")
    assert response.status_code == 200
    assert world.other.target.name not in response.content.decode()


def test_budget_for_a_member_of_another_team_is_refused(world):
    client = Client()
    client.force_login(world.portal.admin)
    url = reverse("tasks-budgets", kwargs={"team": world.portal.team.code})
    data = {"period": "monthly", "units": "10", "member": str(world.portal.outsider.pk)}
    for extra in ({}, HTMX):
        response = client.post(url, data, **extra)
        assert response.status_code == 422
    assert not Budget.objects.filter(team=world.portal.team, member=world.portal.outsider).exists()


@pytest.mark.parametrize(
    "name",
    [
        "../{other}/{rest}",
        "..%2F{other}%2F{rest}",
        "image/../../{other}/{rest}",
        "%2e%2e/{other}/{rest}",
        "/uploads/{other}/{rest}",
    ],
)
def test_uploaded_input_of_another_team_is_404(world, name):
    client = Client()
    client.force_login(world.portal.owner)
    rest = world.red_upload.split("/", 2)[2]
    tail = name.format(other=world.other.target.code, rest=rest)
    url = f"/t/{world.portal.team.code}/uploads/{tail}"
    assert client.get(url).status_code == 404
    # The same file of the own team is served (the URL shape is right).
    own_rest = world.own_upload.split("/", 2)[2]
    assert client.get(f"/t/{world.portal.team.code}/uploads/{own_rest}").status_code == 200


def test_outsider_user_model_is_untouched(world):
    """Nothing above changed who is in which team."""
    assert Membership.objects.filter(user=world.portal.outsider).count() == 1
    assert get_user_model().objects.filter(pk=world.portal.outsider.pk).exists()
