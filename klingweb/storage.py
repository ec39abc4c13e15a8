"""Where media live: the one module that knows whether storage is local disk or a bucket.

``settings.STORAGES["default"]`` is Django's ``FileSystemStorage`` (``MEDIA_ROOT``) by default,
or ``KlingwebS3Storage`` (django-storages' S3 backend, boto3, SigV4) when
``AWS_STORAGE_BUCKET_NAME`` is set. Everything else writes and reads through Django's storage
API; only the questions "how does a browser (or Kling) get these bytes?" depend on the kind,
and they are answered here.

**Serving media from a bucket: a short-lived presigned redirect, not streaming.** The page's
media links stay the portal's access-checked views (``tasks-media-file``, ``tasks-input``,
``elements-file``); with a bucket, after the same access check, the view answers ``302`` to a
presigned ``GET`` URL valid for ``MEDIA_URL_SECONDS`` (5 minutes) carrying the content type
and ``Content-Disposition`` the local view would send (``ResponseContentType``,
``ResponseContentDisposition``). Why not stream through Django: a kept video is up to
``MEDIA_MAX_BYTES`` (500 MB), and streaming it would hold one of the few gunicorn threads for
the whole download and pass every byte through the web server twice; the bucket serves it
directly, with ``Range`` requests (seeking in a video), which Django's ``FileResponse`` does
not answer. The cost: whoever holds the presigned URL can read that one file until it
expires (5 minutes), as with any signed link; outsiders never get one (404 before any URL is
made). Objects are private (no ACL); the bucket serves them from its own origin, so a file
can never run script in the portal's origin. The bucket's endpoint must be reachable by the
browsers (and by Kling for inputs handed out as URLs).
"""

from __future__ import annotations

import os
from typing import Any

from django.core.files.storage import Storage, default_storage
from django.http import HttpResponse, HttpResponseRedirect
from django.utils.http import content_disposition_header
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

#: Seconds a presigned URL handed to a browser stays valid.
MEDIA_URL_SECONDS = 300
#: Seconds a presigned URL handed to Kling for an input stays valid (it fetches on create).
INPUT_URL_SECONDS = 3600
#: Seconds a browser may reuse a redirect (well within ``MEDIA_URL_SECONDS``), so a page
#: re-rendered by HTMX shows the same image without asking again.
REDIRECT_CACHE_SECONDS = 60


class KlingwebS3Storage(S3Storage):
    """django-storages' ``S3Storage`` that uploads a file already on local disk by its path.

    Given a file object, s3transfer reads each multipart part (``multipart_chunksize``, 8 MB)
    into memory, up to ``max_in_memory_upload_chunks`` (10) parts at once: ~80 MB per upload.
    Given a path, it reads each part from the disk as it sends it. Kept results are streamed
    to a temporary file first (``tasks_app.media.media_download``) and large browser uploads
    spool to one (``TemporaryUploadedFile``), so both take the path. Files larger than
    ``multipart_threshold`` (8 MB) are sent as a multipart upload; anything else (in-memory
    uploads, ``ContentFile``) goes through ``S3Storage`` unchanged. Options: those of
    ``S3Storage`` (``settings.STORAGES["default"]["OPTIONS"]``).
    """

    def _save(self, name: str, content: Any) -> str:
        path = _local_path(content)
        if path is None or self.gzip:
            return super()._save(name, content)
        cleaned = clean_name(name)
        key = self._normalize_name(cleaned)
        params = self._get_write_parameters(key, content)
        self.bucket.Object(key).upload_file(path, ExtraArgs=params, Config=self.transfer_config)
        return cleaned


def _local_path(content: Any) -> str | None:
    """The absolute path of the complete local file behind ``content``, or None."""
    if hasattr(content, "temporary_file_path"):  # TemporaryUploadedFile
        try:
            return content.temporary_file_path()
        except (AttributeError, OSError):
            return None
    inner = getattr(content, "file", None)
    path = getattr(inner, "name", None)
    if not isinstance(path, str) or not os.path.isabs(path) or not os.path.isfile(path):
        return None
    flush = getattr(inner, "flush", None)
    if callable(flush):
        try:
            flush()  # a file still being written: its last bytes reach the disk first
        except (OSError, ValueError):
            return None
    return path


def is_bucket(storage: Storage | None = None) -> bool:
    """True when ``storage`` (default: the default storage) is an S3 bucket."""
    # default_storage is a LazyObject: isinstance() sees (and sets up) the wrapped storage.
    return isinstance(default_storage if storage is None else storage, S3Storage)


def media_url_for(
    name: str,
    *,
    filename: str,
    content_type: str | None,
    inline: bool = True,
    expires_s: int = MEDIA_URL_SECONDS,
    storage: Storage | None = None,
) -> str | None:
    """A presigned ``GET`` URL of stored file ``name`` for a browser, or None on local disk.

    The bucket answers it with ``Content-Type: content_type`` (``application/octet-stream``
    when None) and ``Content-Disposition: inline|attachment; filename="<filename>"``, for
    ``expires_s`` seconds (then 403 on Amazon S3; some S3-compatible servers answer 400
    ``AccessDenied``). Makes no request to the bucket (signing is local), so a missing object
    is the bucket's 404. Call it only after the access check.
    """
    storage = default_storage if storage is None else storage
    if not is_bucket(storage):
        return None
    parameters = {
        "ResponseContentType": content_type or "application/octet-stream",
        "ResponseContentDisposition": content_disposition_header(not inline, filename),
    }
    return storage.url(name, parameters=parameters, expire=expires_s)


def media_redirect(
    name: str,
    *,
    filename: str,
    content_type: str | None,
    inline: bool,
    storage: Storage | None = None,
) -> HttpResponse | None:
    """A ``302`` to ``media_url_for(name, ...)`` when storage is a bucket, else None (the view
    then answers with its ``FileResponse``). The redirect may be reused by the browser for
    ``REDIRECT_CACHE_SECONDS`` (private cache only) and sends no ``Referer`` onwards."""
    url = media_url_for(
        name, filename=filename, content_type=content_type, inline=inline, storage=storage
    )
    if url is None:
        return None
    response = HttpResponseRedirect(url)
    response["Cache-Control"] = f"private, max-age={REDIRECT_CACHE_SECONDS}"
    response["Referrer-Policy"] = "no-referrer"
    return response


def media_presigned_input_url(
    name: str,
    *,
    content_type: str,
    expires_s: int = INPUT_URL_SECONDS,
    storage: Storage | None = None,
) -> str | None:
    """A presigned ``GET`` URL handing upload ``name`` to Kling as an input, or None on local
    disk (then the portal must serve it itself, under ``PUBLIC_BASE_URL``).

    ``content_type``: the type checked when the file was uploaded
    (``tasks_app.uploads.upload_content_type``); the bucket answers with it. Valid
    ``expires_s`` seconds (default one hour: Kling fetches inputs when the task is created).
    The URL grants reading that one object only; the bucket lists nothing to its holder.
    """
    storage = default_storage if storage is None else storage
    if not is_bucket(storage):
        return None
    return storage.url(name, parameters={"ResponseContentType": content_type}, expire=expires_s)
