"""The element library's one live request (issue 14 item 4), like the task lists'.

The library page (``elements-list``) carries one hidden poller (``tasks_app/_live.html``)
that GETs ``elements-live`` every ``LIVE_INTERVAL_SECONDS`` with the page's filters, its
page and ``seen`` (the cards it shows and their state: ``tasks_app.live.live_token``). The
answer: cards whose state changed (an element finished creating, failed, was deleted) and
new cards that match the filters, as out-of-band swaps; cards that left the page deleted;
then the next poller, without a trigger and with HTTP 286 once no card of the page is being
created and no new element can appear (only page 1 of the newest-first library can grow).
A ``seen`` that cannot be patched gets the whole ``#results`` partial (``HX-Retarget``).
Queries do not depend on the number of cards.
"""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from elements_app.forms import ElementFilterForm
from elements_app.models import Element, ElementStatus
from klingweb.accounts.access import READ, TeamAccess, team_for_user
from klingweb.accounts.models import Team
from tasks_app.live import (
    LIVE_INTERVAL_SECONDS,
    live_query,
    live_response,
    live_token,
    state_digest,
)

PAGE_SIZE = 24

_LIVE_KEYS = ("page", "seen", "n")


def filtered_elements(team: Team, form: ElementFilterForm) -> QuerySet[Element]:
    """The team's elements narrowed by the library's valid filters, newest first."""
    elements = Element.objects.filter(team=team).select_related("task", "creator")
    data = form.cleaned_data if form.is_valid() else {}
    status = data.get("status") or ""
    if status:
        elements = elements.with_status(status)
    elif not data.get("deleted"):
        elements = elements.visible()
    if data.get("tag"):
        elements = elements.with_tag(data["tag"])
    if data.get("q"):
        elements = elements.filter(name__icontains=data["q"])
    return elements


def element_card_state(element: Element) -> str:
    """The displayed state of a library card (``elements_app/_card.html``), 8 hex digits."""
    return state_digest(
        element.updated_at,
        element.effective_status,
        element.name,
        element.tags,
        bool(element.frontal_image),
        element.vendor_frontal_image_url,
        element.voice_id,
        element.voice_trial_url,
    )


def element_results_context(request: HttpRequest, access: TeamAccess) -> dict:
    """Context of the library's ``#results`` partial and its poller (``request.GET``: the
    filters of ``ElementFilterForm`` and ``page``). A constant number of queries."""
    form = ElementFilterForm(request.GET or None)
    page = Paginator(filtered_elements(access.team, form), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    elements = list(page.object_list)
    rows = [(element.code.hex, element_card_state(element)) for element in elements]
    # New elements are the newest: only page 1 can grow.
    active = page.number == 1 or any(
        element.effective_status == ElementStatus.CREATING for element in elements
    )
    params = request.GET.copy()
    for key in _LIVE_KEYS:
        params.pop(key, None)
    live_url = reverse("elements-live", kwargs={"team": access.team.code})
    live_qs = live_query(
        request, page=page.number, seen=live_token(rows), count=page.paginator.count
    )
    return {
        "access": access,
        "team": access.team,
        "filters": form,
        "page": page,
        "elements": elements,
        "query": params.urlencode(),
        "tab": "elements",
        "live": {
            "id": "element-live",
            "url": f"{live_url}?{live_qs}",
            "active": active,
            "interval": LIVE_INTERVAL_SECONDS,
        },
        "live_rows": rows,
    }


def element_list_live(request: HttpRequest, team: Any) -> HttpResponse:
    """GET /t/<team>/elements/live/ (``elements-live``): the library's one live request.

    Query: the library's filters and ``page`` (as ``element_list``), ``seen``
    (``tasks_app.live.live_token`` of the cards shown; ``-`` for none) and ``n`` (the count
    shown). Answer: changed and new cards as out-of-band swaps, cards that left as
    out-of-band deletes, the pagination when the count changed, the next poller (HTTP 286
    and no trigger once nothing on the page can change), or the whole ``#results`` partial
    (``HX-Retarget: #results``) when ``seen`` cannot be patched. Viewers and up; outsiders
    404; anonymous → login; GET/HEAD only (405).
    """
    access = team_for_user(request, team, methods=READ)
    context = element_results_context(request, access)
    return live_response(
        request,
        context,
        items=list(context["elements"]),
        page_template="elements_app/element_list.html#results",
        target="#results",
        patch_template="elements_app/_live_cards.html",
    )
