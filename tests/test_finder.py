"""Finding given tasks at Kling (``tasks_app.finder``) against the sandbox: by id for the 2026
design, whatever else lives in the account; list pages for legacy tasks, read as deep as the
oldest wanted task needs. Requests are counted on the wire (a counting transport under the
real client), never faked."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from klingweb.kling import KlingClient
from klingweb.sandbox.newdesign import validate_new
from klingweb.sandbox.validation import validate_create
from tasks_app.finder import Wanted, tasks_find, tasks_pages

TURBO = "text_to_video_3_0_turbo"
TURBO_PATH = "/text-to-video/kling-3.0-turbo"
TURBO_BODY = {"prompt": "a red kite", "settings": {"resolution": "720p", "duration": 5}}
T2V = {
    "model_name": "kling-v1",
    "prompt": "a red kite over the sea",
    "mode": "std",
    "duration": "5",
}


class CountingTransport(httpx.HTTPTransport):
    """The real HTTP transport, counting the requests that go out."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return super().handle_request(request)


def _api_key_client(sandbox) -> tuple[KlingClient, CountingTransport, str]:
    key = f"key-{uuid.uuid4().hex}"
    account = f"acct-{uuid.uuid4().hex[:8]}"
    sandbox.config.api_keys[key] = account
    wire = CountingTransport()
    return KlingClient(api_key=key, base_url=sandbox.base_url, transport=wire), wire, account


def _pair_client(sandbox) -> tuple[KlingClient, CountingTransport, str]:
    access_key, secret_key = f"ak-{uuid.uuid4().hex[:12]}", f"sk-{uuid.uuid4().hex}"
    sandbox.config.accounts[access_key] = secret_key
    wire = CountingTransport()
    client = KlingClient(
        access_key=access_key, secret_key=secret_key, base_url=sandbox.base_url, transport=wire
    )
    return client, wire, access_key


def _foreign_new(sandbox, account: str, count: int) -> None:
    """``count`` 2026-design tasks made in the account by another system (straight into the
    sandbox's state, as its create endpoint would after validation)."""
    info = validate_new(TURBO_PATH, dict(TURBO_BODY), elements=lambda _id: None)
    for _ in range(count):
        sandbox.state.create_new(account, TURBO_PATH, dict(TURBO_BODY), dict(info))


def _foreign_legacy(sandbox, account: str, count: int) -> None:
    info = validate_create("text2video", dict(T2V))
    for _ in range(count):
        sandbox.state.create(account, "text2video", dict(T2V), dict(info))


def _wanted_new(client: KlingClient, count: int) -> list[Wanted]:
    wanted = []
    for key in range(count):
        external = f"ours-{uuid.uuid4().hex}"
        remote = client.create_new_design_task(
            TURBO, {**TURBO_BODY, "options": {"external_task_id": external}}
        )
        wanted.append(Wanted(key, remote.task_id, external, remote.created_at))
    return wanted


def _wanted_legacy(client: KlingClient, count: int) -> list[Wanted]:
    wanted = []
    for key in range(count):
        external = f"ours-{uuid.uuid4().hex}"
        remote = client.create_task("text2video", {**T2V, "external_task_id": external})
        wanted.append(Wanted(key, remote.task_id, external, remote.created_at))
    return wanted


@pytest.mark.parametrize("foreign", [0, 2000])
def test_new_design_tasks_are_found_by_id_in_batches_whatever_else_is_in_the_account(
    fresh_sandbox, foreign
):
    client, wire, account = _api_key_client(fresh_sandbox)
    wanted = _wanted_new(client, 150)
    _foreign_new(fresh_sandbox, account, foreign)
    fresh_sandbox.advance(30)
    wire.requests = 0

    found = tasks_find(client, TURBO, wanted)

    assert wire.requests == found.requests == found.id_queries == 2, "⌈150 / 100⌉ requests"
    assert found.list_pages == found.single_queries == 0
    assert sorted(found.found) == [item.key for item in wanted]
    assert {remote.task_status for remote in found.found.values()} == {"succeed"}
    assert found.unknown == {} and found.left == [] and found.error is None


def test_new_design_task_without_a_vendor_id_is_found_by_external_id_and_a_stranger_is_unknown(
    fresh_sandbox,
):
    client, wire, _account = _api_key_client(fresh_sandbox)
    other, _, _ = _api_key_client(fresh_sandbox)
    (mine,) = _wanted_new(client, 1)
    (theirs,) = _wanted_new(other, 1)
    wire.requests = 0
    wanted = [
        Wanted(1, "", mine.external_task_id, mine.created_at),
        Wanted(2, theirs.task_id, theirs.external_task_id, theirs.created_at),
    ]

    found = tasks_find(client, TURBO, wanted)

    assert wire.requests == 2, "one batch by task_id, one by external_task_id"
    assert found.found[1].task_id == mine.task_id
    assert list(found.unknown) == [2], "another account's task is not ours to see"
    assert found.left == []


def test_legacy_pages_are_read_until_the_oldest_wanted_task_not_a_fixed_count(fresh_sandbox):
    client, wire, account = _pair_client(fresh_sandbox)
    wanted = _wanted_legacy(client, 5)
    _foreign_legacy(fresh_sandbox, account, 2100)  # newer than ours: 5 pages in front of them
    wire.requests = 0

    found = tasks_find(client, "text2video", wanted)

    assert sorted(found.found) == [0, 1, 2, 3, 4]
    assert found.list_pages == 5 and found.single_queries == 0 and wire.requests == 5


def test_legacy_pages_stop_at_a_page_older_than_every_wanted_task(fresh_sandbox):
    client, wire, account = _pair_client(fresh_sandbox)
    _foreign_legacy(fresh_sandbox, account, 1200)
    # Both claim to be days newer than anything the vendor has: page 1 already reaches past
    # them, so no further page can hold them; they are asked for one by one.
    later = datetime.now(UTC) + timedelta(days=10)
    ghosts = [Wanted(key, f"no-such-{key}", f"none-{key}", later) for key in (8, 9)]
    wire.requests = 0

    found = tasks_find(client, "text2video", ghosts)

    assert found.list_pages == 1, "page 1 is older than the oldest wanted task"
    assert found.single_queries == 2 and wire.requests == 3
    assert found.found == {} and sorted(found.unknown) == [8, 9] and found.left == []


def test_a_failing_vendor_leaves_the_rest_for_later_and_raises_nothing(fresh_sandbox):
    client, _wire, _account = _pair_client(fresh_sandbox)
    wanted = _wanted_legacy(client, 3)
    fresh_sandbox.config.error_rate = 1.0
    try:
        found = tasks_find(client, "text2video", wanted)
    finally:
        fresh_sandbox.reset_faults()

    assert found.error is not None and not found.listing_ok
    assert found.found == {} and found.left == [0, 1, 2]


def test_pages_since_stop_at_the_first_page_older_than_since(fresh_sandbox):
    client, wire, account = _pair_client(fresh_sandbox)
    _foreign_legacy(fresh_sandbox, account, 600)
    wire.requests = 0

    pages = list(tasks_pages(client, "text2video", since=datetime.now(UTC) + timedelta(days=1)))

    assert len(pages) == 1 and wire.requests == 1
    assert len(list(tasks_pages(client, "text2video"))) == 2, "without since: every page"


def test_new_design_tasks_with_an_access_key_client_send_nothing_and_say_why(fresh_sandbox):
    client, wire, _account = _pair_client(fresh_sandbox)
    wanted = [Wanted(1, "123", "ours-1", datetime.now(UTC))]

    found = tasks_find(client, TURBO, wanted)

    assert wire.requests == 0 and found.requests == 0
    assert "API key" in str(found.error) and found.left == [1]


@pytest.mark.django_db
def test_legacy_probe_refused_by_the_vendor_records_no_and_the_pages_find_them(
    fresh_sandbox, monkeypatch
):
    from klingweb.accounts.models import KlingAccount
    from klingweb.sandbox.errors import invalid

    client, wire, _account = _api_key_client(fresh_sandbox)
    wanted = _wanted_legacy(client, 2)
    row = KlingAccount.objects.create(name="probe", credential_kind="api_key")

    def refuse(account, ids, *, external):  # a vendor answering legacy ids with 1201
        raise invalid("task_ids", "unknown task type")

    monkeypatch.setattr(fresh_sandbox.state, "tasks_by_ids", refuse)
    wire.requests = 0
    now = datetime.now(UTC)

    found = tasks_find(client, "text2video", wanted, account=row, now=now)

    assert (found.id_queries, found.list_pages, wire.requests) == (1, 1, 2)
    assert sorted(found.found) == [0, 1] and found.error is None and found.unknown == {}
    row.refresh_from_db()
    assert (row.unified_serves_legacy, row.unified_checked_at) == (False, now)
    wire.requests = 0
    again = tasks_find(client, "text2video", wanted, account=row, now=now + timedelta(hours=23))
    assert (again.id_queries, wire.requests) == (0, 1), "the 'no' stands for a day"
