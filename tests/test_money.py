"""Money in the ledger and estimates from the vendor's price table (issue 13 items 7 and 8;
issue 14 "budgets a lead can rely on").

Against the real sandbox over loopback: a task charged in cash (the sandbox's cash-account
mode) shows its money on the task page, in the usage report and in the CSV; a "0.3333"
deduction is kept exactly; a budget in money refuses a task whose estimate would pass it;
the create form's estimate follows duration and mode; a refusal names every budget passed.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.urls import reverse

from klingweb.kling import parse_task
from tasks_app.budgets import BudgetExceeded, budget_alerts_check, budget_banners, budget_check
from tasks_app.models import Budget, BudgetMeasure, Deduction, Status, Task
from tasks_app.prices import task_estimate
from tasks_app.services import task_apply_remote
from tests import test_tasks_submission as submission_tests
from tests.test_tasks_submission import create, poll, queued

# The submission tests' fixtures: jobs inline, the operator account on the sandbox.
fast_and_isolated = submission_tests.fast_and_isolated
sync_jobs = submission_tests.sync_jobs
kling = submission_tests.kling

pytestmark = pytest.mark.django_db

T2V = {
    "model_name": "kling-v1-6",
    "prompt": "a fox in the snow",
    "mode": "std",
    "aspect_ratio": "16:9",
    "duration": "5",
}


@pytest.fixture
def cash_sandbox(fresh_sandbox):
    """The sandbox as a cash (balance) account charging 80 % of list price."""
    fresh_sandbox.config.cash, fresh_sandbox.config.cash_discount = True, 0.8
    yield fresh_sandbox
    fresh_sandbox.config.cash, fresh_sandbox.config.cash_discount = False, 1.0


def _csv(response) -> list[dict]:
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


def test_a_cash_charged_task_shows_its_money_on_page_report_and_csv(
    client, portal, kling, cash_sandbox, django_capture_on_commit_callbacks
):
    client.force_login(portal.member)
    task = create(client, portal.team, "text2video", T2V, django_capture_on_commit_callbacks)
    cash_sandbox.advance(2)
    poll(task)
    task.refresh_from_db()
    assert task.status == Status.SUCCEED

    # 1.5 units (0.3/s × 5 s) at 0.14 USD = 0.21 list price, charged 80 %: 0.168.
    row = Deduction.objects.get(task=task)
    assert (row.amount, row.list_price) == (Decimal("0.168"), Decimal("0.21"))
    page = client.get(
        reverse("tasks-detail", kwargs={"team": portal.team.code, "code": task.code})
    ).content.decode()
    assert "$0.168" in page and "list price $0.21" in page
    assert "estimated about 1.5 units ≈ $0.21" in page  # the estimate beside the charge

    client.force_login(portal.owner)
    report = client.get(reverse("usage-team", kwargs={"team": portal.team.code}))
    assert report.context["report"].totals.money == Decimal("0.168")
    assert "$0.168" in report.content.decode()
    url = reverse("usage-team-export", kwargs={"team": portal.team.code, "table": "ledger"})
    (line,) = _csv(client.get(url))
    assert (line["amount"], line["list_price"], line["money"]) == ("0.168", "0.21", "0.168")


def test_a_third_of_a_unit_is_kept_exactly(client, portal):
    task = Task.objects.create(
        team=portal.team, creator=portal.member, family="text2video", status=Status.SUBMITTED
    )
    remote = parse_task(
        {
            "id": "kt-third",
            "status": "succeeded",
            "external_id": str(task.code),
            "outputs": [{"type": "video", "id": "v", "url": "https://cdn.example/v.mp4"}],
            "billing": [{"charge_type": "unit", "amount": "0.3333", "package_type": "video"}],
        }
    )
    assert task_apply_remote(task_pk=task.pk, remote=remote, source="poll")
    row = Deduction.objects.get(task=task)
    row.refresh_from_db()
    assert row.units == Decimal("0.3333")
    task.refresh_from_db()
    assert task.final_unit_deduction == Decimal("0.3333")
    client.force_login(portal.member)
    page = client.get(
        reverse("tasks-detail", kwargs={"team": portal.team.code, "code": task.code})
    ).content.decode()
    assert "<strong>0.3333</strong> units" in page
    report = client.get(reverse("usage-team", kwargs={"team": portal.team.code}))
    assert report.context["report"].totals.units == Decimal("0.3333")


def test_a_cash_only_charge_of_the_new_design_is_recorded(portal):
    task = Task.objects.create(
        team=portal.team, creator=portal.member, family="text2video", status=Status.SUBMITTED
    )
    remote = parse_task(
        {
            "id": "kt-cash",
            "status": "succeeded",
            "external_id": str(task.code),
            "outputs": [{"type": "video", "id": "v", "url": "https://cdn.example/v.mp4"}],
            "billing": [
                {
                    "charge_type": "cash",
                    "cash_type": "balance",
                    "amount": "0.56",
                    "currency": "USD",
                    "list_price": "0.70",
                }
            ],
        }
    )
    task_apply_remote(task_pk=task.pk, remote=remote, source="poll")
    row = Deduction.objects.get(task=task)
    assert (row.units, row.amount, row.currency, row.list_price) == (
        Decimal("0"),
        Decimal("0.56"),
        "USD",
        Decimal("0.70"),
    )
    assert row.money == Decimal("0.56")


def test_a_money_budget_refuses_a_task_whose_estimate_would_pass_it(
    client, portal, kling, django_capture_on_commit_callbacks
):
    Budget.objects.create(
        team=portal.team, period="daily", measure=BudgetMeasure.MONEY, units=Decimal("0.5")
    )
    client.force_login(portal.member)
    # 5 s pro: 0.5 units/s × 5 = 2.5 units ≈ $0.35: fits.
    create(
        client,
        portal.team,
        "text2video",
        {**T2V, "mode": "pro"},
        django_capture_on_commit_callbacks,
    )
    before = Task.objects.count()
    # 10 s pro: 5 units ≈ $0.70, with $0.35 already reserved: refused, nothing queued.
    response = client.post(
        reverse("tasks-create", kwargs={"team": portal.team.code, "family": "text2video"}),
        {**T2V, "mode": "pro", "duration": "10"},
    )
    assert response.status_code in (200, 422)
    text = response.content.decode()
    assert "Team daily budget: $0.35 of $0.50 spent; this task needs about $0.70." in text
    assert Task.objects.count() == before


def test_a_refusal_names_every_budget_passed(portal):
    Budget.objects.create(team=portal.team, period="monthly", units=Decimal("3"))
    Budget.objects.create(
        team=portal.team,
        member=portal.member,
        period="daily",
        measure=BudgetMeasure.MONEY,
        units=Decimal("0.2"),
    )
    with pytest.raises(BudgetExceeded) as refused:
        budget_check(team=portal.team, user=portal.member, units=Decimal("5"))
    message = str(refused.value)
    assert "Team monthly budget: 0 of 3 units spent; this task needs about 5. Resets " in message
    assert "Daily cap for member: $0.00 of $0.20 spent; this task needs about $0.70." in message
    assert len(refused.value.exceeded) == 2


def test_reservations_are_released_when_a_task_ends(client, portal, kling):
    budget = Budget.objects.create(team=portal.team, period="daily", units=Decimal("100"))
    task = queued(portal.team, portal.member, mode="pro", duration="10")  # 5 units reserved
    client.force_login(portal.member)
    page = client.get(reverse("tasks-budgets", kwargs={"team": portal.team.code}))
    (status,) = page.context["statuses"]
    assert status.pending == Decimal("5")
    assert [t.pk for t in page.context["holding"]] == [task.pk]
    Task.objects.filter(pk=task.pk).update(status=Status.ERROR)  # ends without a charge
    page = client.get(reverse("tasks-budgets", kwargs={"team": portal.team.code}))
    assert page.context["statuses"][0].pending == 0 and page.context["holding"] == []
    assert budget.pk
    detail = client.get(
        reverse("tasks-detail", kwargs={"team": portal.team.code, "code": task.code})
    ).content.decode()
    assert "not charged" in detail and "about 5 units" not in detail


def test_the_estimate_follows_duration_and_mode(client, portal):
    client.force_login(portal.member)
    url = reverse("tasks-estimate", kwargs={"team": portal.team.code, "family": "text2video"})
    form = client.get(
        reverse("tasks-create", kwargs={"team": portal.team.code, "family": "text2video"})
    ).content.decode()
    assert f'hx-get="{url}"' in form and "change from:closest form" in form

    def shown(**options):
        return client.get(url, options).content.decode()

    assert "about 1.5 units ≈ $0.21" in shown(model_name="kling-v1-6", mode="std", duration="5")
    assert "about 3 units ≈ $0.42" in shown(model_name="kling-v1-6", mode="std", duration="10")
    assert "about 5 units ≈ $0.70" in shown(model_name="kling-v1-6", mode="pro", duration="10")
    assert "about 10 units ≈ $1.40" in shown(
        model_name="kling-v2-6", mode="pro", duration="10", sound="on"
    )
    # 2.6 with audio has no 720p price on the vendor's list.
    assert "No published price" in shown(model_name="kling-v2-6", mode="std", sound="on")
    client.force_login(portal.outsider)
    assert client.get(url).status_code == 404


def test_the_estimate_matches_what_the_sandbox_charges(
    client, portal, kling, fresh_sandbox, django_capture_on_commit_callbacks
):
    client.force_login(portal.member)
    body = {**T2V, "mode": "pro", "duration": "10"}
    task = create(client, portal.team, "text2video", body, django_capture_on_commit_callbacks)
    fresh_sandbox.advance(2)
    poll(task)
    task.refresh_from_db()
    assert task.estimated_units == task.final_unit_deduction == task_estimate("text2video", body)


def test_a_threshold_is_recorded_by_the_charge_that_crosses_it(portal, mailoutbox):
    budget = Budget.objects.create(team=portal.team, period="daily", units=Decimal("1"))
    task = Task.objects.create(
        team=portal.team, creator=portal.member, family="text2video", status=Status.SUBMITTED
    )
    remote = parse_task(
        {
            "task_id": "kt-crossing",
            "task_status": "succeed",
            "final_unit_deduction": "0.9",
            "task_info": {"external_task_id": str(task.code)},
            "task_result": {"videos": [{"id": "v", "url": "https://cdn.example/v.mp4"}]},
        }
    )
    task_apply_remote(task_pk=task.pk, remote=remote, source="poll")
    # In the same transaction as the charge: 80 and 90 % recorded, no job needed.
    assert sorted(budget.alerts.values_list("threshold", flat=True)) == [80, 90]
    banners = budget_banners(team=portal.team, user=portal.member)
    assert [b.threshold for b in banners] == [90]
    assert mailoutbox == []  # the mail waits for the job after commit
    budget_alerts_check(team_pk=portal.team.pk)
    budget_alerts_check(team_pk=portal.team.pk)
    assert len(mailoutbox) == 1 and "90 %" in mailoutbox[0].subject


def test_the_portal_and_sandbox_price_tables_agree():
    """Two copies written apart (client and sandbox are kept apart): every published figure
    is the same in both, so an estimate is what the sandbox then charges."""
    from klingweb.sandbox import prices as sandbox_prices
    from tasks_app import prices

    sandbox_rates = {
        key: {res: Decimal(rate) for res, rate in rates.items()}
        for key, rates in sandbox_prices.VIDEO_RATES.items()
    }
    assert sandbox_rates == prices.VIDEO_RATES
    for feature, units in sandbox_prices.PER_CALL_UNITS.items():
        assert prices.PER_CALL_UNITS[feature] == Decimal(units)
    for legacy, row in sandbox_prices.LEGACY_MODEL_ROWS.items():
        assert prices.MODEL_ROWS[legacy] == row
    assert prices.VENDOR_UNIT_PRICE_USD == sandbox_prices.VIDEO_UNIT_USD


def test_a_money_budget_reads_in_money_on_the_budgets_page(client, portal):
    client.force_login(portal.admin)
    url = reverse("tasks-budgets", kwargs={"team": portal.team.code})
    response = client.post(url, {"period": "monthly", "measure": "money", "units": "25"})
    assert response.status_code == 302
    budget = Budget.objects.get(team=portal.team)
    assert budget.measure == BudgetMeasure.MONEY
    page = client.get(url).content.decode()
    assert "$25.00" in page and "Team monthly budget set to $25.00." in page
