"""Browser scenario of issue 13 item 1 and issue 14 "task lifecycle": a team admin adds a
Kling account by API key, whose connection test fails; switching to it asks for a
confirmation; a member's task waits on it, another is cancelled; after the admin switches
back, the waiting task is sent through the operator's account without anyone touching it.

Runs against the real portal processes and the in-process sandbox (``tests/e2e/conftest``).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import Stack, sign_in
from tests.e2e.test_scenarios import LIVE_MS, create_task

pytestmark = pytest.mark.e2e

OWNER, MEMBER = "studio-owner", "studio-member"
WRONG_KEY = "not-a-key-kling-knows-8Wq3"


def _fill_prompt(text: str):
    return lambda page: page.get_by_label("Prompt").first.fill(text)


def _back_to_the_operators_account(admin, stack: Stack, team: str) -> None:
    """Switch the team back to the operator's account if a failure left it elsewhere."""
    admin.goto(f"{stack.url}/t/{team}/settings/")
    button = admin.locator("#kling-default").get_by_role("button", name="Use for this team")
    if button.count():
        button.click()
        expect(admin.get_by_text("The team now uses the operator's account.")).to_be_visible()


def test_7_untested_account_needs_confirmation_waiting_task_follows_the_switch_and_cancel(
    stack: Stack, new_page, shots
):
    admin = new_page()
    team = sign_in(admin, stack, OWNER)

    # The admin adds an API-key account; the key is shown by its last 4 characters only.
    admin.goto(f"{stack.url}/t/{team}/settings/")
    admin.get_by_role("link", name="Add a Kling account").click()
    admin.get_by_label("Name").fill("Console key")
    admin.get_by_label("Region").select_option("custom")
    admin.get_by_label("Custom base URL").fill(stack.sandbox.base_url)
    admin.get_by_role("radio", name="API key").check()
    admin.locator("#id_api_key").fill(WRONG_KEY)
    shots(admin, "add-account")
    admin.get_by_role("button", name="Add", exact=True).click()
    expect(admin.get_by_text("Test the connection, then use it for the team")).to_be_visible()
    assert WRONG_KEY not in admin.content()
    expect(admin.get_by_text(f"…{WRONG_KEY[-4:]}").first).to_be_visible()

    # Its connection test fails: Kling refuses the key.
    admin.get_by_role("button", name="Test connection").click()
    expect(admin.locator(".vendor-call .msg-error")).to_be_visible(timeout=LIVE_MS)
    shots(admin, "test-failed")

    try:
        # Switching to it asks first; "Use anyway" switches.
        admin.get_by_role("button", name="Use for this team").click()
        expect(admin.get_by_text("its last connection test failed")).to_be_visible()
        shots(admin, "confirm-switch")
        admin.get_by_role("button", name="Use anyway").click()
        expect(admin.get_by_text("The team now uses Console key.")).to_be_visible()

        # A member's task waits on the broken account; another is cancelled before it is sent.
        member = new_page()
        sign_in(member, stack, MEMBER)
        waiting = create_task(
            member, stack, team, "text2video", _fill_prompt("A kite over a cliff"), shots, "waiting"
        )
        expect(member.get_by_text(re.compile("Waiting to be sent: Kling refused"))).to_be_visible(
            timeout=LIVE_MS
        )
        shots(member, "waiting-on-broken-account")
        cancelled = create_task(
            member, stack, team, "text2video", _fill_prompt("A cat on a piano"), shots, "to-cancel"
        )
        member.on("dialog", lambda dialog: dialog.accept())
        member.get_by_role("button", name="Cancel", exact=True).click()
        expect(member.get_by_text("Task cancelled. Nothing was sent to Kling")).to_be_visible()
        expect(member.locator(".badge-cancelled").first).to_be_visible()
        expect(member.get_by_text("nothing charged")).to_be_visible()
        shots(member, "cancelled")

        # The admin switches back to the operator's account: the waiting task is sent through
        # it at the poller's next cycle, the cancelled one never.
        admin.goto(f"{stack.url}/t/{team}/settings/")
        admin.locator("#kling-default").get_by_role("button", name="Use for this team").click()
        expect(admin.get_by_text("The team now uses the operator's account.")).to_be_visible()
        stack.wait_kling_task(family="text2video", external_task_id=waiting, timeout=120)
        member.goto(f"{stack.url}/t/{team}/tasks/{waiting}/")
        expect(member.locator(".badge-submitted, .badge-processing").first).to_be_visible(
            timeout=LIVE_MS
        )
        shots(member, "sent-through-the-new-account")
        assert not [t for t in stack.kling_tasks() if t["external_task_id"] == cancelled]
    finally:
        # The stack is shared by every scenario: never leave the team on the broken account.
        _back_to_the_operators_account(admin, stack, team)
