"""Walk every URL pattern of the project with another team's identifiers.

A member of ``team`` (its owner, so role checks cannot hide a missing team check) requests
every URL with ``other_team``'s code and the codes of ``other_team``'s objects, by GET and
POST, with and without HTMX. Any 2xx, any 5xx, or a redirect anywhere but the login page
fails, and so does any response (of any URL) that shows the other team's name, code or
people. Patterns added later are walked too: a view added without an access check fails
this suite.

How identifiers are filled:
- ``<uuid:team>`` → the other team's code;
- another ``<uuid:...>`` → the ``code`` of an object of the other team, found through
  ``KWARG_MODELS`` (kwarg name → model), ``CODE_BY_URL_PREFIX`` (for the ambiguous
  ``code``: URL-name prefix → model), a model named like the kwarg, or, failing those, every
  team-owned model with a UUID ``code`` in turn. Objects are made for every such model by a
  small generic factory, so models added later are covered; if none can be made, a fresh
  UUID is used;
- other kwargs get a valid-looking value (``NON_UUID_VALUES``, else by converter).
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from decimal import Decimal
from urllib.parse import urlparse

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import models, transaction
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, include, path, reverse
from django.urls.converters import IntConverter, PathConverter, SlugConverter, UUIDConverter
from django.urls.resolvers import RegexPattern, RoutePattern
from django.utils import timezone

from klingweb.accounts import services
from klingweb.accounts.access import team_for_user
from klingweb.accounts.models import Invitation, KlingAccount, Membership, Role, Team

#: Public by design (no team, or a token is the key). Keep this list explicit and small.
PUBLIC = frozenset(
    {
        "accounts-login",
        "accounts-logout",
        "accounts-password-reset",
        "accounts-password-reset-done",
        "accounts-password-reset-confirm",
        "accounts-password-reset-complete",
        "accounts-invitation-accept",
        "accounts-signup",
        "tasks-callback",
        "tasks-kling-input",
        "favicon",
    }
)
#: Route prefixes not walked: Django's admin (staff only, its own checks), static files.
SKIPPED_PREFIXES = ("admin/", "static/", "media/")

#: kwarg name → (model label, field), when the name alone says what it points at.
KWARG_MODELS: dict[str, tuple[str, str]] = {
    "member": ("accounts.Membership", "code"),
    "invitation": ("accounts.Invitation", "code"),
    "account": ("accounts.KlingAccount", "code"),
    "media": ("tasks_app.TaskMedia", "code"),
    "call": ("accounts.VendorCall", "code"),
    "key": ("api.ApiKey", "code"),
    "endpoint": ("api.WebhookEndpoint", "code"),
}
#: For the ambiguous ``code`` kwarg: URL-name prefix → (model label, field); longest wins.
CODE_BY_URL_PREFIX: dict[str, tuple[str, str]] = {
    "tasks-budget": ("tasks_app.Budget", "code"),
    "tasks-reconciliation": ("tasks_app.ReconciliationIssue", "code"),
    "tasks-": ("tasks_app.Task", "code"),
    "elements-": ("elements_app.Element", "code"),
    "api-tasks-": ("tasks_app.Task", "code"),
    "api-elements-": ("elements_app.Element", "code"),
}
#: Values for kwargs that are not UUIDs (valid, so a view cannot 404 on them first).
NON_UUID_VALUES: dict[str, str] = {
    "family": "avatar",
    "table": "ledger",
    "which": "refer-1",
    "name": "walker.png",
}
#: The most combinations of object identifiers tried for one pattern.
MAX_COMBINATIONS = 12

_KWARG = re.compile(r"<(?:(?P<conv>[^>:]+):)?(?P<name>[^>]+)>")


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """A fast hasher: the default PBKDF2 makes each of the cast's five users cost ~0.7 s."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- Walking the URL patterns -------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One URL pattern with its full route (``t/<uuid:team>/...``) and converters."""

    route: str
    name: str | None
    converters: dict = field(hash=False, compare=False)

    @property
    def label(self) -> str:
        return f"{self.name or '(unnamed)'} /{self.route}"

    @property
    def uuid_kwargs(self) -> list[str]:
        return [k for k, c in self.converters.items() if isinstance(c, UUIDConverter)]


class UnsupportedPattern(Exception):
    """A regex pattern with groups: the walker cannot fill it (use ``path()``)."""


def _part(pattern) -> tuple[str, dict]:
    if isinstance(pattern, RoutePattern):
        return str(pattern), dict(pattern.converters)
    if isinstance(pattern, RegexPattern):
        regex = pattern._regex
        if re.compile(regex).groups:
            raise UnsupportedPattern(regex)
        literal = regex.lstrip("^").rstrip("$").replace("\\", "")
        if re.search(r"[.*+?()\[\]{}|]", literal):
            raise UnsupportedPattern(regex)
        return literal, {}
    return str(pattern), {}


def iter_routes(
    patterns: Iterable, prefix: str = "", converters: dict | None = None
) -> Iterator[Route | UnsupportedPattern]:
    """Every leaf pattern under ``patterns`` (recursively through includes)."""
    for entry in patterns:
        try:
            part, conv = _part(entry.pattern)
        except UnsupportedPattern as exc:
            yield UnsupportedPattern(f"{prefix}{exc}")
            continue
        route = prefix + part
        if route.startswith(SKIPPED_PREFIXES):
            continue
        merged = {**(converters or {}), **conv}
        if isinstance(entry, URLResolver):
            yield from iter_routes(entry.url_patterns, route, merged)
        elif isinstance(entry, URLPattern):
            yield Route(route=route, name=entry.name, converters=merged)


# --- The other team's objects -------------------------------------------------------------


def _team_path(model: type[models.Model]) -> str | None:
    """The lookup from ``model`` to its team (``team`` or ``<fk>__team``), or None."""
    names = {f.name: f for f in model._meta.concrete_fields}
    team_fk = names.get("team")
    if team_fk is not None and team_fk.is_relation and team_fk.related_model is Team:
        return "team"
    for f in model._meta.concrete_fields:
        if f.is_relation and f.many_to_one and f.related_model not in (Team, model):
            inner = {g.name: g for g in f.related_model._meta.concrete_fields}.get("team")
            if inner is not None and inner.is_relation and inner.related_model is Team:
                return f"{f.name}__team"
    return None


def team_owned_models() -> list[type[models.Model]]:
    """Models (other than Team) with a UUID ``code`` that belong to a team."""
    found = []
    for model in apps.get_models():
        if model is Team:
            continue
        code = {f.name: f for f in model._meta.concrete_fields}.get("code")
        if isinstance(code, models.UUIDField) and _team_path(model):
            found.append(model)
    return found


def _sample(f: models.Field):
    """A plausible value for a required field without a default."""
    if f.choices:
        return f.choices[0][0]
    samples = [
        (models.EmailField, "walker@example.com"),
        (models.URLField, "https://example.com/walker"),
        (models.UUIDField, uuid.uuid4()),
        (models.BooleanField, False),
        (models.DateTimeField, timezone.now()),
        (models.DateField, date.today()),
        (models.TimeField, time(0)),
        (models.DurationField, timedelta(seconds=1)),
        (models.DecimalField, Decimal("1")),
        (models.FloatField, 1.0),
        (models.IntegerField, 1),
        (models.JSONField, {}),
        (models.BinaryField, b""),
        (models.FileField, "walker.txt"),
    ]
    for kind, value in samples:
        if isinstance(f, kind):
            return value
    if isinstance(f, models.CharField | models.TextField):
        return "walker"[: f.max_length or 6]
    raise TypeError(f"no sample for {f!r}")


def make_instance(model: type[models.Model], team: Team, user, depth: int = 0):
    """An instance of ``model`` belonging to ``team`` (existing or made up), or None."""
    path_ = _team_path(model)
    if path_ is not None:
        existing = model._default_manager.filter(**{path_: team}).first()
        if existing is not None:
            return existing
    if depth > 2:
        return None
    values = {}
    for f in model._meta.concrete_fields:
        if f.primary_key or f.auto_created:
            continue
        if f.is_relation:
            rel = f.related_model
            if rel is Team:
                values[f.name] = team
            elif rel is get_user_model():
                values[f.name] = user
            elif not f.null:
                target = make_instance(rel, team, user, depth + 1)
                if target is None:
                    return None
                values[f.name] = target
            continue
        if f.has_default() or f.null or getattr(f, "auto_now", False):
            continue
        if getattr(f, "auto_now_add", False):
            continue
        if isinstance(f, models.CharField | models.TextField) and f.blank:
            continue
        try:
            values[f.name] = _sample(f)
        except TypeError:
            return None
    try:
        with transaction.atomic():
            return model._default_manager.create(**values)
    except Exception:  # a model the factory cannot satisfy: fall back to a fresh UUID
        return None


@dataclass
class Cast:
    """Whose URLs are requested (``target``) and the objects found or made for it."""

    target: Team
    objects: dict[type[models.Model], models.Model]


def make_cast(target: Team, owner) -> Cast:
    """Realistic accounts objects of ``target`` plus one of every other team-owned model."""
    actor = Membership.objects.get(team=target, user=owner)
    account = KlingAccount(team=target, name=f"{target.name} key", access_key="ak-walker")
    services.account_set_secret(account=account, secret_key="sk-walker-0000")
    account.save()
    services.invitation_create(
        team=target, email=f"invitee-{target.pk}@example.com", role=Role.MEMBER, actor=actor
    )
    objects = {}
    for model in team_owned_models():
        instance = make_instance(model, target, owner)
        if instance is not None:
            objects[model] = instance
    return Cast(target=target, objects=objects)


def _model(label: str) -> type[models.Model] | None:
    try:
        return apps.get_model(label)
    except LookupError:
        return None


def uuid_candidates(route: Route, kwarg: str, cast: Cast) -> list[uuid.UUID]:
    """Identifiers of the target team's objects to put in ``kwarg`` of ``route``."""
    if kwarg == "team":
        return [cast.target.code]
    spec = KWARG_MODELS.get(kwarg)
    if spec is None and kwarg == "code" and route.name:
        prefixes = [p for p in CODE_BY_URL_PREFIX if route.name.startswith(p)]
        if prefixes:
            spec = CODE_BY_URL_PREFIX[max(prefixes, key=len)]
    models_ = []
    if spec is not None and _model(spec[0]) is not None:
        models_ = [(_model(spec[0]), spec[1])]
    else:
        named = [m for m in cast.objects if m._meta.model_name == kwarg.replace("_", "")]
        models_ = [(m, "code") for m in (named or list(cast.objects))]
    values = [
        getattr(cast.objects[m], field_name)
        for m, field_name in models_
        if m in cast.objects and cast.objects[m] is not None
    ]
    return values or [uuid.uuid4()]


def value_for(kwarg: str, converter) -> str:
    """A valid-looking value for a non-UUID kwarg."""
    if kwarg in NON_UUID_VALUES:
        return NON_UUID_VALUES[kwarg]
    if isinstance(converter, IntConverter):
        return "1"
    if isinstance(converter, PathConverter):
        return "walker.png"
    if isinstance(converter, SlugConverter):
        return "walker"
    return "walker"


def urls_for(route: Route, cast: Cast) -> list[str]:
    """The concrete URLs to request for ``route`` (several when object kinds are unsure)."""
    choices: dict[str, list[str]] = {}
    for kwarg, converter in route.converters.items():
        if isinstance(converter, UUIDConverter):
            choices[kwarg] = [str(v) for v in uuid_candidates(route, kwarg, cast)]
        else:
            choices[kwarg] = [value_for(kwarg, converter)]
    names = list(choices)
    combos = itertools.islice(itertools.product(*(choices[n] for n in names)), MAX_COMBINATIONS)
    urls = []
    for combo in combos:
        values = dict(zip(names, combo, strict=True))
        urls.append("/" + _KWARG.sub(lambda m, v=values: v[m["name"]], route.route))
    return urls or ["/" + route.route]


# --- Checking the answers -----------------------------------------------------------------


def _body(response: HttpResponse) -> str:
    if getattr(response, "streaming", False):
        # The test client closes the response when the iterator ends, without the
        # request_finished signal that would close the test database connection.
        content = b"".join(response.streaming_content)
    else:
        content = response.content
    return content.decode("utf-8", "replace")


def leak_markers(cast: Cast) -> list[str]:
    """Strings that only the target team's pages may show."""
    owners = Membership.objects.filter(team=cast.target).select_related("user")
    return [cast.target.name, str(cast.target.code)] + [
        m.user.email for m in owners if m.user.email
    ]


def verdict(response: HttpResponse, *, must_refuse: bool, markers: list[str]) -> str | None:
    """Why ``response`` reveals or touches the other team's data, or None when it does not."""
    status = response.status_code
    if must_refuse:
        if 200 <= status < 300:
            return f"answered {status} (no team access check?)"
        if status >= 500:
            return f"answered {status} (the view worked before checking access?)"
        if 300 <= status < 400:
            target = urlparse(response.get("Location", "")).path
            if target != reverse("accounts-login"):
                return f"redirected ({status}) to {target}"
    body = _body(response)
    leaked = [m for m in markers if m and m in body]
    if leaked:
        return f"answered {status} showing {leaked}"
    return None


def snapshot(cast: Cast) -> list:
    """The target team's rows, to check that nothing changed."""
    rows: list = [list(Team.objects.filter(pk=cast.target.pk).values())]
    for model in [Membership, Invitation, KlingAccount, *cast.objects]:
        path_ = _team_path(model)
        rows.append(list(model._default_manager.filter(**{path_: cast.target}).values()))
    return rows


@dataclass
class WalkReport:
    """What the walk found: failures, patterns it could not fill, URLs checked."""

    failures: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)


def walk(patterns: Iterable, requester, cast: Cast) -> WalkReport:
    """Request every non-public URL as ``requester`` with ``cast.target``'s identifiers."""
    client = Client(raise_request_exception=False)
    client.force_login(requester)
    markers = leak_markers(cast)
    report = WalkReport()
    for route in iter_routes(patterns):
        if isinstance(route, UnsupportedPattern):
            report.unsupported.append(str(route))
            continue
        if route.name in PUBLIC:
            continue
        scoped = bool(route.uuid_kwargs)
        # Without a UUID the URL cannot name another team's object: check for leaks only.
        attempts = [("GET", {}), ("GET", {"HTTP_HX_REQUEST": "true"})]
        if scoped:
            attempts += [("POST", {}), ("POST", {"HTTP_HX_REQUEST": "true"})]
        for url in urls_for(route, cast):
            report.checked.append(url)
            for method, extra in attempts:
                response = client.generic(method, url, **extra)
                problem = verdict(response, must_refuse=scoped, markers=markers)
                if problem:
                    htmx = " (HTMX)" if extra else ""
                    report.failures.append(f"{method}{htmx} {url} [{route.label}]: {problem}")
    return report


# --- The tests ----------------------------------------------------------------------------


@pytest.fixture
def casts(portal):
    """Objects of both teams (so own-team requests can show the URLs are well formed)."""
    return {
        "other": make_cast(portal.other_team, portal.outsider),
        "own": make_cast(portal.team, portal.owner),
    }


def test_no_url_serves_another_teams_data(portal, casts):
    other = casts["other"]
    before = snapshot(other)
    report = walk(get_resolver().url_patterns, portal.owner, other)
    assert not report.unsupported, (
        "The access walker cannot fill these regex patterns; use path() or teach the walker: "
        f"{report.unsupported}"
    )
    assert not report.failures, "Another team's data is reachable:\n" + "\n".join(report.failures)
    assert snapshot(other) == before, "Requests to another team's URLs changed its data"
    # Not vacuous: the team-scoped accounts URLs, and the other streams' ones, were walked.
    walked = "\n".join(report.checked)
    assert f"/t/{other.target.code}/settings/" in walked
    assert f"/t/{other.target.code}/tasks/" in walked


def test_walker_fills_identifiers_that_work_for_their_own_team(client, portal, casts):
    """The same identifiers, of the requester's own team, reach real pages."""
    own = casts["own"]
    assert {KlingAccount, Invitation, Membership} <= set(own.objects)
    client.force_login(portal.owner)
    routes = {r.name: r for r in iter_routes(get_resolver().url_patterns) if isinstance(r, Route)}
    for name in (
        "accounts-settings",
        "accounts-kling-detail",
        "accounts-kling-create",
        "accounts-call-status",
        "tasks-list",
    ):
        url = urls_for(routes[name], own)[0]
        assert client.get(url).status_code == 200, url
    # Object kinds resolve to the right models (the member URL gets a membership's code).
    member_url = urls_for(routes["accounts-member-role"], own)[0]
    codes = {str(m.code) for m in Membership.objects.filter(team=portal.team)}
    assert member_url.split("/")[-3] in codes


# A URLconf with views that forget the team check, to prove the walker catches them.


def _leaky_team(request, team):
    return HttpResponse(Team.objects.get(code=team).name)


def _leaky_task(request, team, code):
    task = apps.get_model("tasks_app.Task").objects.filter(code=code).first()
    if task is None:
        raise Http404
    return HttpResponse(f"task {task.pk}")


def _leaky_redirect(request, team):
    return redirect("/somewhere/")


def _leaky_list(request):
    return HttpResponse(", ".join(Team.objects.values_list("name", flat=True)))


def _safe(request, team):
    access = team_for_user(request, team)
    return HttpResponse(access.team.name)


LEAKY_PATTERNS = [
    path("t/<uuid:team>/leaky/", _leaky_team, name="leaky-team"),
    path("t/<uuid:team>/tasks/<uuid:code>/leaky/", _leaky_task, name="tasks-leaky"),
    path("t/<uuid:team>/leaky-redirect/", _leaky_redirect, name="leaky-redirect"),
    path("all-teams/", _leaky_list, name="leaky-list"),
    path("t/<uuid:team>/safe/", _safe, name="safe"),
]


class LeakyURLConf:
    """The project's URLs plus the leaky ones."""

    urlpatterns = [path("", include("klingweb.urls")), path("", include(LEAKY_PATTERNS))]


def test_walker_catches_views_without_access_checks(settings, portal, casts):
    settings.ROOT_URLCONF = LeakyURLConf
    report = walk([path("", include(LEAKY_PATTERNS))], portal.owner, casts["other"])
    failed = {line.split("[")[1].split(" ")[0] for line in report.failures}
    assert failed == {"leaky-team", "tasks-leaky", "leaky-redirect", "leaky-list"}, report.failures


def test_api_key_of_one_team_reaches_nothing_of_another(portal, casts):
    """Every ``/api/v1/`` URL, with a write key of ``team`` (its owner's) as the bearer and
    ``other_team``'s identifiers: nothing of the other team is served, nothing changes."""
    from klingweb.api.keys import api_key_create

    _, raw = api_key_create(team=portal.team, user=portal.owner, name="walker", scope="write")
    client = Client(raise_request_exception=False, headers={"Authorization": f"Bearer {raw}"})
    other = casts["other"]
    before = snapshot(other)
    markers = leak_markers(other)
    failures, walked = [], []
    for route in iter_routes(get_resolver().url_patterns):
        if not isinstance(route, Route) or not route.route.startswith("api/v1/"):
            continue
        for url in urls_for(route, other):
            walked.append(url)
            for method in ("GET", "POST"):
                response = client.generic(method, url)
                problem = verdict(response, must_refuse=bool(route.uuid_kwargs), markers=markers)
                if problem:
                    failures.append(f"{method} {url} [{route.label}]: {problem}")
    assert not failures, "Another team's data is reachable by API key:\n" + "\n".join(failures)
    assert snapshot(other) == before
    other_task = other.objects[apps.get_model("tasks_app.Task")]
    assert f"/api/v1/tasks/{other_task.code}" in walked
    other_element = other.objects[apps.get_model("elements_app.Element")]
    assert f"/api/v1/elements/{other_element.code}" in walked
