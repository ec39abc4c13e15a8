"""Task pages: lists, create forms per family, the task page and its live partials, files.

Every view starts with an access helper (DESIGN.md §3): anonymous → login, outsider → 404,
viewer writing → 403, wrong method → 405. Pages render from the database only; no view
calls Kling (the background cluster does). HTMX requests get named partials
(``"page.html#name"``): the list's table, a row, the create form, the task page's live part.
"""

from __future__ import annotations

import json
import mimetypes
import posixpath
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.core.serializers.json import DjangoJSONEncoder
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django_htmx.http import HttpResponseClientRedirect
from zipstream import ZipStream

from klingweb.accounts.access import (
    READ,
    READ_WRITE,
    WRITE,
    TeamAccess,
    object_for_user,
    team_for_user,
)
from klingweb.accounts.models import KlingAccount, Role
from klingweb.storage import media_redirect
from tasks_app.budgets import BudgetExceeded, budget_banners
from tasks_app.families import TaskFamily, UnknownFamily, get_family, registry
from tasks_app.forms import video_extend_refusal, video_source_task
from tasks_app.inputs import InputNeedsPublicAddress
from tasks_app.live import task_table_context
from tasks_app.models import Family, Task, TaskMedia
from tasks_app.rows import task_rows
from tasks_app.services import END_REASON_MAX, LATE_ANSWER_NOTE, EndRefused, task_end_by_hand
from tasks_app.submission import TaskNotCancellable, task_cancel, task_queue_form
from tasks_app.templatetags.tasks_tags import units
from tasks_app.uploads import (
    team_upload_prefix,
    upload_belongs_to,
    upload_content_type,
    upload_url,
)

#: Content types a kept result may be shown inline with; anything else is an attachment.
_INLINE_RESULT_TYPES = {"image/png", "image/jpeg", "image/webp", "video/mp4", "video/quicktime"}


def _paused_account(team: Any) -> KlingAccount | None:
    """The Kling account of ``team`` if it is paused (for the banner), else None.

    Reads only: unlike ``account_for_team`` it never creates the operator default row.
    """
    if team.kling_account_id is not None:
        account = team.kling_account
    else:
        account = KlingAccount.objects.filter(is_operator_default=True).first()
    return account if account is not None and account.is_paused else None


def _own_create_url(family: TaskFamily, team: Any) -> str | None:
    """The create page a family brings itself (``extra["create_url_name"]``), if any."""
    name = family.extra.get("create_url_name")
    if not name:
        return None
    try:
        return reverse(name, kwargs={"team": team.code})
    except NoReverseMatch:
        return None


def _families(team: Any) -> list[dict]:
    """Every registered family with the URL of its create page (for the "new task" menu);
    a family whose own page does not resolve is left out."""
    out = []
    for family in registry().values():
        url = _own_create_url(family, team)
        if url is None and family.extra.get("create_url_name"):
            continue
        if url is None:
            url = reverse("tasks-create", kwargs={"team": team.code, "family": family.key})
        out.append({"family": family, "url": url})
    return out


def _base_context(access: TeamAccess, *, banners: bool = True) -> dict:
    """Context of every task page: the access, the team, and the banners' data."""
    context: dict[str, Any] = {"access": access, "team": access.team}
    if banners:
        context["paused_account"] = _paused_account(access.team)
        context["budget_banners"] = budget_banners(team=access.team, user=access.membership.user)
    return context


# -- lists ------------------------------------------------------------------------------


def _task_list(request: HttpRequest, team: Any, *, mine: bool) -> HttpResponse:
    access = team_for_user(request, team, methods=READ)
    context = {
        **_base_context(access),
        **task_table_context(request, access, mine=mine),
        "families": _families(access.team),
    }
    template = "tasks_app/task_list.html"
    if request.htmx and not request.htmx.boosted and not request.htmx.history_restore_request:
        template += "#table"
    return render(request, template, context)


def task_list(request: HttpRequest, team: Any) -> HttpResponse:
    """GET /t/<team>/tasks/: the team's tasks, filtered, sorted, 25 a page.

    Query: ``status`` (a status, ``unfinished`` = queued or at Kling, or ``in_flight`` = at
    Kling: submitted or processing), ``family``, ``creator`` (user id),
    ``date_from``/``date_to`` (YYYY-MM-DD, team time zone, inclusive), ``q`` (prompt,
    summary, code, vendor task_id), ``sort`` (``-created`` default | ``created``), ``page``.
    HTMX: only the ``#table`` partial. Any member, viewers included.
    """
    return _task_list(request, team, mine=False)


def task_mine(request: HttpRequest, team: Any) -> HttpResponse:
    """GET /t/<team>/tasks/mine/: the caller's own tasks in this team (as ``task_list``)."""
    return _task_list(request, team, mine=True)


def _row_of(request: HttpRequest, access: TeamAccess, task: Task) -> Any:
    """The list row of ``task`` for the caller (``tasks_app.rows.TaskRow``)."""
    return task_rows([task], access=access, user=request.user)[0]


def task_row(request: HttpRequest, team: Any, code: Any) -> HttpResponse:
    """GET /t/<team>/tasks/<code>/row/: one row of the list (HTMX polling of unfinished
    tasks: queued, submitted, processing).

    The row of a finished task carries no polling trigger, so the polling stops.
    """
    task, access = object_for_user(
        request, Task.objects.select_related("creator").prefetch_related("media"), team, code
    )
    return render(
        request,
        "tasks_app/_row.html",
        {
            **_base_context(access, banners=False),
            "task": task,
            "row": _row_of(request, access, task),
        },
    )


# -- create -----------------------------------------------------------------------------


def task_new(request: HttpRequest, team: Any) -> HttpResponse:
    """GET /t/<team>/tasks/new/: choose what to create. Members and up (viewers 403)."""
    access = team_for_user(request, team, role=Role.MEMBER, methods=READ)
    return render(
        request,
        "tasks_app/task_new.html",
        {**_base_context(access), "families": _families(access.team)},
    )


def _initial(request: HttpRequest, access: TeamAccess, family: TaskFamily, form_class: type):
    initial: dict = {}
    source = None
    from_code = request.GET.get("from")
    if from_code:
        source = (
            Task.objects.filter(team=access.team, code=_uuid_or_none(from_code))
            .filter(family=family.key)
            .first()
        )
        if source is not None:
            initial.update(form_class.initial_from_params(source.params))
    initial.update(form_class.initial_from_query(request.GET))
    return initial, source


def _uuid_or_none(value: str) -> Any:
    import uuid

    try:
        return uuid.UUID(value)
    except (TypeError, ValueError):
        return None


def task_create(request: HttpRequest, team: Any, family: str) -> HttpResponse:
    """GET/POST /t/<team>/tasks/new/<family>/: the create form of one family.

    GET: the empty form; ``?from=<task code>`` prefills it from an earlier task of the team
    ("run again with these settings"); the family's form may read more of the query
    (``?video_id=``, ``?frontal_image_url=``). POST: validate (vendor rules, KLING_API.md
    §5), store uploads, check the budget, queue the task (``task_queue``) and redirect to
    the task page (``HX-Redirect`` for HTMX). Invalid: the form again with the errors next
    to the fields (HTMX: the ``#form`` partial only). Members and up; viewers get 403;
    unknown family 404. A family with a page of its own redirects there.
    """
    access = team_for_user(request, team, role=Role.MEMBER, methods=READ_WRITE)
    try:
        fam = get_family(family)
    except UnknownFamily:
        raise Http404("No such kind of task.") from None
    if fam.extra.get("create_url_name"):
        own = _own_create_url(fam, access.team)
        if own is None:
            raise Http404("No such kind of task.")
        return redirect(own)
    form_class = fam.get_form_class()
    kwargs = {"team": access.team, "user": request.user}
    source = None
    if request.method == "POST":
        form = form_class(request.POST, request.FILES, **kwargs)
        if form.is_valid():
            task = _queue_from_form(request, access, fam, form)
            if task is not None:
                url = reverse("tasks-detail", kwargs={"team": access.team.code, "code": task.code})
                if request.htmx:
                    return HttpResponseClientRedirect(url)
                return redirect(url)
    else:
        initial, source = _initial(request, access, fam, form_class)
        form = form_class(initial=initial, **kwargs)
    context = {
        **_base_context(access),
        "family": fam,
        "form": form,
        "source": source,
        "form_url": request.get_full_path(),
    }
    template = fam.template
    if request.htmx and request.method == "POST":
        template += "#form"
    return render(request, template, context)


def _queue_from_form(request: HttpRequest, access: TeamAccess, fam: TaskFamily, form) -> Any:
    """Queue the form's task (``task_queue_form``, shared with the API); on a budget
    refusal or a video input without a public address (uploads already deleted) add a
    form error and return None."""
    try:
        return task_queue_form(team=access.team, user=request.user, family=fam, form=form)
    except (BudgetExceeded, InputNeedsPublicAddress) as exc:
        form.add_error(None, str(exc))
        return None


# -- the task page ----------------------------------------------------------------------


def _param_rows(task: Task) -> list[dict]:
    """The stored request params for display: uploads as previews, the rest as text."""
    rows = []
    for key, value in (task.params or {}).items():
        row: dict[str, Any] = {"key": key, "value": value, "kind": "text"}
        if isinstance(value, dict) and set(value) == {"$file"}:
            name = value["$file"]
            row["url"] = upload_url(team=task.team, name=name)
            content_type = upload_content_type(name) or ""
            row["kind"] = content_type.split("/")[0] if content_type else "file"
            row["value"] = posixpath.basename(name)
        elif isinstance(value, str) and value.startswith(("http://", "https://")):
            row["kind"] = "url"
        elif isinstance(value, dict | list):
            row["kind"] = "json"
            row["value"] = json.dumps(value, ensure_ascii=False)
        rows.append(row)
    return rows


def _media_display(task: Task) -> list:
    from tasks_app.media import media_for_display

    return media_for_display(task)


def _task_context(access: TeamAccess, task: Task, *, banners: bool = True) -> dict:
    media = _media_display(task) if task.status == "succeed" else []
    videos = [item for item in media if item.kind == "video" and not item.is_watermarked]
    images = [item for item in media if item.kind == "image"]
    extendable = []
    if (
        access.can_write
        and Family.VIDEO_EXTEND in registry()
        and task.family in (Family.TEXT2VIDEO, Family.IMAGE2VIDEO, Family.VIDEO_EXTEND)
    ):
        for video in (task.result or {}).get("videos") or []:
            if isinstance(video, dict) and video.get("id"):
                extendable.append({"id": video["id"], "refusal": video_extend_refusal(task, video)})
    first = media[0] if media else None
    events = list(task.events.all())
    return {
        **_base_context(access, banners=banners),
        "task": task,
        "family": registry().get(task.family),
        "events": events,
        "ended_by_hand": any(e.status == "lost" and e.source == "admin" for e in events),
        "late_answer": any(event.note.startswith(LATE_ANSWER_NOTE) for event in events),
        "lost_after_checks": settings.POLL_LOST_AFTER_CHECKS,
        "lost_after_minutes": max(1, round(settings.POLL_LOST_AFTER_SECONDS / 60)),
        "end_reason_max": END_REASON_MAX,
        "param_rows": _param_rows(task),
        "media": media,
        "videos": videos,
        "images": images,
        "watermarked": [item for item in media if item.is_watermarked],
        "vendor_days_left": first.vendor_days_left if first else None,
        "vendor_expired": bool(first and first.vendor_expired),
        "all_kept": bool(media) and all(item.is_kept for item in media),
        "kept_count": sum(1 for item in media if item.is_kept),
        "extends_task": video_source_task(task.team, str((task.params or {}).get("video_id") or ""))
        if task.family == Family.VIDEO_EXTEND
        else None,
        "extendable": extendable,
        "task_json": _task_export(task),
        "result_elements": [
            item for item in (task.result or {}).get("elements") or [] if isinstance(item, dict)
        ],
    }


def task_detail(request: HttpRequest, team: Any, code: Any) -> HttpResponse:
    """GET /t/<team>/tasks/<code>/: a task's parameters, status history, results and cost.

    While the task is unfinished (queued or at Kling) its ``#live`` region polls this URL (HTMX: the partial
    only) and stops once the task has finished.
    """
    task, access = object_for_user(
        request,
        Task.objects.select_related("creator", "kling_account").prefetch_related("media", "events"),
        team,
        code,
    )
    Task.team.field.set_cached_value(task, access.team)  # the team the access check read
    partial = bool(request.htmx and not request.htmx.boosted)
    template = "tasks_app/task_detail.html" + ("#live" if partial else "")
    return render(request, template, _task_context(access, task, banners=not partial))


def task_cancel_view(request: HttpRequest, team: Any, code: Any) -> HttpResponse:
    """POST /t/<team>/tasks/<code>/cancel/ (``tasks-cancel``): cancel a queued task that
    nothing has been sent to Kling for (``tasks_app.submission.task_cancel``): nothing is
    charged and its estimate stops counting against budgets.

    Members cancel their own tasks, admins and owners any task of the team; another
    member's task → 403, a viewer → 403, an outsider → 404, GET → 405. A task already sent
    (or being sent) is refused with the reason and nothing changes. HTMX from a list row (``HX-Target: task-<code>``) → the row; else HTMX → the
    task page's ``#live`` region; both carry the notice (status 200 so htmx swaps them).
    Without HTMX → redirect to the task page with a message.
    """
    task, access = object_for_user(
        request,
        Task.objects.select_related("creator"),
        team,
        code,
        role=Role.MEMBER,
        methods=WRITE,
    )
    if not (access.can_admin or task.creator_id == request.user.pk):
        raise PermissionDenied("Only the person who created this task or an admin can cancel it.")
    ok = True
    try:
        task_cancel(task_pk=task.pk, by=request.user.get_username())
        text = "Task cancelled. Nothing was sent to Kling and nothing is charged."
    except TaskNotCancellable as exc:
        ok, text = False, str(exc)
    notice = {"ok": ok, "text": text}
    if request.htmx:
        if request.htmx.target == f"task-{task.code}":
            row = Task.objects.select_related("creator").prefetch_related("media").get(pk=task.pk)
            context = {
                **_base_context(access, banners=False),
                "task": row,
                "row": _row_of(request, access, row),
                "notice": notice,
            }
            return render(request, "tasks_app/_row.html", context)
        fresh = (
            Task.objects.select_related("creator", "team", "kling_account")
            .prefetch_related("media", "events")
            .get(pk=task.pk)
        )
        context = {**_task_context(access, fresh, banners=False), "notice": notice}
        return render(request, "tasks_app/task_detail.html#live", context)
    (messages.success if ok else messages.error)(request, text)
    return redirect("tasks-detail", team=access.team.code, code=task.code)


def task_end_view(request: HttpRequest, team: Any, code: Any) -> HttpResponse:
    """POST /t/<team>/tasks/<code>/end/ (``tasks-end``): an admin or owner ends a stale task
    that was sent to Kling and has not finished, by hand, with a ``reason`` (form field,
    required, at most ``END_REASON_MAX`` characters): it becomes "Lost at vendor", nothing is
    charged, its reservation is released, and the reason and who gave it are kept in its
    status history (``tasks_app.services.task_end_by_hand``).

    Members and viewers → 403, outsiders → 404, GET → 405. A missing or overlong reason, or a
    task no longer in flight, is refused with the reason and nothing changes (HTMX: the
    page's ``#live`` region with the error, status 200 so htmx swaps it; without HTMX a
    redirect with a message).
    """
    task, access = object_for_user(
        request, Task.objects.all(), team, code, role=Role.ADMIN, methods=WRITE
    )
    reason = request.POST.get("reason", "")
    ok, error = True, ""
    try:
        task_end_by_hand(task=task, by=request.user.get_username(), reason=reason)
        text = "Task ended by hand: lost at vendor, nothing charged."
    except EndRefused as exc:
        ok, error, text = False, str(exc), str(exc)
    if request.htmx:
        fresh = (
            Task.objects.select_related("creator", "team", "kling_account")
            .prefetch_related("media", "events")
            .get(pk=task.pk)
        )
        context = {
            **_task_context(access, fresh, banners=False),
            "notice": {"ok": ok, "text": text},
            "end_error": error,
            "end_reason": "" if ok else reason,
        }
        return render(request, "tasks_app/task_detail.html#live", context)
    (messages.success if ok else messages.error)(request, text)
    return redirect("tasks-detail", team=access.team.code, code=task.code)


def _task_export(task: Task) -> dict:
    """The task as plain JSON (for "copy as JSON"): settings, ids, status, result, cost.

    Uploaded inputs appear as their storage names, never as Base64.
    """
    return {
        "code": str(task.code),
        "family": task.family,
        "params": task.params,
        "model_name": task.model_name,
        "mode": task.mode,
        "status": task.status,
        "task_id": task.task_id,
        "task_status_msg": task.task_status_msg,
        "error": (
            {
                "code": task.error_code,
                "message": task.error_message,
                "request_id": task.error_request_id,
            }
            if task.error_code is not None or task.error_message
            else None
        ),
        "final_unit_deduction": (
            units(task.final_unit_deduction) if task.final_unit_deduction is not None else None
        ),
        "result": task.result,
        "created_at": task.created_at,
        "finished_at": task.finished_at,
        "creator": task.creator.get_username() if task.creator else None,
    }


def task_json(request: HttpRequest, team: Any, code: Any) -> HttpResponse:
    """GET /t/<team>/tasks/<code>/json/: the task as JSON (``_task_export``), as a file."""
    task, _ = object_for_user(request, Task.objects.select_related("creator"), team, code)
    response = JsonResponse(
        _task_export(task), encoder=DjangoJSONEncoder, json_dumps_params={"indent": 2}
    )
    response["Content-Disposition"] = f'attachment; filename="task-{task.code}.json"'
    return response


# -- files ------------------------------------------------------------------------------


def _safe_file_response(handle, *, content_type: str | None, filename: str, inline: bool):
    response = FileResponse(
        handle,
        content_type=content_type or "application/octet-stream",
        as_attachment=not inline,
        filename=filename,
    )
    # Never let a browser run anything from an uploaded or fetched file.
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def task_input(request: HttpRequest, team: Any, name: str) -> HttpResponse:
    """GET /t/<team>/uploads/<name>: one of the team's uploaded inputs.

    ``name``: the storage name without its ``uploads/<team code>/`` prefix. Images and sound inline with their type
    (decided from content when saved), anything else as an attachment; never HTML/SVG.
    Outsiders and unknown names 404. With a bucket: a 302 to a presigned URL valid 5 minutes
    (``klingweb.storage``).
    """
    access = team_for_user(request, team, methods=READ)
    name = team_upload_prefix(access.team) + name
    if not upload_belongs_to(team=access.team, name=name):
        raise Http404("No such file.")
    content_type = upload_content_type(name)
    inline = content_type is not None and request.GET.get("download") != "1"
    filename = posixpath.basename(name)
    # In a bucket: a short-lived presigned redirect (klingweb.storage explains why).
    moved = media_redirect(name, filename=filename, content_type=content_type, inline=inline)
    if moved is not None:
        return moved
    return _safe_file_response(
        default_storage.open(name, "rb"),
        content_type=content_type,
        filename=filename,
        inline=inline,
    )


def task_media_file(request: HttpRequest, team: Any, code: Any, media: Any) -> HttpResponse:
    """GET /t/<team>/tasks/<code>/media/<media code>/: a kept result file of a task.

    Inline for images and videos (``?download=1``: as an attachment). 404 unless kept.
    With a bucket: a 302 to a presigned URL valid 5 minutes (``klingweb.storage``).
    """
    task, _ = object_for_user(request, Task.objects.all(), team, code)
    item = TaskMedia.objects.filter(task=task, code=media).first()
    if item is None or not item.file:
        raise Http404("No such file.")
    content_type = item.content_type or mimetypes.guess_type(item.file.name)[0] or ""
    filename = _media_filename(task, item)
    inline = content_type in _INLINE_RESULT_TYPES and request.GET.get("download") != "1"
    # In a bucket: a short-lived presigned redirect (klingweb.storage explains why).
    moved = media_redirect(
        item.file.name, filename=filename, content_type=content_type, inline=inline
    )
    if moved is not None:
        return moved
    try:
        handle = item.file.open("rb")
    except FileNotFoundError:
        raise Http404("The kept file is missing.") from None
    return _safe_file_response(handle, content_type=content_type, filename=filename, inline=inline)


#: Bytes read from storage at a time while a zip of kept results streams out.
ZIP_CHUNK_BYTES = 1024 * 1024


def _media_filename(task: Task, item: TaskMedia) -> str:
    """``<task code>-<kind>-<index>[-wm].<ext>``: the download name of a kept result."""
    ext = posixpath.splitext(item.file.name)[1]
    watermark = "-wm" if "watermark" in item.variant else ""
    return f"{task.code}-{item.kind}-{item.index}{watermark}{ext}"


def _storage_chunks(name: str):
    """The bytes of storage file ``name``, ``ZIP_CHUNK_BYTES`` at a time (never all at once)."""
    with default_storage.open(name, "rb") as handle:
        while chunk := handle.read(ZIP_CHUNK_BYTES):
            yield chunk


def task_media_zip(request: HttpRequest, team: Any, code: Any) -> HttpResponse:
    """GET /t/<team>/tasks/<code>/media.zip (``tasks-media-zip``): every kept result file of
    the task in one zip (``<task code>.zip``; entries named as the single downloads).

    Streamed with zipstream-ng, files stored uncompressed (images and videos are compressed
    already) and read from storage (disk or bucket) 1 MB at a time, so no file is held in
    memory; ``Content-Length`` is sent when every kept file's size is known. 404 when the
    task has no kept file (files missing from storage are left out); outsiders 404. Not cached (``private, no-store``).
    """
    task, _ = object_for_user(request, Task.objects.all(), team, code)
    rows = TaskMedia.objects.filter(task=task).order_by("kind", "index", "pk")
    # A row whose file went missing from storage is left out rather than breaking the stream.
    items = [m for m in rows if m.file and default_storage.exists(m.file.name)]
    if not items:
        raise Http404("Nothing of this task is kept yet.")
    sized = all(item.size is not None for item in items)
    archive = ZipStream(sized=sized)
    for item in items:
        archive.add(
            _storage_chunks(item.file.name),
            _media_filename(task, item),
            size=item.size if sized else None,
        )
    response = StreamingHttpResponse(archive, content_type="application/zip")
    if sized:
        response["Content-Length"] = str(len(archive))
    response["Content-Disposition"] = f'attachment; filename="{task.code}.zip"'
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
