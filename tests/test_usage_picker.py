"""Usage reports' period picker in a real browser (issue 14 item 5): "Custom range" shows
its dates on every report, and the URL is the state — after Back/Forward the picker shows
the period of the address bar, the one the report shows.

Chromium runs against the Django test client (``tests/browser_support.py``): real CSS,
htmx 2 swaps and its history cache, the test's database.
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from tests.browser_support import ORIGIN, chromium, routed_page  # noqa: F401 (fixture)

# Committed rows: Playwright calls the route handlers (Django) with a connection of their own.
pytestmark = pytest.mark.django_db(transaction=True)
#: The heading of a custom range report: its dates.
CUSTOM = re.compile(r"^\d{2} \w{3} \d{4} – \d{2} \w{3} \d{4}")


def _pages(portal) -> list[tuple[str, object]]:
    return [
        (reverse("usage-team", kwargs={"team": portal.team.code}), portal.member),
        (reverse("usage-mine"), portal.member),
        (reverse("usage-company"), portal.owner),
    ]


def test_custom_range_shows_its_dates_on_every_report(chromium, client, portal):  # noqa: F811
    portal.owner.is_staff = True
    portal.owner.save(update_fields=["is_staff"])
    for path, user in _pages(portal):
        client.force_login(user)
        page, errors = routed_page(chromium, client)
        page.goto(ORIGIN + path)
        start = page.locator("#id_start")
        expect(start).to_be_hidden()
        page.select_option("#id_period", "custom")
        expect(start).to_be_visible()
        expect(page.locator("#id_end")).to_be_visible()
        page.fill("#id_start", "2026-01-01")
        page.fill("#id_end", "2026-01-31")
        page.get_by_role("button", name="Show").click()
        expect(page).to_have_url(re.compile(r"period=custom.*start=2026-01-01"))
        expect(page.locator("#usage-report h2").first).to_contain_text("01 Jan 2026 – 31 Jan 2026")
        expect(start).to_be_visible()
        assert not errors, (path, errors)
        page.context.close()


def test_back_and_forward_keep_picker_and_report_together(chromium, client, portal):  # noqa: F811
    client.force_login(portal.member)
    page, errors = routed_page(chromium, client)
    path = reverse("usage-team", kwargs={"team": portal.team.code})
    page.goto(ORIGIN + path)
    period = page.locator("#id_period")
    heading = page.locator("#usage-report h2").first
    expect(heading).to_contain_text("This month")

    page.select_option("#id_period", "7d")
    expect(page).to_have_url(re.compile(r"period=7d"))
    expect(heading).to_contain_text("Last 7 days")
    page.select_option("#id_period", "custom")
    expect(page).to_have_url(re.compile(r"period=custom"))
    expect(heading).to_have_text(CUSTOM)

    page.go_back()
    expect(page).to_have_url(re.compile(r"period=7d"))
    expect(heading).to_contain_text("Last 7 days")
    expect(period).to_have_value("7d")
    expect(page.locator("#id_start")).to_be_hidden()

    page.go_back()
    expect(page).to_have_url(re.compile(re.escape(path) + "$"))
    expect(heading).to_contain_text("This month")
    expect(period).to_have_value("this_month")

    page.go_forward()
    expect(page).to_have_url(re.compile(r"period=7d"))
    expect(period).to_have_value("7d")
    page.go_forward()
    expect(page).to_have_url(re.compile(r"period=custom"))
    expect(period).to_have_value("custom")
    expect(page.locator("#id_start")).to_be_visible()
    expect(heading).to_have_text(CUSTOM)

    # A report opened from its URL (shared link, reload) shows the URL's choice too.
    page.goto(ORIGIN + path + "?period=30d")
    expect(period).to_have_value("30d")
    expect(heading).to_contain_text("Last 30 days")
    assert not errors, errors
