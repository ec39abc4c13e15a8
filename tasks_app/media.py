"""Keeping results: copy a succeeded task's images and videos into the portal's storage.

The vendor deletes generated media 30 days after generation (KLING_API.md §4), so every
result URL of a succeeded task is downloaded into Django's default storage under
``results/<team code>/<task code>/``. Only URLs found in the vendor's own answers (the task's
stored ``result``) are ever fetched, and only over http(s). Downloads stream to a temporary
file (never a whole file in memory), check the Content-Type and the size
(``settings.MEDIA_MAX_BYTES``), and are retried with backoff: a few quick tries inside the job,
then later by the sweep (``media_sweep``) using ``TaskMedia.attempts``/``next_attempt_at``.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from urllib.parse import urljoin, urlsplit
from uuid import UUID

import httpx
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from klingweb.kling.backoff import backoff_delay
from klingweb.security import (
    FetchRefused,
    Origin,
    PinnedTransport,
    is_http_url,
    kling_origins,
)
from tasks_app.models import CONFIRM_WINDOW, MediaKind, Status, Task, TaskMedia

log = logging.getLogger(__name__)

IMAGE_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
VIDEO_TYPES = {"video/mp4": ".mp4", "video/quicktime": ".mov"}
ALLOWED_TYPES = {MediaKind.IMAGE: IMAGE_TYPES, MediaKind.VIDEO: VIDEO_TYPES}
IMAGE_VARIANTS = ("url", "url_1", "url_2", "url_3")
VIDEO_VARIANTS = ("url", "watermark_url")
VENDOR_RETENTION = timedelta(days=30)
CONNECT_TIMEOUT = 5.0  # seconds
READ_TIMEOUT = 30.0  # seconds between bytes
DOWNLOAD_SECONDS = 600.0  # seconds for a whole download (a trickling server is cut off)
CHUNK_BYTES = 64 * 1024
MAX_REDIRECTS = 3
QUICK_TRIES = 3  # tries inside one job, 1 s then 2 s apart
MAX_ATTEMPTS = 10  # tries overall before giving up
RETRY_BASE = 60.0  # seconds; doubles per attempt, capped at RETRY_MAX
RETRY_MAX = 6 * 3600.0


class MediaRejected(Exception):
    """Permanent: bad scheme, wrong Content-Type, too large, or a 4xx answer."""


class MediaFetchError(Exception):
    """Transient: timeout, network error, 5xx/408/429; retried later."""


@dataclass(frozen=True)
class MediaSlot:
    """One result URL of a task: ``kind`` image|video, ``index``, ``variant`` (the vendor's
    field name: url, url_1..url_3, watermark_url), ``vendor_id`` (video id), ``duration`` (s)."""

    kind: str
    index: int
    variant: str
    url: str
    vendor_id: str = ""
    duration: Decimal | None = None


def _decimal(value) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except InvalidOperation:
        return None


def media_slots(task: Task) -> list[MediaSlot]:
    """Every result URL of ``task.result`` (the vendor's ``task_result``): images
    ``{index, url}`` or ``{index, url_1, url_2, url_3}``; videos ``{id, url, watermark_url,
    duration}`` (index = position). Elements' reference images are not results."""
    result = task.result or {}
    slots: list[MediaSlot] = []
    for position, image in enumerate(result.get("images") or []):
        if not isinstance(image, dict):
            continue
        try:
            index = int(image.get("index", position))
        except (TypeError, ValueError):
            index = position
        for variant in IMAGE_VARIANTS:
            url = image.get(variant)
            if isinstance(url, str) and url:
                slots.append(MediaSlot(MediaKind.IMAGE, index, variant, url))
    for position, video in enumerate(result.get("videos") or []):
        if not isinstance(video, dict):
            continue
        for variant in VIDEO_VARIANTS:
            url = video.get(variant)
            if isinstance(url, str) and url:
                slots.append(
                    MediaSlot(
                        MediaKind.VIDEO,
                        position,
                        variant,
                        url,
                        vendor_id=str(video.get("id") or ""),
                        duration=_decimal(video.get("duration")),
                    )
                )
    return slots


def vendor_expires_at(task: Task) -> datetime | None:
    """When the vendor deletes the task's media: 30 days after generation."""
    since = task.vendor_created_at or task.finished_at
    return since + VENDOR_RETENTION if since else None


def _storage_name(task: Task, media: TaskMedia, ext: str) -> str:
    return f"results/{task.team.code}/{task.code}/{media.kind}-{media.index}-{media.variant}{ext}"


def media_trusted_origins(task: Task) -> frozenset[Origin]:
    """Origins (scheme, host, port) of the Kling base URLs that concern ``task`` (the
    operator default's, the operator's ``KLING_CUSTOM_BASE_URLS`` and the task's account):
    result media there may live on private addresses (the sandbox). Any other origin — also
    another port of the same host — must be public (``klingweb.security.fetch_address``)."""
    extra = [task.kling_account.base_url] if task.kling_account_id is not None else []
    return kling_origins(*extra)


def media_download(
    *,
    url: str,
    kind: str,
    max_bytes: int | None = None,
    trusted_origins: frozenset[Origin] | None = None,
):
    """Stream ``url`` into a temporary file; return ``(file, content_type, size)``.

    ``trusted_origins``: when given, a URL (first request or redirect) whose (scheme, host,
    port) is not one of them must resolve to public addresses only (``MediaRejected``
    otherwise); ``None`` skips that check. Either way each hop's host is resolved once and
    the connection made to that address (``klingweb.security.PinnedTransport``). Redirects
    (at most ``MAX_REDIRECTS``) are followed here, each hop checked again.

    The caller closes the returned ``NamedTemporaryFile`` (deleted on close). Raises
    ``MediaRejected`` (non-http(s) URL, 4xx, Content-Type not allowed for ``kind``, more than
    ``max_bytes`` bytes — checked on Content-Length first, then on the running count) or
    ``MediaFetchError`` (timeout, network, 5xx/408/429, or the whole download taking more
    than ``DOWNLOAD_SECONDS``).
    """
    max_bytes = max_bytes if max_bytes is not None else settings.MEDIA_MAX_BYTES
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise MediaRejected(f"refusing to fetch a non-http(s) URL ({parts.scheme or 'none'})")
    timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    tmp = tempfile.NamedTemporaryFile(prefix="klingweb-media-")  # noqa: SIM115 - returned
    try:
        with httpx.Client(timeout=timeout, transport=PinnedTransport(trusted_origins)) as client:
            response = _get_following_redirects(client, url)
            try:
                content_type, size = _read_body(response, ALLOWED_TYPES[kind], max_bytes, tmp)
            finally:
                response.close()
        tmp.flush()
        tmp.seek(0)
        return tmp, content_type, size
    except FetchRefused as exc:
        tmp.close()
        raise MediaRejected(str(exc)) from None
    except httpx.UnsupportedProtocol as exc:
        tmp.close()
        raise MediaRejected(str(exc)) from None
    except httpx.HTTPError as exc:
        tmp.close()
        raise MediaFetchError(f"{type(exc).__name__}: {exc}") from None
    except BaseException:
        tmp.close()
        raise


def _get_following_redirects(client: httpx.Client, url: str) -> httpx.Response:
    """GET ``url`` (streamed), following at most ``MAX_REDIRECTS`` redirects; every hop
    must be http(s) and goes through the client's ``PinnedTransport`` checks again."""
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        response = client.send(client.build_request("GET", current), stream=True)
        if not response.is_redirect:
            return response
        location = response.headers.get("location", "")
        response.close()
        current = urljoin(current, location)
        if urlsplit(current).scheme not in ("http", "https"):
            raise MediaRejected(f"refusing a redirect to a non-http(s) URL ({current[:40]!r})")
    raise MediaRejected(f"more than {MAX_REDIRECTS} redirects")


def _read_body(
    response: httpx.Response, allowed: dict[str, str], max_bytes: int, tmp
) -> tuple[str, int]:
    """Check status, Content-Type (one of ``allowed``) and size of ``response``, and stream
    its body into ``tmp``; returns ``(content_type, bytes written)``."""
    status = response.status_code
    if status in (408, 429) or status >= 500:
        raise MediaFetchError(f"HTTP {status}")
    if status != 200:
        raise MediaRejected(f"HTTP {status}")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in allowed:
        raise MediaRejected(f"unexpected Content-Type {content_type or 'none'!r}")
    length = response.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise MediaRejected(f"{int(length)} bytes is more than the {max_bytes} allowed")
    size = 0
    deadline = time.monotonic() + DOWNLOAD_SECONDS
    # As the bytes arrive (no chunk_size: httpx would wait to fill it), so the
    # deadline is checked after every read, not every 64 kB.
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise MediaRejected(f"more than the {max_bytes} bytes allowed")
        if time.monotonic() > deadline:
            raise MediaFetchError(f"the download took more than {DOWNLOAD_SECONDS:g} s")
        tmp.write(chunk)
    return content_type, size


def _retry_delay(attempts: int) -> float:
    """Seconds before download try ``attempts + 1``: ``RETRY_BASE`` doubling, capped at
    ``RETRY_MAX`` (``klingweb.kling.backoff.backoff_delay``, no jitter)."""
    return backoff_delay(attempts, base=RETRY_BASE, cap=RETRY_MAX)


@dataclass
class KeepReport:
    """What ``media_keep`` did: files ``kept`` now, ``already`` kept, ``failed`` this time
    (to be retried), ``gave_up`` (permanent), ``busy`` (another worker holds the download)."""

    kept: int = 0
    already: int = 0
    failed: int = 0
    gave_up: int = 0
    busy: int = 0


def _ensure_rows(task: Task) -> list[TaskMedia]:
    rows = []
    for slot in media_slots(task):
        lookup = {"task": task, "kind": slot.kind, "index": slot.index, "variant": slot.variant}
        defaults = {"source_url": slot.url, "vendor_id": slot.vendor_id, "duration": slot.duration}
        try:
            with transaction.atomic():
                media, _ = TaskMedia.objects.get_or_create(**lookup, defaults=defaults)
        except IntegrityError:  # created by a concurrent job
            media = TaskMedia.objects.get(**lookup)
        rows.append(media)
    return rows


def _download_lease() -> timedelta:
    """How long one download claim lasts: ``settings.MEDIA_DOWNLOAD_LEASE_SECONDS`` (s, 600
    by default). A worker killed mid-download holds the file this long, then another worker
    (or the sweep) takes it."""
    return timedelta(seconds=settings.MEDIA_DOWNLOAD_LEASE_SECONDS)


def _keep_one(task: Task, media: TaskMedia, report: KeepReport, sleep=time.sleep) -> None:
    now = timezone.now()
    expires = vendor_expires_at(task)
    claimed = (
        TaskMedia.objects.filter(pk=media.pk, kept_at__isnull=True, gave_up=False)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(next_attempt_at=now + _download_lease(), attempts=F("attempts") + 1)
    )
    if not claimed:
        report.busy += 1
        return
    media.refresh_from_db(fields=["attempts"])
    error: Exception | None = None
    for try_number in range(QUICK_TRIES):
        if try_number:
            sleep(float(2 ** (try_number - 1)))
        try:
            tmp, content_type, size = media_download(
                url=media.source_url, kind=media.kind, trusted_origins=media_trusted_origins(task)
            )
        except MediaRejected as exc:
            error = exc
            break
        except MediaFetchError as exc:
            error = exc
            continue
        try:
            ext = ALLOWED_TYPES[media.kind][content_type]
            name = _storage_name(task, media, ext)
            if default_storage.exists(name):  # left by a crash after save, before the update
                default_storage.delete(name)
            saved = default_storage.save(name, File(tmp, name=name))
        finally:
            tmp.close()
        TaskMedia.objects.filter(pk=media.pk).update(
            file=saved,
            content_type=content_type,
            size=size,
            kept_at=timezone.now(),
            last_error="",
            next_attempt_at=None,
        )
        report.kept += 1
        return
    permanent = isinstance(error, MediaRejected) or media.attempts >= MAX_ATTEMPTS
    if expires is not None and timezone.now() > expires:
        permanent = True
        error = MediaRejected(f"{error} (the vendor deleted it after 30 days)")
    TaskMedia.objects.filter(pk=media.pk).update(
        last_error=str(error)[:2000],
        gave_up=permanent,
        next_attempt_at=None
        if permanent
        else timezone.now() + timedelta(seconds=_retry_delay(media.attempts)),
    )
    log.warning("keeping %s of task %s failed: %s", media.source_url, task.pk, error)
    if permanent:
        report.gave_up += 1
    else:
        report.failed += 1


def media_keep(*, task_pk: int) -> KeepReport:
    """Create/update the ``TaskMedia`` rows of a succeeded task and download every one not
    kept yet into default storage (``results/<team code>/<task code>/<kind>-<index>-<variant>
    .<ext>``). Idempotent and safe to run twice at once (each download is claimed with a
    conditional update). A task that is not ``succeed`` is left alone. Returns a
    ``KeepReport``; raises ``Task.DoesNotExist``.
    """
    task = Task.objects.select_related("team", "kling_account").get(pk=task_pk)
    report = KeepReport()
    if task.status != Status.SUCCEED:
        return report
    for media in _ensure_rows(task):
        if media.kept_at is not None:
            report.already += 1
            continue
        if media.gave_up:
            report.gave_up += 1
            continue
        _keep_one(task, media, report)
    return report


def media_sweep(*, limit: int = 200) -> int:
    """Retry what is not kept: succeeded tasks of the last 30 days without media rows, and
    rows not kept, not given up, whose retry time has come. A task finished on an unconfirmed
    callback (``needs_confirmation``) waits for its confirmation, at most ``CONFIRM_WINDOW``.
    Returns tasks handled."""
    now = timezone.now()
    no_rows = (
        Task.objects.filter(status=Status.SUCCEED, finished_at__gte=now - VENDOR_RETENTION)
        .exclude(result={})
        # A callback's subset waits for its confirmation (which enqueues the keeping).
        .exclude(needs_confirmation=True, finished_at__gte=now - CONFIRM_WINDOW)
        .filter(~Exists(TaskMedia.objects.filter(task=OuterRef("pk"))))
        .values_list("pk", flat=True)[:limit]
    )
    due = (
        TaskMedia.objects.filter(kept_at__isnull=True, gave_up=False)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .values_list("task_id", flat=True)
        .distinct()[:limit]
    )
    pks = list(dict.fromkeys([*no_rows, *due]))
    for pk in pks:
        try:
            media_keep(task_pk=pk)
        except Exception:
            log.exception("media sweep: task %s failed", pk)
    return len(pks)


@dataclass(frozen=True)
class MediaDisplay:
    """One result as a template shows it.

    ``url``: what to put in ``src``/``href`` — the portal's kept copy when ``is_kept``, else
    the vendor's http(s) URL while it exists (``None`` once the vendor has deleted it, or
    when it is not an http(s) URL).
    ``vendor_days_left``: whole days until the vendor deletes it (0 when past; None if
    unknown). ``kind`` "image"|"video"; ``variant`` url, url_1..url_3, watermark_url;
    ``size`` bytes; ``duration`` seconds.
    """

    kind: str
    index: int
    variant: str
    url: str | None
    is_kept: bool
    vendor_url: str
    vendor_expires_at: datetime | None
    vendor_days_left: int | None
    content_type: str = ""
    size: int | None = None
    duration: Decimal | None = None
    code: UUID | None = None
    last_error: str = ""

    @property
    def is_watermarked(self) -> bool:
        """True for the vendor's watermarked copy of a video."""
        return self.variant == "watermark_url"

    @property
    def vendor_expired(self) -> bool:
        """True when only a kept copy can still exist."""
        return self.vendor_days_left == 0


def media_for_display(task: Task) -> list[MediaDisplay]:
    """The results of ``task`` for templates, kept or not, in kind/index/variant order.

    Uses the ``TaskMedia`` rows when they exist, else the vendor URLs in ``task.result``.
    Kept files are served by the ``tasks-media-file`` view (team members only).
    """
    expires = vendor_expires_at(task)
    now = timezone.now()
    days_left = None
    if expires is not None:
        # Capped: the vendor's clock may run ahead of ours.
        days_left = min(
            VENDOR_RETENTION.days, max(0, math.ceil((expires - now).total_seconds() / 86400))
        )
    rows = {(m.kind, m.index, m.variant): m for m in task.media.all()}
    items: list[MediaDisplay] = []
    slots = media_slots(task) if task.status == Status.SUCCEED else []
    keys = [(s.kind, s.index, s.variant) for s in slots]
    keys += [key for key in rows if key not in keys]
    by_key = {(s.kind, s.index, s.variant): s for s in slots}
    for key in keys:
        media = rows.get(key)
        slot = by_key.get(key)
        vendor_url = media.source_url if media else slot.url
        kept = bool(media and media.kept_at and media.file)
        if kept:
            url = reverse(
                "tasks-media-file",
                kwargs={"team": task.team.code, "code": task.code, "media": media.code},
            )
        else:
            # Only an http(s) URL of the vendor is ever put in src/href (rows stored before
            # task_apply_remote dropped others may still hold javascript:/data: URLs).
            url = vendor_url if days_left != 0 and is_http_url(vendor_url) else None
        items.append(
            MediaDisplay(
                kind=key[0],
                index=key[1],
                variant=key[2],
                url=url,
                is_kept=kept,
                vendor_url=vendor_url,
                vendor_expires_at=expires,
                vendor_days_left=days_left,
                content_type=media.content_type if media else "",
                size=media.size if media else None,
                duration=(media.duration if media else None) or (slot.duration if slot else None),
                code=media.code if media else None,
                last_error=media.last_error if media else "",
            )
        )
    items.sort(key=lambda item: (item.kind, item.index, item.variant))
    return items
