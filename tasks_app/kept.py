"""Uploads kept across a form error ("forms keep what was valid", issue 14 item 8).

When a create form comes back with an error, every uploaded file that passed its own checks
is saved under ``uploads/<team code>/kept/<kind>/<random hex><ext>`` of the default storage
(local disk or the bucket, ``klingweb.storage``) and the page carries a signed token naming
it (a hidden ``<field>_kept`` input; ``django.core.signing`` with salt ``KEPT_SALT``, valid
``KEPT_MAX_AGE`` seconds). Submitting again without choosing a new file puts the kept file
back in the form's files, so it is checked and stored exactly like a fresh upload; choosing a
new file replaces it. A token of another team or user, a forged one or an expired one is
ignored: the field is then required again and its error says the kept file is gone.

Kept files are never referenced by a task (a used one is copied by ``upload_save``); the
media sweep job (``tasks_app.jobs.sweep_media``, every 10 minutes) deletes kept files older
than ``KEPT_MAX_AGE`` with ``kept_sweep``.

``KeepUploadsMixin`` does all of it for any Django form whose uploads are ``FileField``s
(single or multiple): the base ``tasks_app.forms.TaskForm`` and ``elements_app``'s
``ElementForm`` use it, so every family's form gets it.
"""

from __future__ import annotations

import logging
import posixpath
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django import forms
from django.core import signing
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.utils import timezone
from django.utils.datastructures import MultiValueDict

from tasks_app.uploads import (
    UPLOAD_ROOT,
    _sniff_extension,
    team_upload_prefix,
    upload_content_type,
    upload_url,
)

log = logging.getLogger(__name__)

#: Salt of the kept-upload tokens (a token of another purpose never verifies here).
KEPT_SALT = "klingweb.tasks.kept-upload"
#: Seconds a kept upload stays usable (and then is swept): 1 hour.
KEPT_MAX_AGE = 3600
#: Suffix of the hidden input carrying the token of field ``<name>``.
KEPT_SUFFIX = "_kept"
#: What a field's error says when its token was no longer valid.
KEPT_GONE = "The file kept from your earlier try is no longer available; choose it again."


def kept_prefix(team: Any) -> str:
    """``uploads/<team code>/kept/``: where ``team``'s kept uploads live in storage."""
    return f"{team_upload_prefix(team)}kept/"


@dataclass(frozen=True)
class KeptFile:
    """One kept upload: ``name`` (storage name), ``original`` (the browser's file name),
    ``url`` (the team-only ``tasks-input`` URL), ``is_image`` (a preview can be shown)."""

    name: str
    original: str
    url: str
    is_image: bool


def kept_save(*, team: Any, file: Any, kind: str) -> str:
    """Save ``file`` (an ``UploadedFile``, already checked) as a kept upload of ``team``
    and return its storage name (``uploads/<team>/kept/<kind>/<hex><ext>``, the extension
    decided by content as in ``tasks_app.uploads.upload_save``)."""
    file.seek(0)
    head = file.read(32)
    file.seek(0)
    kind = "".join(ch for ch in kind if ch.isalnum()) or "file"
    name = f"{kept_prefix(team)}{kind}/{uuid.uuid4().hex}{_sniff_extension(head)}"
    return default_storage.save(name, file)


def kept_sign(*, team: Any, user: Any, entries: list[tuple[str, str]]) -> str:
    """A token for kept files ``entries`` (``[(storage name, original name)]``) of ``team``
    and ``user`` (``None`` allowed). Signed with ``KEPT_SALT``; timestamped."""
    payload = {
        "t": team.pk,
        "u": getattr(user, "pk", None),
        "f": [[name, original[:200]] for name, original in entries],
    }
    return signing.dumps(payload, salt=KEPT_SALT, compress=True)


def kept_load(*, team: Any, user: Any, token: str) -> list[KeptFile] | None:
    """The kept files a token names, or ``None`` when it is forged, older than
    ``KEPT_MAX_AGE``, of another team or user, names a file outside the team's kept area,
    or a file that no longer exists. Never raises."""
    if not token or not isinstance(token, str) or len(token) > 4000:
        return None
    try:
        payload = signing.loads(token, salt=KEPT_SALT, max_age=KEPT_MAX_AGE)
    except (signing.BadSignature, ValueError):
        return None
    if not isinstance(payload, dict) or payload.get("t") != team.pk:
        return None
    if payload.get("u") != getattr(user, "pk", None):
        return None
    out = []
    prefix = kept_prefix(team)
    for entry in payload.get("f") or []:
        if not (isinstance(entry, list) and len(entry) == 2):
            return None
        name, original = entry
        if (
            not isinstance(name, str)
            or posixpath.normpath(name) != name
            or not name.startswith(prefix)
            or ".." in name.split("/")
            or not default_storage.exists(name)
        ):
            return None
        content_type = upload_content_type(name) or ""
        out.append(
            KeptFile(
                name=name,
                original=str(original) or posixpath.basename(name),
                url=upload_url(team=team, name=name),
                is_image=content_type.startswith("image/"),
            )
        )
    return out or None


def kept_open(kept: KeptFile) -> UploadedFile:
    """The kept file as an ``UploadedFile`` (opened from storage, named as the browser
    named it), to be checked and stored like a fresh upload."""
    handle = default_storage.open(kept.name, "rb")
    return UploadedFile(
        file=handle,
        name=kept.original,
        content_type=upload_content_type(kept.name) or "application/octet-stream",
        size=default_storage.size(kept.name),
    )


def _walk(directory: str):
    dirs, files = default_storage.listdir(directory)
    for file in files:
        yield f"{directory}/{file}"
    for sub in dirs:
        yield from _walk(f"{directory}/{sub}")


def kept_sweep(*, now: Any = None) -> int:
    """Delete kept uploads older than ``KEPT_MAX_AGE`` (their tokens no longer verify) in
    every team's ``uploads/<team>/kept/``. Returns the number of files deleted. A file that
    cannot be read or deleted is logged and left for the next sweep."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=KEPT_MAX_AGE)
    deleted = 0
    try:
        teams, _files = default_storage.listdir(UPLOAD_ROOT)
    except FileNotFoundError:
        return 0
    for team_dir in teams:
        root = f"{UPLOAD_ROOT}/{team_dir}/kept"
        try:
            names = list(_walk(root))
        except FileNotFoundError:
            continue
        for name in names:
            try:
                if default_storage.get_modified_time(name) < cutoff:
                    default_storage.delete(name)
                    deleted += 1
            except Exception:
                log.exception("kept sweep: could not remove %s", name)
    return deleted


def _is_upload(value: Any) -> bool:
    if isinstance(value, UploadedFile):
        return True
    return (
        bool(value) and isinstance(value, list) and all(isinstance(v, UploadedFile) for v in value)
    )


class KeepUploadsMixin:
    """Form mixin: keep the valid uploads of a form that has errors (module docstring).

    Needs ``self.team`` and ``self.user`` (may be ``None``) set before validation. Every
    ``forms.FileField`` of the form takes part; a subclass may narrow which uploads count as
    "passed their own checks" with ``keep_candidates``. After validation:

    - ``form.kept``: ``{field name: [KeptFile]}`` — shown by ``tasks_app/_kept.html``
      ("kept: portrait.png — replace", a preview for images) with the hidden token input;
      the bound field carries it as ``form[name].kept``;
    - a field with errors gets ``aria-invalid="true"`` (Django) and the CSS class
      ``is-invalid`` on its own widget only.

    An error added after validation (``add_error``, e.g. a budget refusal in the view)
    keeps the uploads too.
    """

    keep_kind_default = "file"

    def __getitem__(self, name: str):
        bound = super().__getitem__(name)
        bound.kept = getattr(self, "kept", {}).get(name)
        bound.kept_token = getattr(self, "_kept_tokens", {}).get(name, "")
        bound.kept_input = f"{name}{KEPT_SUFFIX}"
        return bound

    def keep_kind(self, name: str) -> str:
        """The storage folder of field ``name``'s kept files ("image", "audio", "video"...)."""
        return self.keep_kind_default

    def _file_field_names(self) -> list[str]:
        return [n for n, f in self.fields.items() if isinstance(f, forms.FileField)]

    def _restore_kept(self) -> None:
        """Put kept files back into ``self.files`` for fields with no new upload."""
        self.kept: dict[str, list[KeptFile]] = {}
        self._kept_tokens: dict[str, str] = {}
        self._kept_from_token: dict[str, list[KeptFile]] = {}
        self._kept_gone: set[str] = set()
        if not self.is_bound:
            return
        files = MultiValueDict()
        files.update(self.files or {})
        for name in self._file_field_names():
            prefixed = self.add_prefix(name)
            token = (self.data.get(f"{prefixed}{KEPT_SUFFIX}") or "").strip()
            if not token or any(files.getlist(prefixed)):
                continue
            kept = kept_load(team=self.team, user=getattr(self, "user", None), token=token)
            if kept is None:
                self._kept_gone.add(name)
                continue
            files.setlist(prefixed, [kept_open(k) for k in kept])
            self._kept_from_token[name] = kept
            self._kept_tokens[name] = token
        self.files = files

    def keep_candidates(self) -> dict[str, Any]:
        """``{field name: UploadedFile | [UploadedFile]}``: the uploads that passed their
        own checks (default: file fields without errors holding an upload in
        ``cleaned_data``)."""
        cleaned = getattr(self, "cleaned_data", {}) or {}
        return {
            name: cleaned[name]
            for name in self._file_field_names()
            if name not in self._errors and _is_upload(cleaned.get(name))
        }

    def full_clean(self) -> None:
        """Restore kept files, validate, then keep the valid uploads if there are errors."""
        self._kept_ready = False
        self._restore_kept()
        super().full_clean()
        if not self.is_bound:
            return
        self._kept_candidates = self.keep_candidates()
        self._kept_ready = True
        for name in self._kept_gone:
            if name in self._errors:
                self._errors[name].append(KEPT_GONE)
        self._mark_invalid()
        if self._errors:
            self.keep_uploads()

    def add_error(self, field: str | None, error: Any) -> None:
        """Django's ``add_error``; after validation it also keeps the valid uploads and
        marks the field at fault."""
        super().add_error(field, error)
        if getattr(self, "_kept_ready", False):
            self._kept_candidates.pop(field, None)
            self._mark_invalid()
            self.keep_uploads()

    def _mark_invalid(self) -> None:
        for name, field in self.fields.items():
            classes = [c for c in field.widget.attrs.get("class", "").split() if c != "is-invalid"]
            if name in self._errors:
                classes.append("is-invalid")
            if classes:
                field.widget.attrs["class"] = " ".join(classes)
            else:
                field.widget.attrs.pop("class", None)

    #: False for a caller that cannot carry a token to its next try (``POST /api/v1/…``):
    #: then nothing is kept, and a refused request leaves no file behind.
    keep_on_error = True

    def keep_uploads(self) -> dict[str, list[KeptFile]]:
        """Save the valid uploads as kept files (once each; a file restored from a token
        keeps its token) and return ``self.kept``. Fields with errors keep nothing; nothing
        is kept when ``keep_on_error`` is False."""
        if not self.keep_on_error:
            return self.kept
        for name, value in getattr(self, "_kept_candidates", {}).items():
            if name in self.kept or name in self._errors:
                continue
            if name in self._kept_from_token:
                self.kept[name] = self._kept_from_token[name]
                continue
            uploads = value if isinstance(value, list) else [value]
            entries = []
            for upload in uploads:
                try:
                    stored = kept_save(team=self.team, file=upload, kind=self.keep_kind(name))
                except Exception:
                    log.exception("could not keep upload %s", getattr(upload, "name", "?"))
                    entries = []
                    break
                entries.append((stored, posixpath.basename(upload.name or stored)))
            if not entries:
                continue
            token = kept_sign(team=self.team, user=getattr(self, "user", None), entries=entries)
            self._kept_tokens[name] = token
            self.kept[name] = (
                kept_load(team=self.team, user=getattr(self, "user", None), token=token) or []
            )
        return self.kept
