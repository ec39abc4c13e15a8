"""Uploaded inputs (images, sound, video) kept in the default storage for the create call.

A task's params reference an upload as ``{"$file": "<storage name>"}``; the bytes are read
and Base64-encoded only when the request is sent (``tasks_app.families.resolve_files``), so
large bodies are never stored twice. Names live under ``uploads/<team code>/`` and carry an
extension decided by the file's content, never by the name the browser sent, so an upload
is never served back as HTML or SVG.

Shared with ``elements_app`` (contract name: ``upload_save``).
"""

from __future__ import annotations

import posixpath
import uuid
from typing import Any

from django.core.files.storage import default_storage

UPLOAD_ROOT = "uploads"

#: Content types the portal serves uploads with; anything else is an attachment.
CONTENT_TYPES: dict[str, str] = {
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
}


def _sniff_extension(head: bytes) -> str:
    """A safe extension from the first bytes of a file, or ``.bin``."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return ".wav"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return ".mov"
        if brand in (b"M4A ", b"M4B ", b"M4P "):
            return ".m4a"
        return ".mp4"
    if head[:3] == b"ID3":
        return ".mp3"
    if head[:4] == b"ADIF":
        return ".aac"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return ".aac" if head[1] & 0x06 == 0 else ".mp3"
    return ".bin"


def team_upload_prefix(team: Any) -> str:
    """``uploads/<team code>/``: where ``team``'s uploads live in storage."""
    return f"{UPLOAD_ROOT}/{team.code}/"


def upload_save(*, team: Any, file: Any, kind: str) -> str:
    """Save an uploaded ``file`` for ``team`` and return its storage name.

    ``kind``: ``"image"``, ``"audio"`` or ``"video"`` (a folder, for people browsing
    storage). The name is ``uploads/<team code>/<kind>/<random hex><ext>`` where ``ext``
    comes from the content's magic bytes (``.png``, ``.jpg``, ``.wav``, ``.mp3``, ``.m4a``,
    ``.aac``, ``.mp4``, ``.mov``; else ``.bin``). Validate the file first
    (``tasks_app.validators``); this function stores whatever it is given.
    """
    file.seek(0)
    head = file.read(32)
    file.seek(0)
    kind = "".join(ch for ch in kind if ch.isalnum()) or "file"
    name = f"{team_upload_prefix(team)}{kind}/{uuid.uuid4().hex}{_sniff_extension(head)}"
    return default_storage.save(name, file)


def upload_belongs_to(*, team: Any, name: str) -> bool:
    """True when storage ``name`` is an upload of ``team`` (no path tricks) that exists."""
    if not isinstance(name, str) or not name:
        return False
    normal = posixpath.normpath(name)
    if normal != name or name.startswith("/") or ".." in name.split("/"):
        return False
    if not name.startswith(team_upload_prefix(team)):
        return False
    return default_storage.exists(name)


def upload_url(*, team: Any, name: str) -> str:
    """The ``tasks-input`` URL serving upload ``name`` of ``team`` to its members."""
    from django.urls import reverse

    rest = (
        name[len(team_upload_prefix(team)) :] if name.startswith(team_upload_prefix(team)) else name
    )
    return reverse("tasks-input", kwargs={"team": team.code, "name": rest})


def upload_content_type(name: str) -> str | None:
    """The content type an upload is served with, or None (then only as an attachment)."""
    return CONTENT_TYPES.get(posixpath.splitext(name)[1].lower())
