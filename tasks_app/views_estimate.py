"""The create forms' cost estimate: a small HTMX partial that follows the form's options.

``GET /t/<team>/tasks/new/<family>/estimate/?model_name=…&mode=…&duration=…&sound=…`` answers
the ``_estimate.html`` fragment ("about 4 units ≈ $0.56"), computed by
``tasks_app.prices.task_estimate`` from the form's current values (the same function the
budget check uses on the stored request body, so what the form shows is what the budget
check counts). The create form asks for it on load and on every change of an option
(``hx-trigger="load, change from:closest form"``), sending only the fields the price depends
on (``tasks_app.prices.ESTIMATE_FIELDS``; never uploads nor the CSRF token).
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from klingweb.accounts.access import team_for_user
from tasks_app.families import UnknownFamily, get_family
from tasks_app.prices import currency, task_estimate_or_none, units_money


def task_estimate_partial(request: HttpRequest, team: Any, family: str) -> HttpResponse:
    """GET /t/<team>/tasks/new/<family>/estimate/: the estimate fragment for the options in
    the query string (``tasks_app.prices.ESTIMATE_FIELDS``). Any member of the team (viewers included: it
    reveals nothing but the vendor's price list); unknown family 404; other methods 405.
    Context of ``tasks_app/_estimate.html``: ``estimate`` (units, ``Decimal`` or None when
    the table has no figure for these options), ``estimate_money`` (in ``currency``)."""
    team_for_user(request, team)
    try:
        get_family(family)
    except UnknownFamily:
        raise Http404("No such kind of task.") from None
    units = task_estimate_or_none(family, request.GET)
    context = {
        "estimate": units,
        "estimate_money": units_money(units),
        "currency": currency(),
    }
    return render(request, "tasks_app/_estimate.html", context)
