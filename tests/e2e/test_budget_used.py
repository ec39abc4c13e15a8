"""Browser scenario of issue 14 item 2: a budget never shows more "used" than what was
charged plus what the team's live tasks reserve.

The team's owner sets a monthly team budget on the budgets page, creates a text-to-video
task, and reads the budgets page while the task waits at Kling and again after it finished:

- while the task runs it is listed under "What is holding the budget" with its estimate,
  the "Reserved (estimated)" column is the sum of that list, and "Used" is
  (charged + reserved) / limit;
- once the task succeeded it has left the list, its reservation is gone, "Charged" grew by
  at least what its own page says it was charged (other scenarios' tasks of the team may
  finish with it), and "Used" is again charged + reserved.

Everything is read from the pages a lead uses; Kling is the sandbox, moved by the test.
The budget is removed at the end so the other scenarios of the shared stack are not limited.
"""

from __future__ import annotations

import re
import time
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import TIMEOUT_MS, Stack, sign_in

# Both passes: the reservation is taken under a row lock (``select_for_update`` on the team,
# a no-op on SQLite) by the web process while the worker and the poller write the same rows.
pytestmark = [pytest.mark.e2e, pytest.mark.both_databases]

OWNER = "studio-owner"
TASK_URL = re.compile(r"/t/[0-9a-f-]{36}/tasks/([0-9a-f-]{36})/$")
LIVE_MS = 30_000
#: The first limit set by the test: large enough never to refuse the shared stack's tasks.
LIMIT = Decimal("5000")
NUMBER = r"([0-9][0-9,]*(?:\.[0-9]+)?)"

expect.set_options(timeout=TIMEOUT_MS)


def _units(text: str) -> Decimal:
    """``"1,234.5 units"`` / ``"1 unit"`` → ``Decimal("1234.5")``."""
    match = re.search(NUMBER + r"\s*units?\b", text)
    assert match, f"no units in {text!r}"
    return Decimal(match.group(1).replace(",", ""))


def _budget_row(page) -> dict:
    """The team's monthly budget row as the page shows it, plus the holding list."""
    row = page.locator("#budgets tbody tr", has_text="Team monthly budget").first
    expect(row).to_be_visible()
    cells = row.locator("td").all_inner_texts()
    holding = {}
    for line in page.locator("table.holding tbody tr").all():
        link = line.locator("a").first.get_attribute("href") or ""
        code = link.rstrip("/").rsplit("/", 1)[-1]
        holding[code] = _units(line.locator("td").nth(4).inner_text())
    return {
        "limit": _units(cells[1]),
        "charged": _units(cells[2]),
        "reserved": _units(cells[3]),
        "percent": int(re.search(r"(\d+)\s*%", cells[4]).group(1)),
        "holding": holding,
    }


def _assert_used_is_charged_plus_reserved(figures: dict) -> None:
    """The page's own arithmetic: reserved = the holding list, used = charged + reserved."""
    assert figures["reserved"] == sum(figures["holding"].values(), Decimal("0")), figures
    spent = figures["charged"] + figures["reserved"]
    assert figures["percent"] == int(spent * 100 / figures["limit"]), figures


def _set_team_monthly_budget(page, limit: Decimal) -> None:
    """Save the team's monthly budget in units through the form on the budgets page."""
    page.get_by_label("Period").select_option("monthly")
    page.get_by_label("Counted in").select_option("units")
    page.get_by_label("Limit").fill(str(limit))
    page.get_by_label("Member").select_option(label="Whole team")
    page.get_by_role("button", name="Save budget").click()
    expect(page.locator("#budgets .msg-success")).to_contain_text("Team monthly budget")
    expect(page.locator("#budgets tbody tr", has_text="Team monthly budget")).to_contain_text(
        f"{limit:,} units".replace(".0 ", " ")
    )


def test_budget_used_is_charged_plus_reserved_for_live_tasks(stack: Stack, new_page, shots):
    page = new_page()
    team = sign_in(page, stack, OWNER)
    budgets_url = f"{stack.url}/t/{team}/budgets/"
    page.goto(budgets_url)
    _set_team_monthly_budget(page, LIMIT)
    try:
        first = _budget_row(page)
        assert first["limit"] == LIMIT
        # A limit just above what the month holds already, so one task moves "Used".
        limit = first["charged"] + first["reserved"] + 20
        _set_team_monthly_budget(page, limit)
        before = _budget_row(page)
        assert before["limit"] == limit
        _assert_used_is_charged_plus_reserved(before)
        shots(page, "budget-set")

        page.goto(f"{stack.url}/t/{team}/tasks/new/text2video/")
        page.get_by_label("Prompt").first.fill(f"A budget ledger on a desk, {time.time_ns()}")
        page.get_by_role("button", name="Create task").click()
        page.wait_for_url(TASK_URL)
        code = TASK_URL.search(page.url).group(1)
        stack.created.append((team, code))
        stack.wait_kling_task(family="text2video", external_task_id=code)

        page.goto(budgets_url)
        running = _budget_row(page)
        assert code in running["holding"], running
        assert running["holding"][code] > 0
        _assert_used_is_charged_plus_reserved(running)
        assert running["percent"] > before["percent"], (before, running)
        shots(page, "budget-while-running")

        stack.finish_all()
        page.goto(f"{stack.url}/t/{team}/tasks/{code}/")
        expect(page.locator(".badge-succeed").first).to_be_visible(timeout=LIVE_MS)
        status = page.locator(".status-line")
        expect(status).to_contain_text("Charged")
        charged = _units(re.search(r"Charged ([^·]+)", status.inner_text()).group(1))
        assert charged > 0

        page.goto(budgets_url)
        after = _budget_row(page)
        assert code not in after["holding"], after
        # Other scenarios' tasks that finished with this one are charged too: at least ours.
        assert after["charged"] >= running["charged"] + charged, (running, after, charged)
        _assert_used_is_charged_plus_reserved(after)
        shots(page, "budget-after-charge")
    finally:
        page.goto(budgets_url)
        row = page.locator("#budgets tbody tr", has_text="Team monthly budget").first
        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Remove").click()
        expect(page.locator("#budgets .msg-success")).to_be_visible()
