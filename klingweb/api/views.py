"""Team settings pages for API keys: list, create (shown once), revoke.

Admins and owners only (DESIGN.md §3): outsiders 404, other members 403, wrong method 405.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from klingweb.accounts.access import READ_WRITE, WRITE, TeamAccess, object_for_user, team_for_user
from klingweb.accounts.models import Role
from klingweb.api.forms import ApiKeyForm, WebhookEndpointForm
from klingweb.api.keys import api_key_create, api_key_revoke
from klingweb.api.models import ApiKey, WebhookEndpoint
from klingweb.api.webhooks import (
    webhook_endpoint_create,
    webhook_secret_rotate,
    webhook_send_test,
)


def _page(request: HttpRequest, access: TeamAccess, **extra: Any) -> HttpResponse:
    context = {
        "access": access,
        "team": access.team,
        "keys": ApiKey.objects.filter(team=access.team).select_related("created_by"),
        "form": ApiKeyForm(),
        **extra,
    }
    return render(request, "api/keys.html", context)


def api_keys(request: HttpRequest, team: Any) -> HttpResponse:
    """GET/POST /t/<team>/settings/api-keys/: the team's API keys (last 4 characters,
    scope, creator, created, last used, revoked); POST creates one acting for the caller
    and shows it once on the answer page (never again). Admins only."""
    access = team_for_user(request, team, role=Role.ADMIN, methods=READ_WRITE)
    if request.method != "POST":
        return _page(request, access)
    form = ApiKeyForm(request.POST)
    if not form.is_valid():
        return _page(request, access, form=form)
    key, raw = api_key_create(
        team=access.team,
        user=request.user,
        name=form.cleaned_data["name"],
        scope=form.cleaned_data["scope"],
    )
    response = _page(request, access, new_key=key, new_key_text=raw)
    response["Cache-Control"] = "no-store"
    return response


def api_key_revoke_view(request: HttpRequest, team: Any, key: Any) -> HttpResponse:
    """POST /t/<team>/settings/api-keys/<key>/revoke/: revoke a key (401 from then on).
    Admins only; a key of another team 404."""
    api_key, access = object_for_user(
        request, ApiKey.objects.all(), team, key, role=Role.ADMIN, methods=WRITE
    )
    api_key_revoke(api_key=api_key)
    return redirect("api-keys", team=access.team.code)


# -- outbound webhooks ------------------------------------------------------------------


def _webhooks_page(request: HttpRequest, access: TeamAccess, **extra: Any) -> HttpResponse:
    endpoints = list(WebhookEndpoint.objects.filter(team=access.team))
    for endpoint in endpoints:
        endpoint.recent = list(endpoint.deliveries.order_by("-created_at", "-id")[:20])
    context = {
        "access": access,
        "team": access.team,
        "endpoints": endpoints,
        "form": WebhookEndpointForm(),
        **extra,
    }
    return render(request, "api/webhooks.html", context)


def webhooks(request: HttpRequest, team: Any) -> HttpResponse:
    """GET/POST /t/<team>/settings/webhooks/: the team's webhook endpoints with their
    delivery log (last 20: event, status, attempts, response code, time in ms); POST adds
    an endpoint and shows its signing secret once. Admins only."""
    access = team_for_user(request, team, role=Role.ADMIN, methods=READ_WRITE)
    if request.method != "POST":
        return _webhooks_page(request, access)
    form = WebhookEndpointForm(request.POST)
    if not form.is_valid():
        return _webhooks_page(request, access, form=form)
    try:
        endpoint, secret = webhook_endpoint_create(
            team=access.team,
            user=request.user,
            url=form.cleaned_data["url"],
            events=form.cleaned_data["events"],
        )
    except ValueError as exc:
        form.add_error("url", str(exc))
        return _webhooks_page(request, access, form=form)
    response = _webhooks_page(request, access, new_endpoint=endpoint, new_secret=secret)
    response["Cache-Control"] = "no-store"
    return response


def webhook_test(request: HttpRequest, team: Any, endpoint: Any) -> HttpResponse:
    """POST /t/<team>/settings/webhooks/<endpoint>/test/: queue a signed ``webhook.test``
    delivery to the endpoint (it shows in the log). Admins only."""
    item, access = object_for_user(
        request, WebhookEndpoint.objects.all(), team, endpoint, role=Role.ADMIN, methods=WRITE
    )
    webhook_send_test(endpoint=item)
    return redirect("api-webhooks", team=access.team.code)


def webhook_delete(request: HttpRequest, team: Any, endpoint: Any) -> HttpResponse:
    """POST /t/<team>/settings/webhooks/<endpoint>/delete/: remove the endpoint and its
    log. Admins only."""
    item, access = object_for_user(
        request, WebhookEndpoint.objects.all(), team, endpoint, role=Role.ADMIN, methods=WRITE
    )
    item.delete()
    return redirect("api-webhooks", team=access.team.code)


def webhook_rotate(request: HttpRequest, team: Any, endpoint: Any) -> HttpResponse:
    """POST /t/<team>/settings/webhooks/<endpoint>/rotate/: a new signing secret, shown once;
    the old one also signs for 24 hours. Admins only."""
    item, access = object_for_user(
        request, WebhookEndpoint.objects.all(), team, endpoint, role=Role.ADMIN, methods=WRITE
    )
    secret = webhook_secret_rotate(endpoint=item)
    response = _webhooks_page(request, access, new_endpoint=item, new_secret=secret)
    response["Cache-Control"] = "no-store"
    return response
