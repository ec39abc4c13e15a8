"""Views of accounts: the home redirect, teams, members, invitations, credentials."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from klingweb.accounts.access import READ, require_login, require_methods, user_teams


def home(request: HttpRequest) -> HttpResponse:
    """GET /: send a signed-in user to their first team's task list, else show a welcome.

    Anonymous → login redirect.
    """
    require_login(request)
    require_methods(request, READ)
    first = user_teams(request).order_by("team__name").first()
    if first is not None:
        return redirect("tasks-list", team=first.team.code)
    return render(request, "accounts/no_team.html")
