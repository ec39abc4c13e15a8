"""Browser scenario of issue 14 item 4: a teammate's new task appears in an open task list
with no reload, through the page's one live request.

The owner keeps the team's task list open; the member creates a task in another browser
(its own cookies). Within one interval (3 s; the wait allows several) the new row shows in
the owner's list, which never reloaded, and while the list stays open it asks one URL per
interval (``/tasks/live/``), never a row's own partial. No console error on the way.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import TIMEOUT_MS, Stack, sign_in

pytestmark = pytest.mark.e2e

OWNER, MEMBER = "studio-owner", "studio-member"
TASK_URL = re.compile(r"/t/[0-9a-f-]{36}/tasks/([0-9a-f-]{36})/$")
#: Several live intervals (3 s each): a new row must show within this.
LIVE_MS = 15_000

expect.set_options(timeout=TIMEOUT_MS)


def test_teammates_new_task_appears_in_an_open_list_without_reload(stack: Stack, new_page, shots):
    owner = new_page()
    errors: list[str] = []
    owner.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    requests: list[str] = []
    owner.on("request", lambda request: requests.append(request.url))
    failed: list[str] = []
    owner.on(
        "response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    team = sign_in(owner, stack, OWNER)
    owner.goto(f"{stack.url}/t/{team}/tasks/")
    owner.evaluate("window.klingwebNoReload = true")  # gone if the page reloads
    shots(owner, "owner-list-open")

    member = new_page()
    assert sign_in(member, stack, MEMBER) == team
    member.goto(f"{stack.url}/t/{team}/tasks/new/text2video/")
    prompt = f"A teammate's lantern festival over a river {time.time_ns()}"
    member.get_by_label("Prompt").first.fill(prompt)
    member.get_by_role("button", name="Create task").click()
    member.wait_for_url(TASK_URL)
    code = TASK_URL.search(member.url).group(1)
    stack.created.append((team, code))

    row = owner.locator(f"#task-{code}")
    expect(row).to_be_visible(timeout=LIVE_MS)
    expect(row).to_contain_text("lantern festival")
    assert owner.evaluate("window.klingwebNoReload") is True
    # The new row went to the top of the table, and once the cluster sent it to Kling the
    # same open page shows the new status, still without a reload.
    expect(owner.locator("#task-rows tr").first).to_have_id(f"task-{code}")
    stack.wait_kling_task(family="text2video", external_task_id=code)
    expect(row).to_have_attribute(
        "data-status", re.compile("submitted|processing"), timeout=LIVE_MS
    )
    shots(owner, "owner-list-new-row")

    # One request per interval for the whole page, never one per row.
    requests.clear()
    owner.wait_for_timeout(7_000)
    live = [url for url in requests if "/tasks/live/" in url]
    assert 1 <= len(live) <= 3, requests
    assert not [url for url in requests if url.rstrip("/").endswith("/row")], requests
    assert owner.evaluate("window.klingwebNoReload") is True
    assert not errors, (errors, failed)
