"""The budget form shows the server's errors (issue 14 item 6), and any other server error
answered to an htmx request shows on the page (a message in ``#htmx-error``).

In Chromium on the Django test client (``tests/browser_support.py``): the admin types a
15-digit amount or a negative one (the browser's own check switched off, as an old browser
or a script would send it); the server answers 422 with the form and its errors, which
htmx swaps in. A request refused with 403 (the admin lost the role meanwhile) shows a
message instead of doing nothing.
"""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from klingweb.accounts.models import Membership, Role
from tasks_app.models import Budget
from tests.browser_support import ORIGIN, chromium, routed_page  # noqa: F401 (fixture)

# Committed rows: Playwright calls the route handlers (Django) with a connection of their own.
pytestmark = pytest.mark.django_db(transaction=True)


def _open(chromium, client, portal):  # noqa: F811
    client.force_login(portal.admin)
    page, errors = routed_page(chromium, client)
    page.goto(ORIGIN + reverse("tasks-budgets", kwargs={"team": portal.team.code}))
    # What a browser without the number input's own checks (or a script) would send.
    page.eval_on_selector("#budgets form[hx-post$='/budgets/']", "form => form.noValidate = true")
    return page, errors


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("123456789012345", "no more than 12 digits"),
        ("-5", "greater than or equal to 0"),
    ],
)
def test_budget_form_shows_the_servers_errors(chromium, client, portal, amount, message):  # noqa: F811
    page, errors = _open(chromium, client, portal)
    page.get_by_label("Limit").fill(amount)
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Save budget").click()
    assert answer.value.status == 422
    expect(page.locator("#budgets .errorlist")).to_contain_text(message)
    expect(page.get_by_label("Limit")).to_have_value(amount)
    assert not Budget.objects.filter(team=portal.team).exists()
    assert [e for e in errors if "422" not in e] == []


def test_other_server_errors_show_a_message(chromium, client, portal):  # noqa: F811
    page, errors = _open(chromium, client, portal)
    Membership.objects.filter(team=portal.team, user=portal.admin).update(role=Role.MEMBER)
    page.get_by_label("Limit").fill("100")
    page.get_by_role("button", name="Save budget").click()
    expect(page.locator("#htmx-error")).to_be_visible()
    expect(page.locator("#htmx-error")).to_contain_text("does not allow this (403)")
    assert not Budget.objects.filter(team=portal.team).exists()
    # The next request that works takes the message away.
    Membership.objects.filter(team=portal.team, user=portal.admin).update(role=Role.ADMIN)
    page.get_by_label("Limit").fill("100")
    page.get_by_role("button", name="Save budget").click()
    expect(page.locator("#budgets")).to_contain_text("set to 100 units")
    expect(page.locator("#htmx-error")).to_be_hidden()
