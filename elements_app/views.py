"""Views of elements_app: the library (team elements and vendor presets), the create form,
the element page, delete, import and the presets "Sync now".

Every view starts with an access helper (DESIGN.md §3): anonymous → login, outsider → 404,
a role too weak → 403, wrong method → 405. Pages read the database; the create form only
queues a task. No view calls Kling: delete, import and presets "Sync now" need the vendor's
answer, so they start a vendor call (``klingweb.accounts.models.VendorCall``) run by a job,
and the page shows "working…" then the answer (counts, or the vendor's code, message and
request_id) by polling the call's status partial (``accounts-call-status``) every second.
"""

from __future__ import annotations

import mimetypes
import posixpath
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django_htmx.http import HttpResponseClientRedirect

from elements_app.forms import ElementForm, PresetFilterForm
from elements_app.live import PAGE_SIZE, element_results_context
from elements_app.models import Element, ElementStatus, PresetElement
from elements_app.services import (
    ElementNotDeletable,
    element_can_delete,
    element_create,
    element_delete_start,
    element_usages,
    elements_import_start,
    presets_sync_start,
)
from klingweb.accounts.access import READ_WRITE, WRITE, object_for_user, team_for_user
from klingweb.accounts.models import Role, Team, VendorCallKind
from klingweb.accounts.services import vendor_call_latest
from klingweb.security import safe_file_headers
from klingweb.storage import media_redirect
from tasks_app.budgets import BudgetExceeded
from tasks_app.families import registry
from tasks_app.inputs import InputNeedsPublicAddress


def _is_partial(request: HttpRequest) -> bool:
    """An HTMX swap (not a boosted full-page navigation)."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted


def multishot_prefill_url(*, team: Team, element: Element | PresetElement) -> str | None:
    """Link to the AI multi-shot create form with the element's frontal image filled in:
    ``/t/<team>/tasks/new/multi_shot/?frontal_image_url=<vendor URL>&element=<code>``.

    The vendor URL comes from ``element_image_list.frontal_image`` (KLING_API.md §5.4), so
    the tasks app needs nothing from elements_app. None when the element has no frontal
    image URL, is not usable, or the multi-shot form is not installed.
    """
    url = element.vendor_frontal_image_url
    if not url:
        return None
    if isinstance(element, Element) and not element.is_usable:
        return None
    if isinstance(element, PresetElement) and element.removed_at is not None:
        return None
    try:
        base = reverse("tasks-create", kwargs={"team": team.code, "family": "multi_shot"})
    except NoReverseMatch:
        return None
    query = {"frontal_image_url": url}
    if isinstance(element, Element):
        query["element"] = str(element.code)
    return f"{base}?{urlencode(query)}"


def omni_prefill_url(*, team: Team, element: Element | PresetElement) -> str | None:
    """Link to the Kling 3.0 Omni create form with the element preselected in its
    ``element_list``: ``/t/<team>/tasks/new/omni_video_3_0/?element=<element_id>``
    (KLING_API_2026.md §4.5). None when the element has no vendor id, is not usable, or the
    Omni family is not installed."""
    if not element.element_id:
        return None
    if isinstance(element, Element) and not element.is_usable:
        return None
    if isinstance(element, PresetElement) and element.removed_at is not None:
        return None
    if "omni_video_3_0" not in registry():
        return None
    base = reverse("tasks-create", kwargs={"team": team.code, "family": "omni_video_3_0"})
    return f"{base}?{urlencode({'element': element.element_id})}"


# --- library ---------------------------------------------------------------------------------


def element_list(request: HttpRequest, team) -> HttpResponse:
    """GET /t/<team>/elements/ (``elements-list``): the team's elements as cards.

    Query: ``q`` (name contains), ``tag`` (``o_101``…``o_108``), ``status``
    (creating|succeed|failed|deleted), ``deleted=1`` (include deleted; hidden by default),
    ``page``. An HTMX request gets the ``results`` partial only. Viewers and up.
    """
    access = team_for_user(request, team)
    context = element_results_context(request, access)
    template = "elements_app/element_list.html"
    partial = _is_partial(request) and not request.htmx.history_restore_request
    return render(request, f"{template}#results" if partial else template, context)


def _query_without_page(request: HttpRequest) -> str:
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()


def preset_list(request: HttpRequest, team) -> HttpResponse:
    """GET /t/<team>/elements/presets/ (``elements-presets``): the vendor's preset elements
    from the local cache (``PresetElement``), filtered by ``q`` and ``tag``, paginated.
    An HTMX request gets the ``results`` partial. Viewers and up; admins see "Sync now".
    """
    access = team_for_user(request, team)
    form = PresetFilterForm(request.GET or None)
    presets = PresetElement.objects.filter(removed_at__isnull=True)
    data = form.cleaned_data if form.is_valid() else {}
    if data.get("tag"):
        presets = presets.filter(tag_ids__contains=f",{data['tag']},")
    if data.get("q"):
        presets = presets.filter(name__icontains=data["q"])
    page = Paginator(presets, PAGE_SIZE).get_page(request.GET.get("page"))
    for preset in page.object_list:
        preset.use_url = multishot_prefill_url(team=access.team, element=preset)
        preset.generate_url = omni_prefill_url(team=access.team, element=preset)
    last_sync = PresetElement.objects.order_by("-synced_at").values_list("synced_at", flat=True)
    context = {
        "access": access,
        "team": access.team,
        "filters": form,
        "page": page,
        "query": _query_without_page(request),
        "last_sync": last_sync.first(),
        "tab": "presets",
        "call": vendor_call_latest(team=access.team, kind=VendorCallKind.PRESETS_SYNC)
        if access.can_admin
        else None,
    }
    template = "elements_app/preset_list.html"
    return render(request, f"{template}#results" if _is_partial(request) else template, context)


def preset_sync(request: HttpRequest, team) -> HttpResponse:
    """POST /t/<team>/elements/presets/sync/ (``elements-presets-sync``): start refreshing
    the preset cache with the team's Kling account (admins and owners) as a job, or join the
    sync already running; answers at once. HTMX → the ``sync-result`` partial of the presets
    page ("working…", then the counts or the vendor's refusal); otherwise a redirect to the
    presets tab, which shows the same."""
    access = team_for_user(request, team, role=Role.ADMIN, methods=WRITE)
    call = presets_sync_start(team=access.team, user=request.user)
    if _is_partial(request):
        context = {"access": access, "team": access.team, "call": call}
        return render(request, "elements_app/preset_list.html#sync-result", context)
    return redirect(reverse("elements-presets", kwargs={"team": access.team.code}))


# --- create --------------------------------------------------------------------------------


def element_create_view(request: HttpRequest, team) -> HttpResponse:
    """GET/POST /t/<team>/elements/new/ (``elements-create``): the create-element form
    (members and up). A valid POST queues the element task (``element_create``) and goes to
    the element page; an invalid one re-renders the form with errors next to the fields
    (the ``form`` partial for HTMX). A passed budget is a form error."""
    access = team_for_user(request, team, role=Role.MEMBER, methods=READ_WRITE)
    if request.method == "POST":
        form = ElementForm(request.POST, request.FILES, team=access.team, user=request.user)
        if form.is_valid():
            try:
                element = element_create(
                    team=access.team, user=request.user, data=form.cleaned_data
                )
            except BudgetExceeded as exc:
                form.add_error(None, str(exc))
            except InputNeedsPublicAddress as exc:
                form.add_error("video", str(exc))
            else:
                messages.success(request, f"Element “{element.name}” is being created.")
                target = reverse(
                    "elements-detail", kwargs={"team": access.team.code, "code": element.code}
                )
                if _is_partial(request):
                    return HttpResponseClientRedirect(target)
                return redirect(target)
    else:
        form = ElementForm(team=access.team, user=request.user)
    context = {"access": access, "team": access.team, "form": form}
    template = "elements_app/element_form.html"
    return render(request, f"{template}#form" if _is_partial(request) else template, context)


# --- one element ---------------------------------------------------------------------------


def element_detail(request: HttpRequest, team, code) -> HttpResponse:
    """GET /t/<team>/elements/<code>/ (``elements-detail``): the element, the task that
    created it, the tasks that used it, "Generate with this element" (the Omni form with it
    preselected), "Use in AI multi-shot", delete link.
    Deleted elements stay visible here (history). Viewers and up."""
    element, access = object_for_user(
        request, Element.objects.select_related("task", "creator", "deleted_by"), team, code
    )
    context = {
        "access": access,
        "team": access.team,
        "element": element,
        "usages": element_usages(element=element).select_related("creator")[:50],
        "use_url": multishot_prefill_url(team=access.team, element=element),
        "generate_url": omni_prefill_url(team=access.team, element=element),
        "refer_urls": [
            reverse(
                "elements-file",
                kwargs={"team": access.team.code, "code": element.code, "which": f"refer-{n}"},
            )
            for n in range(1, len(element.refer_image_names()) + 1)
        ],
        "can_delete": access.can_write
        and element_can_delete(element=element, user=request.user, can_admin=access.can_admin)
        and element.effective_status in (ElementStatus.SUCCEED, ElementStatus.FAILED),
    }
    return render(request, "elements_app/element_detail.html", context)


def element_card(request: HttpRequest, team, code) -> HttpResponse:
    """GET /t/<team>/elements/<code>/card/ (``elements-card``): one library card (HTMX
    partial). A card of an element still being created polls this every few seconds and
    stops once it is ready or failed."""
    element, access = object_for_user(request, Element.objects.select_related("task"), team, code)
    return render(request, "elements_app/_card.html", {"element": element, "team": access.team})


_FILE_SLOTS = ("frontal", "refer-1", "refer-2", "refer-3", "video")


def element_file(request: HttpRequest, team, code, which: str) -> HttpResponse:
    """GET /t/<team>/elements/<code>/files/<which>/ (``elements-file``): a stored input of
    the element — ``frontal``, ``refer-1``…``refer-3`` or ``video`` — served to team
    members only. 404 when that input is not stored. With a bucket: a 302 to a presigned URL
    valid 5 minutes (``klingweb.storage``)."""
    element, _access = object_for_user(request, Element.objects.all(), team, code)
    if which not in _FILE_SLOTS:
        raise Http404("No such file.")
    if which == "frontal":
        name = element.frontal_image.name
    elif which == "video":
        name = element.video.name
    else:
        refers = element.refer_image_names()
        index = int(which.split("-")[1]) - 1
        name = refers[index] if index < len(refers) else ""
    if not name:
        raise Http404("Not stored.")
    storage = element.frontal_image.storage
    if not storage.exists(name):
        raise Http404("Not stored.")
    # In a bucket: a short-lived presigned redirect (klingweb.storage explains why).
    moved = media_redirect(
        name,
        filename=posixpath.basename(name),
        content_type=mimetypes.guess_type(name)[0],
        inline=True,
        storage=storage,
    )
    if moved is not None:
        return moved
    # Stored names carry an extension decided by content (upload_save): images and videos
    # only, never HTML/SVG. Still, never let a browser run anything from an uploaded file.
    return safe_file_headers(FileResponse(storage.open(name, "rb")))


def element_delete_view(request: HttpRequest, team, code) -> HttpResponse:
    """GET/POST /t/<team>/elements/<code>/delete/ (``elements-delete``): confirm, then
    delete (admins, owners and the element's creator; 403 for others).

    An element on Kling is deleted by a job (``elements_app.jobs.delete_element``): the POST
    answers at once — HTMX with the ``delete-result`` partial, otherwise a redirect to this
    page — and the page shows "working…", then "deleted" or the vendor's refusal (the element
    then stays as it was). An element never on Kling is deleted at once (redirect to the
    library). An element already deleted or still being created: 400 with the reason.
    """
    element, access = object_for_user(
        request,
        Element.objects.select_related("task", "team"),
        team,
        code,
        role=Role.MEMBER,
        methods=READ_WRITE,
    )
    if not element_can_delete(element=element, user=request.user, can_admin=access.can_admin):
        raise PermissionDenied("Only an admin or the element's creator can delete it.")
    detail = reverse("elements-detail", kwargs={"team": access.team.code, "code": element.code})
    here = reverse("elements-delete", kwargs={"team": access.team.code, "code": element.code})
    error = ""
    call = None
    if request.method == "POST":
        try:
            call = element_delete_start(element=element, user=request.user)
        except ElementNotDeletable as exc:
            error = str(exc)
        else:
            if call is None:
                messages.success(request, f"Element “{element.name}” deleted.")
                target = reverse("elements-list", kwargs={"team": access.team.code})
                if _is_partial(request):
                    return HttpResponseClientRedirect(target)
                return redirect(target)
            if not _is_partial(request):
                return redirect(here)
    if call is None:
        call = vendor_call_latest(
            team=access.team, kind=VendorCallKind.ELEMENT_DELETE, subject=str(element.code)
        )
    context = {
        "access": access,
        "team": access.team,
        "element": element,
        "detail_url": detail,
        "error": error,
        "call": call,
    }
    template = "elements_app/element_confirm_delete.html"
    if _is_partial(request) and request.method == "POST":
        template += "#delete-result"
    return render(request, template, context, status=400 if error else 200)


def element_import_view(request: HttpRequest, team) -> HttpResponse:
    """GET/POST /t/<team>/elements/import/ (``elements-import``): admins import the custom
    elements of the team's Kling account made outside the portal.

    POST starts the import job (``elements_app.jobs.import_elements``, which reads up to
    1,000 list pages) or joins the one running, and answers at once: HTMX with the
    ``import-result`` partial, otherwise a redirect to this page. The page shows the latest
    import: "working…", then the counts or the vendor's refusal.
    """
    access = team_for_user(request, team, role=Role.ADMIN, methods=READ_WRITE)
    if request.method == "POST":
        call = elements_import_start(team=access.team, user=request.user)
        if not _is_partial(request):
            return redirect(reverse("elements-import", kwargs={"team": access.team.code}))
    else:
        call = vendor_call_latest(team=access.team, kind=VendorCallKind.ELEMENTS_IMPORT)
    context = {"access": access, "team": access.team, "call": call}
    template = "elements_app/element_import.html"
    if _is_partial(request) and request.method == "POST":
        template += "#import-result"
    return render(request, template, context)
