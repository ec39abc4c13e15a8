"""Leases a crashed process leaves behind run out after the configured time (issue 15 item 2).

``POLL_CLAIM_SECONDS``: a poller SIGKILLed mid-cycle holds its tasks (and their group) that
long, then another poller takes them over. ``MEDIA_DOWNLOAD_LEASE_SECONDS``: a worker that died
mid-download holds that result file that long, then another worker keeps it. The topology
scenario (``tests/test_topology.py``) sets both short so the surviving machine takes over
within the run; these tests check each lease on its own against the sandbox and a loopback
origin.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connections
from django.utils import timezone

from tasks_app.media import media_keep
from tasks_app.models import Deduction, Status, Task, TaskMedia
from tasks_app.polling import tasks_claim, tasks_poll
from tests.cluster_support import (  # noqa: F401 - fast_passwords is an autouse fixture
    fast_passwords,
    in_flight_tasks,
    sandbox_account,
)
from tests.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100


def test_a_killed_pollers_claims_run_out_after_poll_claim_seconds(settings, portal, fresh_sandbox):
    default = settings.POLL_CLAIM_SECONDS
    settings.POLL_CLAIM_SECONDS = 10
    assert default > settings.POLL_CLAIM_SECONDS
    account = sandbox_account(fresh_sandbox, portal.team)
    tasks = in_flight_tasks(portal.team, portal.member, account, 3)
    fresh_sandbox.advance(2)
    claimed, _lease = tasks_claim()  # then the poller is SIGKILLed: its claims stay
    assert len(claimed) == 3

    soon = timezone.now() + timedelta(seconds=5)
    assert tasks_poll(now=soon).claimed == 0, "the dead poller's claims still hold"

    later = timezone.now() + timedelta(seconds=settings.POLL_CLAIM_SECONDS + 1)
    assert tasks_poll(now=later).claimed == 3, "another poller takes the group over"
    for task in Task.objects.filter(pk__in=[t.pk for t in tasks]):
        assert task.status == Status.SUCCEED
        assert Deduction.objects.filter(task=task).count() == 1


class _StallingOrigin(BaseHTTPRequestHandler):
    """A vendor CDN on loopback whose first answer hangs until ``release`` is set (the worker
    downloading it is as good as dead); later answers come at once."""

    release = threading.Event()
    served = 0

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        cls = type(self)
        cls.served += 1
        if cls.served == 1:
            cls.release.wait(timeout=30)
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(MP4)))
        self.end_headers()
        self.wfile.write(MP4)


@pytest.fixture
def stalling_origin(settings):
    """The stalling origin; its host is the Kling host, as the sandbox's is."""
    _StallingOrigin.release = threading.Event()
    _StallingOrigin.served = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StallingOrigin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.KLING_API_BASE_URL = f"http://127.0.0.1:{server.server_address[1]}"
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _StallingOrigin.release.set()
    server.shutdown()
    server.server_close()


def test_a_dead_workers_download_is_taken_over_after_its_lease(
    settings, portal, stalling_origin, tmp_path
):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_DOWNLOAD_LEASE_SECONDS = 1
    task = Task.objects.create(
        team=portal.team,
        family="text2video",
        status=Status.SUCCEED,
        result={"videos": [{"id": "1", "url": f"{stalling_origin}/v.mp4"}]},
        finished_at=timezone.now(),
        vendor_created_at=timezone.now(),
    )

    def stuck_worker():
        try:
            media_keep(task_pk=task.pk)
        finally:
            connections.close_all()

    first = threading.Thread(target=stuck_worker, daemon=True)
    first.start()
    assert wait_until(lambda: _StallingOrigin.served == 1, timeout=20)
    assert media_keep(task_pk=task.pk).busy == 1, "the first worker's lease still holds"

    # Once the lease has run out, another worker keeps the file.
    reports = []
    assert wait_until(
        lambda: reports.append(media_keep(task_pk=task.pk)) or reports[-1].kept == 1,
        timeout=20,
        interval=0.3,
    )
    media = TaskMedia.objects.get(task=task)
    assert media.kept_at is not None
    with media.file.open("rb") as kept:
        assert kept.read() == MP4
    _StallingOrigin.release.set()
    first.join(timeout=20)
