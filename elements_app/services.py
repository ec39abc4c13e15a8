"""Services of elements: create (as a task; the one place element uploads are stored and the
create body is built), materialise on success, delete, presets sync, import from the
account's custom list, and where an element was used.

Delete, "Sync now" and import need Kling's answer; the views start them as vendor calls
(``klingweb.accounts.services.vendor_call_start``) and the jobs of ``elements_app.jobs`` run
the ``*_for_call`` functions below, so no request waits on Kling.

Vendor reference: KLING_API.md §5.4 and kling-docs/elements.txt. Elements are per Kling
account: an ``element_id`` is looked up, used and deleted on the account it was made on
(``Element.kling_account``).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from elements_app.models import Element, ElementStatus, PresetElement, ReferenceType, tags_encode
from klingweb.accounts.models import (
    KlingAccount,
    Team,
    VendorCall,
    VendorCallKind,
    operator_credentials_set,
)
from klingweb.accounts.services import (
    VendorCallRefused,
    account_for_team,
    kling_client_for,
    vendor_call_start,
)
from klingweb.kling import KlingError
from tasks_app.finder import tasks_pages
from tasks_app.inputs import NO_PUBLIC_ADDRESS, InputNeedsPublicAddress, inputs_by_url_available
from tasks_app.models import Family, Status, Task
from tasks_app.submission import task_queue
from tasks_app.uploads import upload_save

if TYPE_CHECKING:
    from klingweb.kling import KlingTask

log = logging.getLogger(__name__)

#: The vendor's "resource not found" (KLING_API.md §2): on delete, the element is gone there.
ELEMENT_UNKNOWN_CODE = 1203
#: How ``status_msg`` starts for an element removed because Kling no longer knew it.
ELEMENT_FORGOTTEN = "Kling no longer knew this element"


class ElementNotDeletable(Exception):
    """The element cannot be deleted now; ``str(exc)`` says why (for the user)."""


@dataclass(frozen=True)
class SyncReport:
    """Outcome of a presets sync: rows ``created``, ``updated`` (vendor data changed),
    ``unchanged``, and ``removed`` (no longer listed by the vendor)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0

    @property
    def seen(self) -> int:
        """Presets the vendor listed."""
        return self.created + self.updated + self.unchanged


@dataclass(frozen=True)
class ImportReport:
    """Outcome of an import: elements ``created`` in the team; skipped because already in
    the portal (``known``), made by the portal (``portal``, their task will bring them),
    ``deleted`` on Kling, or still ``unfinished`` there."""

    created: int = 0
    known: int = 0
    portal: int = 0
    deleted: int = 0
    unfinished: int = 0


# --- create --------------------------------------------------------------------------------

#: The upload slots of an element's form data and the storage folder (``kind``) of each.
_UPLOAD_KINDS = {"frontal_image": "image", "refer_images": "image", "video": "video"}


def element_uploads_store(*, data: dict, team: Team) -> list[str]:
    """Save the pending uploads of element form data once, with
    ``tasks_app.uploads.upload_save``, and put ``{"$file": name}`` in their place (``data``
    is changed in place).

    ``data``: ``ElementForm.cleaned_data`` (``frontal_image`` and ``video`` an
    ``UploadedFile`` or None, ``refer_images`` a list of them). Values already stored
    (``{"$file": name}``) are left alone, so a second call stores nothing. Returns the
    storage names saved by this call (to delete them again if queuing is refused).
    """
    saved: list[str] = []

    def store(value: Any, kind: str) -> Any:
        if isinstance(value, UploadedFile):
            name = upload_save(team=team, file=value, kind=kind)
            saved.append(name)
            return {"$file": name}
        return value

    for key, kind in _UPLOAD_KINDS.items():
        value = data.get(key)
        if isinstance(value, list):
            data[key] = [store(item, kind) for item in value]
        elif value:
            data[key] = store(value, kind)
    return saved


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _ref(value: Any) -> Any:
    """A body value for an input: ``{"$file": name}`` for a stored upload (a bare storage
    name is wrapped), an http(s) URL as is (the vendor fetches it)."""
    if isinstance(value, UploadedFile):
        raise ValueError("element_params_build needs stored uploads (element_uploads_store)")
    if _is_url(value):
        return value
    return {"$file": value} if isinstance(value, str) else value


def element_params_build(*, data: dict) -> dict:
    """The create body of ``POST /v1/general/advanced-custom-elements`` (KLING_API.md §5.4)
    from element form data whose uploads are stored (``element_uploads_store``): inputs as
    ``{"$file": name}``, given to Kling as URLs or Base64 at send time
    (``tasks_app.inputs.inputs_resolve``; the video always by URL); inputs given as http(s)
    URLs go as they are. Without ``callback_url`` /
    ``external_task_id`` (added when sending). Raises ``ValueError`` for an upload not
    stored yet.

    Shape: ``{"element_name", "element_description", "reference_type",
    "element_image_list": {"frontal_image": F, "refer_images": [{"image_url": F}, ...]}``
    or ``"element_video_list": {"refer_videos": [{"video_url": F}]}``, optional
    ``"element_voice_id"`` and ``"tag_list": [{"tag_id": "o_101"}, ...]}``.
    """
    body: dict[str, Any] = {
        "element_name": data["name"],
        "element_description": data["description"],
        "reference_type": data["reference_type"],
    }
    if data["reference_type"] == ReferenceType.IMAGE_REFER:
        body["element_image_list"] = {
            "frontal_image": _ref(data.get("frontal_image")),
            "refer_images": [
                {"image_url": _ref(image)} for image in data.get("refer_images") or []
            ],
        }
    else:
        body["element_video_list"] = {"refer_videos": [{"video_url": _ref(data.get("video"))}]}
    if data.get("voice_id"):
        body["element_voice_id"] = data["voice_id"]
    if data.get("tags"):
        body["tag_list"] = [{"tag_id": tag} for tag in data["tags"]]
    return body


def _file_label(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("$file", "")).rsplit("/", 1)[-1]
    if _is_url(value):
        return value.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1][:60] or value[:60]
    return getattr(value, "name", "") or ""


def element_describe(data: dict) -> tuple[str, str]:
    """``(prompt, summary)`` of element form data for the task lists: ``"name:
    description"`` and the inputs in words (≤ 200 characters)."""
    prompt = f"{data.get('name', '')}: {data.get('description', '')}"
    if data.get("reference_type") == ReferenceType.VIDEO_REFER:
        summary = f"Reference video: {_file_label(data.get('video'))}"
    else:
        refers = data.get("refer_images") or []
        summary = f"Frontal image: {_file_label(data.get('frontal_image'))} · {len(refers)} other angle(s)"
    return prompt, summary[:200]


def element_create(*, team: Team, user: Any, data: dict) -> Element:
    """Queue the task that creates a custom element, and the element row (``creating``).

    ``data``: ``ElementForm.cleaned_data`` (uploads as ``UploadedFile`` or already stored as
    ``{"$file": name}``; inputs given by URL as http(s) strings). Stores the uploads once (``element_uploads_store``), then in one
    transaction queues a ``Task`` of family ``element`` through
    ``tasks_app.submission.task_queue`` (budget check with the estimated units of Kling
    credit, status ``queued``, ``tasks_app.jobs.submit_task`` enqueued on commit; params =
    ``element_params_build``) and creates the ``Element`` linked to it, pointing at the same
    stored files. No Kling call here.

    Raises ``tasks_app.budgets.BudgetExceeded``: nothing is kept (the uploads saved by this
    call are deleted again); ``tasks_app.inputs.InputNeedsPublicAddress`` for a video
    reference when the portal has no public address (nothing stored or queued; the form
    refuses this first); a video given by URL needs none.
    """
    video_upload = data.get("reference_type") == ReferenceType.VIDEO_REFER and not _is_url(
        data.get("video")
    )
    if video_upload and not inputs_by_url_available():
        raise InputNeedsPublicAddress(NO_PUBLIC_ADDRESS)
    data = dict(data)
    prompt, summary = element_describe(data)  # with the names the person uploaded
    saved = element_uploads_store(data=data, team=team)
    try:
        params = element_params_build(data=data)
        with transaction.atomic():
            task = task_queue(
                team=team,
                user=user,
                family=Family.ELEMENT.value,
                params=params,
                prompt=prompt,
                summary=summary,
            )
            element = Element.objects.create(
                team=team,
                creator=user,
                task=task,
                kling_account_id=task.kling_account_id,
                name=data["name"],
                description=data["description"],
                reference_type=data["reference_type"],
                frontal_image=_name(data.get("frontal_image")),
                # Stored inputs only: one given by URL stays the vendor's (params).
                refer_images=[n for item in data.get("refer_images") or [] if (n := _name(item))],
                video=_name(data.get("video")),
                voice_id=data.get("voice_id") or "",
                tag_ids=tags_encode(list(data.get("tags") or [])),
                status=ElementStatus.CREATING,
                created_at=task.created_at,
            )
    except BaseException:
        for name in saved:
            default_storage.delete(name)
        raise
    return element


def _name(value: Any) -> str:
    """The storage name in ``{"$file": name}`` (``""`` for anything else)."""
    if isinstance(value, dict):
        return str(value.get("$file") or "")
    return ""


# --- materialise ---------------------------------------------------------------------------


def element_materialise(*, task: Task, remote: KlingTask) -> Element | None:
    """Make the task's element ready from ``remote.task_result.elements[0]`` (§5.4 result).

    Called by the family's ``on_succeed`` inside ``task_apply_remote``'s transaction (the
    task row is locked). Updates the ``Element`` linked to ``task`` — or creates it from the
    task's params when the task was made elsewhere (e.g. a generic task form) — with the
    vendor's ``element_id``, image/video lists, bound voice, tags, owner, and status
    ``succeed`` (``deleted`` if the vendor already says so). A success without any element
    marks the element ``failed`` with a message. Idempotent. Returns the element, or None
    when it could not be stored (logged; never breaks the task's transaction).
    """
    element = Element.objects.filter(task=task).first()
    if element is None:
        params = task.params or {}
        element = Element(
            team_id=task.team_id,
            creator_id=task.creator_id,
            task=task,
            kling_account_id=task.kling_account_id,
            name=str(params.get("element_name") or "Element")[:100],
            description=str(params.get("element_description") or "")[:500],
            reference_type=params.get("reference_type") or ReferenceType.IMAGE_REFER,
            imported=task.imported,
            created_at=task.created_at,
        )
    if element.kling_account_id is None:
        element.kling_account_id = task.kling_account_id
    if not remote.elements:
        element.status = ElementStatus.FAILED
        element.status_msg = "Kling reported success but returned no element."
    else:
        vendor = remote.elements[0]
        data = dict(vendor.raw or {})
        data.setdefault("element_id", vendor.element_id)
        element.vendor_apply(data)
        element.status = (
            ElementStatus.DELETED if vendor.status == "deleted" else ElementStatus.SUCCEED
        )
        element.status_msg = ""
    try:
        with transaction.atomic():
            element.save()
    except IntegrityError:
        # Another row (e.g. imported a moment ago) already holds this vendor element.
        log.warning(
            "task %s: element %s is already in the portal; not materialising it twice",
            task.pk,
            element.element_id,
        )
        return None
    return element


# --- delete --------------------------------------------------------------------------------


def element_can_delete(*, element: Element, user: Any, can_admin: bool) -> bool:
    """True when ``user`` may delete ``element``: team admins and owners, and its creator."""
    return can_admin or (element.creator_id is not None and element.creator_id == user.pk)


def _check_deletable(element: Element) -> None:
    status = element.effective_status
    if status == ElementStatus.DELETED:
        raise ElementNotDeletable("This element is already deleted.")
    if status == ElementStatus.CREATING:
        raise ElementNotDeletable(
            "This element is still being created; delete it once its task has finished."
        )


def element_delete(*, element: Element, user: Any) -> Element:
    """Delete ``element`` on Kling (``POST /v1/general/delete-elements``, §5.4) and mark it
    ``deleted`` (the row stays, with ``deleted_at``/``deleted_by``).

    An element that never reached Kling (failed) is marked deleted without a call; one on
    Kling is deleted from a job (``element_delete_for_call``). When Kling answers 1203
    (element not found: deleted elsewhere, or the account changed) the element is removed
    from the library all the same, with the vendor's answer in ``status_msg``. Raises
    ``ElementNotDeletable`` (already deleted, or still being created) and
    ``klingweb.kling.KlingError`` when the vendor refuses otherwise — in both cases nothing
    changes.
    The caller checks permissions (``element_can_delete``).
    """
    _check_deletable(element)
    fields: dict[str, Any] = {}
    if element.element_id:
        account = element.kling_account or account_for_team(team=element.team)
        try:
            kling_client_for(account).delete_element(element.element_id)
        except KlingError as exc:
            if exc.code != ELEMENT_UNKNOWN_CODE:
                raise
            # Kling no longer knows it (deleted elsewhere, another account): nothing is left
            # to delete there, so it leaves the library; the row stays for the record.
            request_id = f", request_id {exc.request_id}" if exc.request_id else ""
            fields["status_msg"] = (
                f"{ELEMENT_FORGOTTEN} ({exc.code}{request_id}); removed from the library."
            )
    now = timezone.now()
    Element.objects.filter(pk=element.pk).exclude(status=ElementStatus.DELETED).update(
        status=ElementStatus.DELETED, deleted_at=now, deleted_by=user, updated_at=now, **fields
    )
    element.refresh_from_db()
    return element


def element_delete_start(*, element: Element, user: Any) -> VendorCall | None:
    """Ask for ``element`` to be deleted, without waiting for Kling.

    An element that never reached Kling (no ``element_id``, e.g. failed) is marked
    ``deleted`` at once and None is returned. Otherwise the "Element delete" vendor call is
    started (or the running one joined) and returned; the job
    ``elements_app.jobs.delete_element`` then runs ``element_delete_for_call``. Raises
    ``ElementNotDeletable`` (already deleted, still being created): nothing changes. The
    caller checks permissions (``element_can_delete``).
    """
    _check_deletable(element)
    if not element.element_id:
        element_delete(element=element, user=user)
        return None
    call, _started = vendor_call_start(
        team=element.team,
        kind=VendorCallKind.ELEMENT_DELETE,
        subject=str(element.code),
        user=user,
        job="elements_app.jobs.delete_element",
    )
    return call


def element_delete_for_call(*, call: VendorCall) -> dict:
    """The work of an "Element delete" call: ``element_delete`` of the team's element whose
    code is ``call.subject``, by ``call.created_by``. Returns ``{"summary", "next_url",
    "next_label"}``. Raises ``VendorCallRefused`` (element gone, already deleted) and what
    ``element_delete`` raises (``KlingError``: nothing changes)."""
    element = Element.objects.filter(team_id=call.team_id, code=call.subject).first()
    if element is None:
        raise VendorCallRefused("This element no longer exists.")
    try:
        element_delete(element=element, user=call.created_by)
    except ElementNotDeletable as exc:
        raise VendorCallRefused(str(exc)) from None
    summary = f"Element “{element.name}” deleted on Kling."
    if element.status_msg.startswith(ELEMENT_FORGOTTEN):
        summary = f"Element “{element.name}”: {element.status_msg}"
    return {
        "summary": summary,
        "next_url": reverse("elements-list", kwargs={"team": call.team.code}),
        "next_label": "Back to the library",
    }


# --- vendor lists --------------------------------------------------------------------------


def _element_dicts(task: KlingTask) -> list[dict]:
    out = []
    for vendor in task.elements:
        data = dict(vendor.raw or {})
        data.setdefault("element_id", vendor.element_id)
        data.setdefault("status", vendor.status)
        data.setdefault("owned_by", vendor.owned_by)
        out.append(data)
    return out


def presets_sync(*, account: KlingAccount) -> SyncReport:
    """Refresh the ``PresetElement`` cache from the vendor's presets list
    (``GET /v1/general/advanced-presets-elements``, all pages of up to 500 through
    ``tasks_app.finder.tasks_pages``) read with ``account``.

    Idempotent: rows are matched by ``element_id`` and updated in place; a second sync with
    the same vendor data changes nothing but ``synced_at``. Presets no longer listed get
    ``removed_at`` (only after a complete, non-empty listing). All pages are read before
    anything is written, so a failed read leaves the cache as it was.
    Raises ``klingweb.kling.KlingError`` (vendor or network failure).
    """
    client = kling_client_for(account)
    tasks = [task for page in tasks_pages(client, "preset_elements") for task in page]
    now = timezone.now()
    created = updated = unchanged = removed = 0
    seen: set[str] = set()
    with transaction.atomic():
        existing = {p.element_id: p for p in PresetElement.objects.select_for_update()}
        for task in tasks:
            for data in _element_dicts(task):
                element_id = str(data.get("element_id") or "")
                if not element_id or element_id in seen:
                    continue
                seen.add(element_id)
                preset = existing.get(element_id)
                if preset is None:
                    preset = PresetElement(element_id=element_id, first_seen_at=now)
                    created += 1
                elif preset.raw == data and preset.removed_at is None:
                    unchanged += 1
                    continue
                else:
                    updated += 1
                preset.vendor_apply(data)
                preset.status = str(data.get("status") or "")
                preset.synced_at = now
                preset.removed_at = None
                preset.save()
        PresetElement.objects.filter(element_id__in=seen).update(synced_at=now)
        if seen:
            removed = (
                PresetElement.objects.filter(removed_at__isnull=True)
                .exclude(element_id__in=seen)
                .update(removed_at=now)
            )
    return SyncReport(created=created, updated=updated, unchanged=unchanged, removed=removed)


def presets_sync_any() -> SyncReport | None:
    """Sync the presets with the first account that answers: the operator default (when
    ``KLING_API_KEY`` or ``KLING_ACCESS_KEY`` is set), then teams' own accounts that are not paused. The presets
    are the vendor's, the same for every account, so one successful read is enough.

    Returns None when no account is configured; re-raises the last ``KlingError`` when every
    account failed. Used by the periodic job ``elements_app.jobs.sync_presets``.
    """
    from klingweb.kling import KlingError

    accounts: list[KlingAccount] = []
    if operator_credentials_set():
        accounts.append(KlingAccount.objects.operator_default())
    accounts.extend(
        KlingAccount.objects.with_credentials().filter(paused_at__isnull=True).order_by("pk")
    )
    last_error: Exception | None = None
    for account in accounts:
        try:
            return presets_sync(account=account)
        except KlingError as exc:
            log.warning("presets sync with account %s failed: %s", account.pk, exc)
            last_error = exc
    if last_error is not None:
        raise last_error
    return None


def _portal_known(tasks: list[KlingTask]) -> set[str]:
    """The vendor ``task_id``s among ``tasks`` that the portal has a ``Task`` for: by
    ``task_id`` (sent or found by ``kling_sync``) or by ``external_task_id`` = a task code."""
    codes: dict[str, str] = {}
    for remote in tasks:
        try:
            codes[str(uuid.UUID(str(remote.external_task_id)))] = remote.task_id
        except (TypeError, ValueError):
            continue
    task_ids = [remote.task_id for remote in tasks if remote.task_id]
    known: set[str] = set()
    rows = Task.objects.filter(Q(task_id__in=task_ids) | Q(code__in=list(codes)))
    for task_id, code in rows.values_list("task_id", "code"):
        if task_id:
            known.add(task_id)
        if str(code) in codes:
            known.add(codes[str(code)])
    return known


def elements_import(*, team: Team, user: Any) -> ImportReport:
    """Import into ``team`` the custom elements of the team's Kling account that were made
    outside the portal (``GET /v1/general/advanced-custom-elements``, all pages of up to 500
    through ``tasks_app.finder.tasks_pages``, §5.4). Runs in a job (``elements_import_for_call``).

    Idempotent by ``element_id``: an element already in the portal (any team, same account)
    is skipped, as are elements of tasks the portal knows (sent by it, matched by
    ``external_task_id``, or imported by ``kling_sync``, by ``task_id``: their task
    brings them), elements the vendor marks ``deleted``,
    presets (``owned_by == "kling"``) and tasks not finished successfully. Imported rows have
    status ``succeed``, ``imported=True`` and no creator or task.
    Raises ``klingweb.kling.KlingError`` (nothing imported).
    """
    account = account_for_team(team=team)
    client = kling_client_for(account)
    tasks = [task for page in tasks_pages(client, Family.ELEMENT) for task in page]
    portal_tasks = _portal_known(tasks)
    known = set(
        Element.objects.filter(kling_account=account)
        .exclude(element_id="")
        .values_list("element_id", flat=True)
    )
    counts = {"created": 0, "known": 0, "portal": 0, "deleted": 0, "unfinished": 0}
    now = timezone.now()
    with transaction.atomic():
        for task in tasks:
            elements = _element_dicts(task)
            if task.task_status != Status.SUCCEED:
                counts["unfinished"] += max(1, len(elements))
                continue
            if task.task_id in portal_tasks:
                counts["portal"] += len(elements)
                continue
            for data in elements:
                element_id = str(data.get("element_id") or "")
                if not element_id or data.get("owned_by") == "kling":
                    continue
                if data.get("status") == "deleted":
                    counts["deleted"] += 1
                    continue
                if element_id in known:
                    counts["known"] += 1
                    continue
                element = Element(
                    team=team,
                    kling_account=account,
                    imported=True,
                    status=ElementStatus.SUCCEED,
                    created_at=task.created_at or now,
                )
                element.vendor_apply(data)
                try:
                    with transaction.atomic():
                        element.save()
                except IntegrityError:
                    counts["known"] += 1
                else:
                    counts["created"] += 1
                known.add(element_id)
    log.info("team %s: elements import by %s: %s", team.pk, getattr(user, "pk", None), counts)
    return ImportReport(**counts)


def presets_sync_start(*, team: Team, user: Any) -> VendorCall:
    """Start the "Sync now" vendor call of ``team`` (or join the running one); the job
    ``elements_app.jobs.sync_presets_now`` runs ``presets_sync_for_call``. No Kling call."""
    call, _started = vendor_call_start(
        team=team,
        kind=VendorCallKind.PRESETS_SYNC,
        user=user,
        job="elements_app.jobs.sync_presets_now",
    )
    return call


def presets_sync_for_call(*, call: VendorCall) -> dict:
    """The work of a "Sync now" call: ``presets_sync`` with the team's Kling account.
    Returns ``{"summary", "created", "updated", "unchanged", "removed", "next_url",
    "next_label"}``. Raises what ``presets_sync`` and ``account_for_team`` raise."""
    report = presets_sync(account=account_for_team(team=call.team))
    return {
        "summary": (
            f"Presets synced: {report.created} new, {report.updated} updated, "
            f"{report.unchanged} unchanged, {report.removed} no longer offered."
        ),
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "removed": report.removed,
        "next_url": reverse("elements-presets", kwargs={"team": call.team.code}),
        "next_label": "Show the presets",
    }


def elements_import_start(*, team: Team, user: Any) -> VendorCall:
    """Start the "Elements import" vendor call of ``team`` (or join the running one); the
    job ``elements_app.jobs.import_elements`` runs ``elements_import_for_call``."""
    call, _started = vendor_call_start(
        team=team,
        kind=VendorCallKind.ELEMENTS_IMPORT,
        user=user,
        job="elements_app.jobs.import_elements",
    )
    return call


def elements_import_for_call(*, call: VendorCall) -> dict:
    """The work of an "Elements import" call: ``elements_import`` into ``call.team``.
    Returns ``{"summary", "created", "known", "portal", "deleted", "unfinished",
    "next_url", "next_label"}``. Raises what ``elements_import`` raises (nothing imported)."""
    report = elements_import(team=call.team, user=call.created_by)
    return {
        "summary": (
            f"Imported {report.created} element(s); {report.known} already in the portal, "
            f"{report.deleted} deleted on Kling, {report.portal + report.unfinished} "
            "made by the portal or not finished."
        ),
        "created": report.created,
        "known": report.known,
        "portal": report.portal,
        "deleted": report.deleted,
        "unfinished": report.unfinished,
        "next_url": reverse("elements-list", kwargs={"team": call.team.code}),
        "next_label": "Open the library",
    }


# --- use -----------------------------------------------------------------------------------


def _omni_usages(element: Element) -> list[int]:
    """Primary keys of the team's Kling 3.0 Omni tasks whose ``contents[]`` hold
    ``{type: element, element_id: <element's id>}`` (KLING_API_2026.md §4.5)."""
    if not element.element_id:
        return []
    candidates = Task.objects.filter(
        team_id=element.team_id,
        family=Family.OMNI_VIDEO_3_0,
        params__icontains=element.element_id,  # a cheap prefilter; checked exactly below
    ).values_list("pk", "params")
    found = []
    for pk, params in candidates:
        for item in (params or {}).get("contents") or []:
            if (
                isinstance(item, dict)
                and item.get("type") == "element"
                and str(item.get("element_id")) == element.element_id
            ):
                found.append(pk)
                break
    return found


def element_usages(*, element: Element) -> QuerySet[Task]:
    """The team's tasks that used ``element``: AI multi-shot tasks whose
    ``element_frontal_image`` (§5.1) is the element's vendor frontal-image URL or its stored
    frontal image (``{"$file": name}``), and Kling 3.0 Omni tasks with it in their
    ``element_list`` (``_omni_usages``). Newest first."""
    multi = Q()
    url = element.vendor_frontal_image_url
    if url:
        multi |= Q(params__element_frontal_image=url)
    if element.frontal_image:
        multi |= Q(**{"params__element_frontal_image__$file": element.frontal_image.name})
    match = Q(family=Family.MULTI_SHOT) & multi if multi else Q(pk__in=[])
    omni = _omni_usages(element)
    if omni:
        match |= Q(pk__in=omni)
    return Task.objects.filter(team_id=element.team_id).filter(match).order_by("-created_at", "-id")
