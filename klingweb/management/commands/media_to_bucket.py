"""``python manage.py media_to_bucket``: copy the media kept on local disk into the bucket.

    media_to_bucket [--source DIR] [--dry-run] [--size-only] [--delete-local] [--no-progress]

For a portal moving from ``MEDIA_ROOT`` to object storage (``AWS_STORAGE_BUCKET_NAME`` set,
see ``klingweb.storage``). Every file under ``--source`` (default ``MEDIA_ROOT``: kept
results, uploads, element inputs) is copied to the bucket under the same name, which is the
name the database already holds, so nothing in the database changes.

Idempotent: a file whose object already exists with the same size and the same content
(its ETag equal to the file's MD5, or to the multipart ETag of the file cut into the
storage's ``multipart_chunksize`` parts) is skipped; ``--size-only`` compares sizes only (for
buckets whose ETags are not MD5s, e.g. SSE-KMS). A different object of that name is
replaced. Each copy streams from the disk in parts and is verified afterwards (size and
ETag by ``HEAD``). Local files are never deleted unless ``--delete-local`` is given, and then
only a file whose copy was verified (or already present). Shows a progress bar in bytes
(tqdm) on a terminal; prints one summary line; exits 1 if any file failed.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand, CommandError, CommandParser
from s3transfer.utils import ChunksizeAdjuster
from tqdm import tqdm

from klingweb.storage import is_bucket

READ_BYTES = 1024 * 1024


@dataclass
class Tally:
    """Files (and bytes) by outcome."""

    copied: int = 0
    copied_bytes: int = 0
    already: int = 0
    failed: int = 0
    deleted: int = 0


def local_etags(path: Path, *, chunk_bytes: int) -> set[str]:
    """The ETags an S3 object holding ``path`` may have: its MD5 (single-part upload) and,
    when the file is larger than one part, the multipart ETag ``md5(md5(part 1)…md5(part n))-n``
    for parts of ``chunk_bytes`` (as adjusted by s3transfer). Lower-case hex, no quotes."""
    whole = hashlib.md5(usedforsecurity=False)
    parts: list[bytes] = []
    part = hashlib.md5(usedforsecurity=False)
    in_part = 0
    with path.open("rb") as fh:
        while block := fh.read(READ_BYTES):
            whole.update(block)
            view = memoryview(block)
            while view:
                take = min(len(view), chunk_bytes - in_part)
                part.update(view[:take])
                in_part += take
                view = view[take:]
                if in_part == chunk_bytes:
                    parts.append(part.digest())
                    part, in_part = hashlib.md5(usedforsecurity=False), 0
    if in_part:
        parts.append(part.digest())
    etags = {whole.hexdigest()}
    if parts:  # the multipart form too (8 MB and more are sent in parts)
        etags.add(f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}")
    return etags


class Command(BaseCommand):
    """Copy local media (``MEDIA_ROOT``) into the configured bucket, idempotently."""

    help = "Copy media from MEDIA_ROOT into the bucket (AWS_STORAGE_BUCKET_NAME); idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        """``--source``, ``--dry-run``, ``--size-only``, ``--delete-local``, ``--no-progress``."""
        parser.add_argument(
            "--source", default=None, help="The local media folder (default: MEDIA_ROOT)."
        )
        parser.add_argument("--dry-run", action="store_true", help="Only say what would be copied.")
        parser.add_argument(
            "--size-only",
            action="store_true",
            help="Treat an object of the same size as the same file (skip the MD5/ETag check).",
        )
        parser.add_argument(
            "--delete-local",
            action="store_true",
            help="Delete each local file once its copy in the bucket is verified.",
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Copy, verify, optionally delete; raises ``CommandError`` (exit 1) when storage is
        not a bucket, the bucket cannot be reached, or any file failed."""
        if not is_bucket():
            raise CommandError(
                "The default storage is not a bucket: set AWS_STORAGE_BUCKET_NAME (and the "
                "other AWS_* variables, see README.md) first."
            )
        source = Path(options["source"] or settings.MEDIA_ROOT)
        if not source.is_dir():
            raise CommandError(f"{source} is not a folder.")
        storage = default_storage
        client = storage.connection.meta.client
        bucket = storage.bucket_name
        try:
            client.head_bucket(Bucket=bucket)
        except (ClientError, BotoCoreError) as exc:
            raise CommandError(f"Cannot reach bucket {bucket!r}: {exc}") from None

        files = sorted(p for p in source.rglob("*") if p.is_file() and not p.is_symlink())
        total = sum(p.stat().st_size for p in files)
        dry_run, size_only = options["dry_run"], options["size_only"]
        delete_local = options["delete_local"] and not dry_run
        chunk = storage.transfer_config.multipart_chunksize
        tally = Tally()
        bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc="media_to_bucket",
            file=self.stderr._out,
            disable=True if options["no_progress"] else None,  # None: only on a terminal
        )
        with bar:
            for path in files:
                name = path.relative_to(source).as_posix()
                size = path.stat().st_size
                sent = _Sent(bar)
                try:
                    etags = (
                        set() if size_only else local_etags(path, chunk_bytes=_part(chunk, size))
                    )
                    present = _same_object(client, bucket, name, size=size, etags=etags)
                    if present:
                        tally.already += 1
                    elif dry_run:
                        self.stdout.write(f"would copy {name} ({size} bytes)")
                        tally.copied += 1
                        tally.copied_bytes += size
                    else:
                        params = storage.get_object_parameters(name)
                        params.setdefault(
                            "ContentType",
                            mimetypes.guess_type(name)[0] or storage.default_content_type,
                        )
                        # By path: s3transfer reads each part from the disk as it sends it.
                        client.upload_file(
                            str(path),
                            bucket,
                            name,
                            ExtraArgs=params,
                            Config=storage.transfer_config,
                            Callback=sent,
                        )
                        if not _same_object(client, bucket, name, size=size, etags=etags):
                            raise OSError("the copy in the bucket differs from the file")
                        tally.copied += 1
                        tally.copied_bytes += size
                        present = True
                    if present and delete_local:
                        path.unlink()
                        tally.deleted += 1
                except (OSError, ClientError, BotoCoreError) as exc:
                    tally.failed += 1
                    self.stderr.write(f"{name}: {exc}")
                bar.update(size - sent.bytes)  # every file counts its size once

        verb = "would copy" if dry_run else "copied"
        line = (
            f"{verb} {tally.copied} files ({tally.copied_bytes} bytes) to bucket {bucket!r}; "
            f"{tally.already} already there; {tally.failed} failed"
        )
        if delete_local:
            line += f"; {tally.deleted} deleted locally"
        self.stdout.write(line)
        if tally.failed:
            raise CommandError(f"{tally.failed} files were not copied (listed above); run again.")


class _Sent:
    """s3transfer's progress callback: bytes sent so far, shown on ``bar``."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar
        self.bytes = 0

    def __call__(self, count: int) -> None:
        self.bytes += count
        self.bar.update(count)


def _part(chunk: int, size: int) -> int:
    """The part size s3transfer really uses for a file of ``size`` bytes."""
    return ChunksizeAdjuster().adjust_chunksize(chunk, size)


def _same_object(client: Any, bucket: str, name: str, *, size: int, etags: set[str]) -> bool:
    """True when object ``name`` exists with ``size`` bytes and (unless ``etags`` is empty)
    an ETag among ``etags``. Raises ``ClientError`` for anything but 404."""
    try:
        head = client.head_object(Bucket=bucket, Key=name)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return False
        raise
    if head.get("ContentLength") != size:
        return False
    return not etags or head.get("ETag", "").strip('"').lower() in etags
