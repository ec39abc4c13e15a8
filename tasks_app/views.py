"""Views of tasks_app (placeholder until the tasks issue lands)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from klingweb.accounts.access import team_for_user


def task_list(request: HttpRequest, team) -> HttpResponse:
    """GET /t/<team>/tasks/: the team's tasks."""
    access = team_for_user(request, team)
    return render(request, "tasks_app/task_list.html", {"access": access, "team": access.team})
