"""Browser scenarios of issue 14 item 3: tasks the vendor no longer knows.

1. The owner creates a text-to-video task through the form; Kling (the sandbox) accepts it
   and then forgets it (``SandboxServer.forget``: 1203 "not found" from then on, as after a
   vendor-side loss). With the e2e settings (two checks over eight seconds,
   ``tests/e2e/server_settings.py``) the real poller ends it "Lost at vendor": the open task
   page shows it without a reload, says nothing was charged, and the usage page counts one
   more lost task with no more units spent.
2. The owner ends another running task by hand with a reason through the form on its page;
   the page shows "Lost at vendor" and the reason, with who gave it, in the status history.
   Then Kling (the sandbox) forgets it too, as the reason says.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import TIMEOUT_MS, Stack, sign_in

pytestmark = pytest.mark.e2e

OWNER = "studio-owner"
TASK_URL = re.compile(r"/t/[0-9a-f-]{36}/tasks/([0-9a-f-]{36})/$")
#: "Not found" polls with back-off (10 s, then 20 s, jittered) plus the page's 3 s refresh.
LOST_MS = 90_000

expect.set_options(timeout=TIMEOUT_MS)


def _create_task(page, stack: Stack, team: str, prompt: str) -> tuple[str, dict]:
    """Create a text-to-video task through the form; wait until Kling holds it. Returns the
    task's code and the sandbox's view of it."""
    page.goto(f"{stack.url}/t/{team}/tasks/new/text2video/")
    page.get_by_label("Prompt").first.fill(f"{prompt}, {time.time_ns()}")
    page.get_by_role("button", name="Create task").click()
    page.wait_for_url(TASK_URL)
    code = TASK_URL.search(page.url).group(1)
    stack.created.append((team, code))
    return code, stack.wait_kling_task(family="text2video", external_task_id=code)


def _usage_totals(page, stack: Stack, team: str) -> dict[str, str]:
    """The headline figures of the team's usage page (this month): label → text."""
    page.goto(f"{stack.url}/t/{team}/usage/")
    totals = {}
    for item in page.locator("dl.usage-totals > div").all():
        totals[item.locator("dt").inner_text().strip()] = item.locator("dd").inner_text().strip()
    return totals


def test_a_task_kling_forgets_ends_lost_at_vendor_without_a_charge(stack: Stack, new_page, shots):
    page = new_page()
    team = sign_in(page, stack, OWNER)
    before = _usage_totals(page, stack, team)

    code, kling = _create_task(page, stack, team, "A lighthouse the vendor forgets")
    expect(page.locator("#task-live .badge").first).not_to_have_text("Queued", timeout=LOST_MS)
    stack.sandbox.forget(kling["task_id"])
    shots(page, "forgotten-still-running")

    # The open page turns "Lost at vendor" by itself (no reload, no navigation).
    url = page.url
    expect(page.locator("#task-live .badge-lost").first).to_have_text(
        "Lost at vendor", timeout=LOST_MS
    )
    assert page.url == url
    status = page.locator(".status-line")
    expect(status).to_contain_text("nothing charged")
    expect(status).not_to_contain_text("Charged")
    expect(page.locator("#task-live")).to_contain_text("Kling no longer knows this task")
    expect(page.locator(".events")).to_contain_text("not found")
    shots(page, "lost-at-vendor")

    after = _usage_totals(page, stack, team)
    assert int(after["Lost at vendor"]) == int(before["Lost at vendor"]) + 1, (before, after)
    assert after["Units spent"] == before["Units spent"], (before, after)
    shots(page, "usage")


def test_an_admin_ends_a_stale_task_by_hand_with_a_reason(stack: Stack, new_page, shots):
    page = new_page()
    team = sign_in(page, stack, OWNER)
    code, kling = _create_task(page, stack, team, "A stale harbour at dusk")
    page.goto(f"{stack.url}/t/{team}/tasks/{code}/")
    expect(page.locator("#task-live .badge").first).not_to_have_text("Queued", timeout=LOST_MS)
    page.get_by_text("End this task by hand").click()
    reason = "Kling support says their queue lost it"
    page.get_by_label("Reason").fill(reason)
    page.get_by_role("button", name="End task").click()
    expect(page.locator("#task-live .badge-lost").first).to_have_text("Lost at vendor")
    expect(page.locator(".events")).to_contain_text(f"Ended by hand by {OWNER}: {reason}")
    expect(page.locator("#task-live")).not_to_contain_text("End this task by hand")
    shots(page, "ended-by-hand")
    page.reload()
    expect(page.locator(".events")).to_contain_text(f"Ended by hand by {OWNER}: {reason}")
    expect(page.locator(".status-line")).to_contain_text("nothing charged")
    # What support said is true: Kling lost it too (so the shared stack's later usage
    # scenario compares the ledger with what Kling still answers for).
    stack.sandbox.forget(kling["task_id"])
