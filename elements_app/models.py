"""Elements: reusable subjects (characters, items, scenes) kept by Kling per account.

Two models, on purpose:

- ``Element``: a team's custom element. Made by a task of family ``element`` (the row exists
  from the moment the form is sent, status ``creating``) or imported from the account's
  custom list. Its inputs (frontal image, other-angle images, video) are kept in the
  portal's storage; the vendor's copies are described by ``element_image_list`` /
  ``element_video_list``. A deleted element keeps its row (status ``deleted``) for history.
- ``PresetElement``: a cache of the vendor's ready-made elements (owned by ``kling``). Presets
  belong to no team, have no creator, task, stored files or deletion, and are refreshed by a
  sync keyed on ``element_id``; keeping them apart keeps ``Element``'s team scoping and
  constraints simple.

Vendor reference: KLING_API.md §5.4, kling-docs/elements.txt.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from klingweb.security import vendor_urls_http_only


class ElementTag(models.TextChoices):
    """The vendor's element tags (``tag_list[].tag_id``), KLING_API.md §5.4."""

    HOTTEST = "o_101", "Hottest"
    CHARACTER = "o_102", "Character"
    ANIMAL = "o_103", "Animal"
    ITEM = "o_104", "Item"
    COSTUME = "o_105", "Costume"
    SCENE = "o_106", "Scene"
    EFFECT = "o_107", "Effect"
    OTHERS = "o_108", "Others"


TAG_NAMES: dict[str, str] = dict(ElementTag.choices)


class ReferenceType(models.TextChoices):
    """How the element's look is defined: several images, or one video of a real person."""

    IMAGE_REFER = "image_refer", "Images"
    VIDEO_REFER = "video_refer", "Video"


class ElementStatus(models.TextChoices):
    """Portal status of an element.

    ``creating``: its task is queued or running. ``succeed``: ready to use (the vendor's
    word). ``failed``: the task failed or was refused (see ``Element.effective_status``).
    ``deleted``: removed on Kling; the row stays for history.
    """

    CREATING = "creating", "Creating"
    SUCCEED = "succeed", "Ready"
    FAILED = "failed", "Failed"
    DELETED = "deleted", "Deleted"


#: Task statuses (``tasks_app.models.Status`` values) that mean the element will never exist.
_TASK_FAILED = ("failed", "error", "cancelled")


def tags_encode(tag_ids: list[str]) -> str:
    """Store a list of tag ids as ``",o_101,o_104,"`` (see ``Element.tag_ids``)."""
    clean = [t.strip().replace(",", "") for t in tag_ids if t and t.strip()]
    return f",{','.join(dict.fromkeys(clean))}," if clean else ""


def tags_decode(value: str) -> list[str]:
    """The tag ids stored by ``tags_encode``, in order."""
    return [t for t in (value or "").split(",") if t]


def tags_labelled(tag_ids: list[str]) -> list[tuple[str, str]]:
    """``[(tag_id, name)]`` with the vendor's names; an unknown id is its own name."""
    return [(t, TAG_NAMES.get(t, t)) for t in tag_ids]


class VendorElementFields(models.Model):
    """Fields both kinds of element take from a vendor element object (§5.4 result).

    ``element_image_list`` / ``element_video_list``: the vendor's dicts as returned (URLs of
    its copies). ``voice_*``: the bound voice (``element_voice_info``); ``voice_trial_url``
    is an audio sample. ``tag_ids``: comma-wrapped tag ids (``",o_101,o_104,"``) so a tag
    filter is a portable substring match on SQLite and PostgreSQL. ``raw``: the whole vendor
    element dict, unknown fields kept.
    """

    element_id = models.CharField(max_length=100, blank=True, db_index=True)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True)
    reference_type = models.CharField(
        max_length=12, choices=ReferenceType.choices, default=ReferenceType.IMAGE_REFER
    )
    element_image_list = models.JSONField(default=dict, blank=True)
    element_video_list = models.JSONField(default=dict, blank=True)
    voice_id = models.CharField(max_length=100, blank=True)
    voice_name = models.CharField(max_length=200, blank=True)
    voice_trial_url = models.URLField(max_length=2000, blank=True)
    voice_owned_by = models.CharField(max_length=100, blank=True)
    tag_ids = models.CharField(max_length=200, blank=True)
    owned_by = models.CharField(max_length=100, blank=True, help_text="'kling' or the creator id")
    raw = models.JSONField(default=dict, blank=True)

    class Meta:
        abstract = True

    @property
    def tags(self) -> list[tuple[str, str]]:
        """``[(tag_id, name)]``, e.g. ``[("o_102", "Character")]``."""
        return tags_labelled(tags_decode(self.tag_ids))

    @property
    def vendor_frontal_image_url(self) -> str:
        """The vendor's URL of the frontal image (``element_image_list.frontal_image``), or
        the first frame/cover the vendor gives for a video element; ``""`` if none."""
        images = self.element_image_list or {}
        url = images.get("frontal_image")
        if isinstance(url, dict):
            url = url.get("image_url") or url.get("url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            return url
        videos = (self.element_video_list or {}).get("refer_videos") or []
        for video in videos:
            if isinstance(video, dict):
                cover = video.get("cover_url") or video.get("cover_image_url")
                if isinstance(cover, str) and cover.startswith(("http://", "https://")):
                    return cover
        return ""

    @property
    def vendor_video_url(self) -> str:
        """The vendor's URL of the reference video, ``""`` if none."""
        for video in (self.element_video_list or {}).get("refer_videos") or []:
            if isinstance(video, dict) and isinstance(video.get("video_url"), str):
                url = video["video_url"]
                if url.startswith(("http://", "https://")):
                    return url
        return ""

    def vendor_apply(self, data: dict[str, Any]) -> None:
        """Copy the fields of a vendor element dict (§5.4 ``task_result.elements[]``) onto
        this row. Does not save; does not touch ``status`` (callers decide). URL fields that
        are not http(s) are dropped first (``klingweb.security.vendor_urls_http_only``)."""
        data = vendor_urls_http_only(data, where=f"element {data.get('element_id')}")
        voice = data.get("element_voice_info") or {}
        tags = [
            str(t.get("tag_id")) if isinstance(t, dict) else str(t)
            for t in data.get("tag_list") or []
        ]
        element_id = data.get("element_id")
        if element_id not in (None, ""):
            self.element_id = str(element_id)
        self.name = str(data.get("element_name") or self.name or "")[:100]
        self.description = str(data.get("element_description") or self.description or "")[:500]
        if data.get("reference_type") in ReferenceType.values:
            self.reference_type = data["reference_type"]
        self.element_image_list = data.get("element_image_list") or {}
        self.element_video_list = data.get("element_video_list") or {}
        self.voice_id = str(voice.get("voice_id") or "")
        self.voice_name = str(voice.get("voice_name") or "")
        self.voice_trial_url = str(voice.get("trial_url") or "")
        self.voice_owned_by = str(voice.get("owned_by") or "")
        self.tag_ids = tags_encode(tags)
        self.owned_by = str(data.get("owned_by") or "")
        self.raw = data


class ElementQuerySet(models.QuerySet):
    """Queries over a team's elements."""

    def with_status(self, status: str) -> ElementQuerySet:
        """Elements whose ``effective_status`` is ``status`` (an ``ElementStatus`` value).

        ``creating`` rows whose task failed or was refused count as ``failed``.
        """
        task_failed = Q(status=ElementStatus.CREATING, task__status__in=_TASK_FAILED)
        if status == ElementStatus.FAILED:
            return self.filter(Q(status=ElementStatus.FAILED) | task_failed)
        if status == ElementStatus.CREATING:
            return self.filter(status=ElementStatus.CREATING).exclude(task_failed)
        return self.filter(status=status)

    def with_tag(self, tag_id: str) -> ElementQuerySet:
        """Elements carrying tag ``tag_id`` (e.g. ``"o_102"``)."""
        return self.filter(tag_ids__contains=f",{tag_id},")

    def visible(self) -> ElementQuerySet:
        """Everything but deleted elements (the library's default)."""
        return self.exclude(status=ElementStatus.DELETED)


class Element(VendorElementFields):
    """A team's custom element (KLING_API.md §5.4).

    ``task``: the ``element`` task that created it (null for imported ones).
    ``kling_account``: the account the element lives on (its ``element_id`` means nothing on
    another account; delete goes there). ``frontal_image`` / ``video``: storage names of the
    uploaded inputs (as saved by ``tasks_app.uploads.upload_save``); ``refer_images``: a list
    of such names. ``status_msg``: why it failed, when the portal knows.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="elements")
    creator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="kling_elements",
    )
    task = models.OneToOneField(
        "tasks_app.Task",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="created_element",
    )
    kling_account = models.ForeignKey(
        "accounts.KlingAccount", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    frontal_image = models.FileField(upload_to="elements/", blank=True, max_length=300)
    refer_images = models.JSONField(default=list, blank=True, help_text="Storage names.")
    video = models.FileField(upload_to="elements/", blank=True, max_length=300)
    status = models.CharField(
        max_length=10, choices=ElementStatus.choices, default=ElementStatus.CREATING
    )
    status_msg = models.TextField(blank=True)
    imported = models.BooleanField(default=False, help_text="Imported from the custom list.")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = ElementQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kling_account", "element_id"],
                condition=~Q(element_id=""),
                name="one_row_per_vendor_element",
            )
        ]
        indexes = [
            models.Index(fields=["team", "status", "-created_at"], name="element_team_status"),
            models.Index(fields=["team", "-created_at"], name="element_team_created"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.element_id or self.code})"

    @property
    def effective_status(self) -> str:
        """``status``, except a ``creating`` element whose task failed or was refused reads
        ``failed`` (the failure is learnt by the task, which tasks_app owns; a cancelled
        task counts as failed: the element will never exist)."""
        if (
            self.status == ElementStatus.CREATING
            and self.task_id is not None
            and self.task.status in _TASK_FAILED
        ):
            return ElementStatus.FAILED
        return self.status

    @property
    def effective_status_label(self) -> str:
        """Human label of ``effective_status``."""
        return ElementStatus(self.effective_status).label

    @property
    def badge_class(self) -> str:
        """CSS badge class for ``effective_status`` (reuses the task badges of app.css)."""
        return {
            ElementStatus.CREATING: "badge-processing",
            ElementStatus.SUCCEED: "badge-succeed",
            ElementStatus.FAILED: "badge-failed",
            ElementStatus.DELETED: "badge-deleted",
        }[self.effective_status]

    @property
    def failure_reason(self) -> str:
        """Why the element failed: ``status_msg``, else the task's vendor message or error."""
        if self.status_msg:
            return self.status_msg
        if self.task_id is not None:
            return self.task.task_status_msg or self.task.error_message
        return ""

    @property
    def is_usable(self) -> bool:
        """True when the element can be used in a new task (ready on Kling)."""
        return self.status == ElementStatus.SUCCEED

    def refer_image_names(self) -> list[str]:
        """Storage names of the other-angle images (possibly empty)."""
        return [name for name in self.refer_images or [] if isinstance(name, str)]


class PresetElement(VendorElementFields):
    """A cached vendor preset element (``GET /v1/general/advanced-presets-elements``).

    Synced by ``elements_app.services.presets_sync``: updated in place by ``element_id``;
    ``removed_at`` is set when a complete sync no longer lists it (cleared if it returns).
    ``status``: the vendor's element status (``succeed``).
    """

    status = models.CharField(max_length=20, blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    synced_at = models.DateTimeField(default=timezone.now)
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["element_id"], name="one_preset_per_element_id")
        ]

    def __str__(self) -> str:
        return f"{self.name} (preset {self.element_id})"
