"""Usage reports (issue 7): totals, period edges, Decimal sums, CSV, access, HTMX, queries."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from klingweb.accounts.models import KlingAccount, Membership, Role, Team
from klingweb.reporting.exports import CSV_LINES_PER_CHUNK
from klingweb.reporting.figures import Scope, usage_report
from klingweb.reporting.periods import Choice, period_resolve
from klingweb.reporting.templatetags.usage_tags import (
    usage_cells,
    usage_count,
    usage_day,
    usage_units,
)
from tasks_app.models import Budget, Deduction, ResourcePackSnapshot, Status, Task
from tasks_app.resource_packs import resource_packs_latest, resource_packs_refresh
from tasks_app.rollups import rollup_add, rollups_rebuild

UTC = dt.UTC
PARIS = ZoneInfo("Europe/Paris")
LA = ZoneInfo("America/Los_Angeles")


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """The cast's passwords are hashed with a fast hasher: these tests are about reports."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def make_task(team, creator, *, at, family="text2video", status=Status.SUCCEED, **extra) -> Task:
    """A task created at ``at`` (aware) with ``status``."""
    extra.setdefault("model_name", "kling-v2-6")
    extra.setdefault("mode", "std")
    return Task.objects.create(
        team=team, creator=creator, family=family, status=status, created_at=at, **extra
    )


def ledger_create(**fields) -> Deduction:
    """``Deduction.objects.create(**fields)`` plus its rollup (``tasks_app.rollups``)."""
    row = Deduction.objects.create(**fields)
    rollup_add(row)
    return row


def charge(task: Task, units: str, *, at=None, corrects: Deduction | None = None) -> Deduction:
    """A ledger row for ``task`` (a correction when ``corrects`` is set), counted in the
    daily rollups and the team's ledger version as the ledger writer does (``rollup_add``)."""
    return ledger_create(
        team_id=task.team_id,
        task=task,
        member_id=task.creator_id,
        family=task.family,
        model_name=task.model_name,
        mode=task.mode,
        task_status=task.status,
        units=Decimal(units),
        recorded_at=at or task.created_at,
        corrects=corrects,
    )


def custom(first: str, last: str) -> dict[str, str]:
    """Query parameters of a custom period."""
    return {"period": "custom", "start": first, "end": last}


def parse_csv(response) -> list[list[str]]:
    """The rows of a streamed CSV response, parsed back with the csv module."""
    assert response.streaming
    body = b"".join(response.streaming_content).decode("utf-8")
    return list(csv.reader(io.StringIO(body)))


def team_report(team, params: dict[str, str]):
    """The report the team page builds for ``params`` (custom ranges only)."""
    tz = ZoneInfo(team.time_zone)
    period = period_resolve(
        key="custom",
        tz=tz,
        start=dt.date.fromisoformat(params["start"]),
        end=dt.date.fromisoformat(params["end"]),
    )
    return usage_report(scope=Scope(team_id=team.pk), choice=Choice(period=period))


@pytest.fixture
def ledger(portal):
    """A hand-computed month (March 2025, UTC team) of the Blue team:

    - member: text2video succeeded, 10 units; later corrected by −1.25 (so 8.75);
    - member: avatar failed but charged 3.5 units;
    - admin: avatar succeeded 4 units, corrected by +0.5 (4.5);
    - admin: text2video failed, not charged (no ledger row);
    - member: a queued task and a refused (error) task: not run, not charged;
    - other team: 100 units (never counted in the Blue team's report).
    Units spent 16.75; failed-task units 3.5; tasks run 4; succeeded 2; failed 2.
    """
    team = portal.team
    at = dt.datetime(2025, 3, 10, 12, tzinfo=UTC)
    t1 = make_task(team, portal.member, at=at)
    d1 = charge(t1, "10")
    charge(t1, "-1.25", at=at + dt.timedelta(days=2), corrects=d1)
    t2 = make_task(team, portal.member, at=at, family="avatar", status=Status.FAILED)
    charge(t2, "3.5")
    t3 = make_task(team, portal.admin, at=at + dt.timedelta(days=1), family="avatar", mode="pro")
    d3 = charge(t3, "4")
    charge(t3, "0.5", at=at + dt.timedelta(days=3), corrects=d3)
    make_task(team, portal.admin, at=at, status=Status.FAILED)
    make_task(team, portal.member, at=at, status=Status.QUEUED)
    make_task(team, portal.member, at=at, status=Status.ERROR)
    other = make_task(portal.other_team, portal.outsider, at=at)
    charge(other, "100")
    return {"t1": t1, "t2": t2, "t3": t3}


MARCH = custom("2025-03-01", "2025-03-31")


# --- totals -------------------------------------------------------------------------------


def test_totals_match_hand_computed_fixture(client, portal, ledger):
    client.force_login(portal.viewer)
    response = client.get(reverse("usage-team", kwargs={"team": portal.team.code}), MARCH)
    assert response.status_code == 200
    t = response.context["report"].totals
    assert t.units == Decimal("16.75")
    assert t.failed_units == Decimal("3.5")
    assert (t.tasks_run, t.succeeded, t.failed) == (4, 2, 2)
    assert t.charged_tasks == 3
    assert t.average == Decimal("5.583")  # 16.75 / 3
    html = response.content.decode()
    assert "16.75" in html and "3.5" in html


def test_families_members_models_and_top_tasks(portal, ledger):
    report = team_report(portal.team, MARCH)
    fams = {f.family: f for f in report.families}
    assert fams["text2video"].units == Decimal("8.75")
    assert (fams["text2video"].tasks_run, fams["text2video"].failed) == (2, 1)
    assert fams["avatar"].units == Decimal("8.0")
    assert fams["avatar"].failed_units == Decimal("3.5")
    assert fams["avatar"].average == Decimal("4.000")
    members = {g.label: g for g in report.groups}
    assert members["member"].units == Decimal("12.25")
    assert members["admin"].units == Decimal("4.5")
    assert members["member"].share == Decimal("73.1")
    models = {(m.family, m.mode): m.units for m in report.models}
    assert models == {
        ("text2video", "std"): Decimal("8.75"),
        ("avatar", "std"): Decimal("3.5"),
        ("avatar", "pro"): Decimal("4.5"),
    }
    top = [(r.task.pk, r.units) for r in report.top_tasks]
    assert top == [
        (ledger["t1"].pk, Decimal("8.75")),
        (ledger["t3"].pk, Decimal("4.5")),
        (ledger["t2"].pk, Decimal("3.5")),
    ]
    assert report.top_tasks[0].url == f"/t/{portal.team.code}/tasks/{ledger['t1'].code}/"


def test_negative_correction_in_a_later_period_counts_there(portal, ledger):
    # The −1.25 correction of t1 falls on 12 March: a report of 11–31 March sees it alone.
    report = team_report(portal.team, custom("2025-03-12", "2025-03-12"))
    assert report.totals.units == Decimal("-1.25")
    assert report.totals.charged_tasks == 0
    assert report.totals.average is None


def test_most_expensive_tasks_count_only_their_rows_in_the_period(portal):
    """A task's units are its ledger rows recorded in the period: a charge corrected twice in
    the period counts all three rows, a correction of a charge recorded before the period
    counts alone, a big charge corrected down ranks by what is left; ties: newest task first;
    at most ten tasks."""
    team, member = portal.team, portal.member
    march = dt.datetime(2025, 3, 5, 12, tzinfo=UTC)
    older = make_task(team, member, at=dt.datetime(2025, 2, 27, tzinfo=UTC))
    charge(older, "2", at=march, corrects=charge(older, "50"))  # 50 in February: 2 in March
    twice = make_task(team, member, at=march)
    first = charge(twice, "3")
    charge(twice, "1.5", at=march + dt.timedelta(days=1), corrects=first)
    charge(twice, "-0.5", at=march + dt.timedelta(days=2), corrects=first)  # 4 in March
    cut = make_task(team, member, at=march)
    charge(cut, "-8", at=march + dt.timedelta(days=1), corrects=charge(cut, "9"))  # 1
    tie_a, tie_b = (make_task(team, member, at=march) for _ in range(2))
    charge(tie_a, "2")
    charge(tie_b, "2")
    small = [make_task(team, member, at=march) for _ in range(7)]
    for t in small:
        charge(t, "0.125")
    report = team_report(team, MARCH)
    top = [(r.task.pk, r.units) for r in report.top_tasks]
    assert top == [
        (twice.pk, Decimal("4")),
        (tie_b.pk, Decimal("2")),
        (tie_a.pk, Decimal("2")),
        (older.pk, Decimal("2")),
        (cut.pk, Decimal("1")),
        *((t.pk, Decimal("0.125")) for t in reversed(small[-5:])),
    ]
    assert report.totals.units == Decimal("11.875")  # 2 + 4 + 1 + 2 + 2 + 7 × 0.125


def test_units_of_a_deleted_account_are_shown_as_such(client, portal, ledger):
    task = ledger["t1"]
    ledger_create(
        team=portal.team,
        task=None,
        member=None,
        family=task.family,
        units=Decimal("0.75"),
        recorded_at=task.created_at,
    )
    groups = {g.label: (g.key, g.units) for g in team_report(portal.team, MARCH).groups}
    assert groups["(deleted account)"] == ("", Decimal("0.75"))
    client.force_login(portal.member)
    url = reverse("usage-team-export", kwargs={"team": portal.team.code, "table": "members"})
    rows = parse_csv(client.get(url, MARCH))
    assert ["", "0.75", "0", "1", "0.105"] in rows  # money: 0.75 units × 0.14


def test_most_expensive_tasks_link_to_task_pages(client, portal, ledger):
    client.force_login(portal.member)
    response = client.get(reverse("usage-team", kwargs={"team": portal.team.code}), MARCH)
    assert f'href="/t/{portal.team.code}/tasks/{ledger["t1"].code}/"' in response.content.decode()


def test_filters_by_family_and_member(client, portal, ledger):
    client.force_login(portal.owner)
    url = reverse("usage-team", kwargs={"team": portal.team.code})
    report = client.get(url, {**MARCH, "family": "avatar"}).context["report"]
    assert report.totals.units == Decimal("8.0")
    report = client.get(url, {**MARCH, "member": "admin"}).context["report"]
    assert report.totals.units == Decimal("4.5")
    assert report.totals.tasks_run == 2


def test_decimal_units_sum_without_floating_point_drift(portal):
    task = make_task(portal.team, portal.member, at=dt.datetime(2025, 5, 2, tzinfo=UTC))
    rows = []
    for i in range(1000):
        for units in ("0.1", "0.2"):
            rows.append(
                Deduction(
                    team=portal.team,
                    task=task if i == 0 and units == "0.1" else None,
                    member=portal.member,
                    family="text2video",
                    units=Decimal(units),
                    recorded_at=dt.datetime(2025, 5, 2, 10, tzinfo=UTC),
                    task_status=Status.SUCCEED,
                )
            )
    Deduction.objects.bulk_create(rows)
    rollups_rebuild([portal.team.pk])
    report = team_report(portal.team, custom("2025-05-01", "2025-05-31"))
    assert report.totals.units == Decimal("300.000")
    assert str(report.totals.units) == "300.00000000"  # exact to the ledger's 8 places
    assert report.days.rows[1][2] == Decimal("300.000")


# --- periods and time zones ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "before", "after"),
    [
        # 31 March 23:59:59 and 1 April 00:00:00, local time, across Paris's DST change week.
        ("Europe/Paris", "2025-03-31T23:59:59+02:00", "2025-04-01T00:00:00+02:00"),
        ("America/Los_Angeles", "2025-03-31T23:59:59-07:00", "2025-04-01T00:00:00-07:00"),
    ],
)
def test_period_edges_at_local_midnight(portal, zone, before, after):
    team = portal.team
    team.time_zone = zone
    team.save()
    for stamp, units in ((before, "1"), (after, "2")):
        at = dt.datetime.fromisoformat(stamp)
        charge(make_task(team, portal.member, at=at), units)
    assert team_report(team, custom("2025-03-01", "2025-03-31")).totals.units == Decimal("1")
    april = team_report(team, custom("2025-04-01", "2025-04-30"))
    assert april.totals.units == Decimal("2")
    assert april.totals.tasks_run == 1
    # Days are local days: the 00:00:00 row is on 1 April, the first bar of April.
    assert april.days.rows[0][0] == dt.date(2025, 4, 1)
    assert april.days.rows[0][2] == Decimal("2")
    both = team_report(team, custom("2025-03-31", "2025-04-01"))
    assert [(day, total) for day, _, total in both.days.rows] == [
        (dt.date(2025, 3, 31), Decimal("1")),
        (dt.date(2025, 4, 1), Decimal("2")),
    ]


def test_day_buckets_follow_the_zone_across_dst(portal):
    team = portal.team
    team.time_zone = "America/Los_Angeles"
    team.save()
    # 9 March 2025: LA moves to PDT at 02:00; 23:30 local is 06:30 UTC the next day.
    at = dt.datetime(2025, 3, 9, 23, 30, tzinfo=LA)
    charge(make_task(team, portal.member, at=at), "7")
    report = team_report(team, custom("2025-03-09", "2025-03-10"))
    assert [t for _, _, t in report.days.rows] == [Decimal("7"), Decimal("0.000")]


def test_period_keys_resolve_to_local_days():
    now = dt.datetime(2025, 4, 1, 0, 30, tzinfo=PARIS)  # still 31 March in UTC
    this_month = period_resolve(key="this_month", tz=PARIS, now=now)
    assert (this_month.first_day, this_month.last_day) == (dt.date(2025, 4, 1), dt.date(2025, 4, 1))
    assert this_month.start == dt.datetime(2025, 4, 1, tzinfo=PARIS)
    last = period_resolve(key="last_month", tz=PARIS, now=now)
    assert (last.first_day, last.last_day) == (dt.date(2025, 3, 1), dt.date(2025, 3, 31))
    assert last.end == dt.datetime(2025, 4, 1, tzinfo=PARIS)
    seven = period_resolve(key="7d", tz=PARIS, now=now)
    assert (seven.first_day, len(seven.days)) == (dt.date(2025, 3, 26), 7)
    year = period_resolve(key="12m", tz=UTC, now=dt.datetime(2025, 2, 10, tzinfo=UTC))
    assert year.first_day == dt.date(2024, 3, 1) and len(year.months) == 12


def test_budget_progress_bars_show_spent_and_reset(client, portal):
    team = portal.team
    team.time_zone = "Europe/Paris"
    team.save()
    now = dt.datetime.now(UTC)
    charge(make_task(team, portal.member, at=now), "30")
    charge(make_task(team, portal.admin, at=now), "12.5")
    Budget.objects.create(team=team, period="monthly", units=Decimal("100"))
    Budget.objects.create(team=team, member=portal.member, period="daily", units=Decimal("20"))
    client.force_login(portal.viewer)
    response = client.get(reverse("usage-team", kwargs={"team": team.code}))
    rows = {(b.budget.member_id, b.budget.period): b for b in response.context["budgets"]}
    assert rows[(None, "monthly")].spent == Decimal("42.5")
    assert rows[(portal.member.pk, "daily")].spent == Decimal("30")
    assert rows[(portal.member.pk, "daily")].over
    html = response.content.decode()
    assert "<progress" in html and "42.5" in html and "used up" in html
    reset = rows[(None, "monthly")].resets_at.astimezone(PARIS)
    assert (reset.day, reset.hour, reset.minute) == (1, 0, 0)  # midnight in Paris
    assert reset > now
    assert rows[(portal.member.pk, "daily")].resets_at == rows[
        (portal.member.pk, "daily")
    ].starts_at + dt.timedelta(days=1)
    # My usage shows the budgets that bind me: my own and my team's.
    client.force_login(portal.member)
    mine = client.get(reverse("usage-mine")).context["budgets"]
    assert {(b.budget.member_id, b.spent) for b in mine} == {
        (None, Decimal("42.5")),
        (portal.member.pk, Decimal("30")),
    }


def test_invalid_custom_range_falls_back_and_says_so(client, portal, ledger):
    client.force_login(portal.member)
    url = reverse("usage-team", kwargs={"team": portal.team.code})
    response = client.get(url, custom("2025-03-31", "2025-03-01"))
    assert response.status_code == 200
    assert "The start date is after the end date." in response.content.decode()
    assert response.context["report"].period.key == "this_month"
    export = reverse("usage-team-export", kwargs={"team": portal.team.code, "table": "ledger"})
    assert client.get(export, custom("2025-03-31", "2025-03-01")).status_code == 400
    # Per-day reports span at most a year; the company's per-month report ten.
    too_long = custom("2023-01-01", "2025-03-31")
    assert "A range is at most 366 days." in client.get(url, too_long).content.decode()
    portal.member.is_staff = True
    portal.member.save()
    company = client.get(reverse("usage-company"), too_long)
    assert company.context["report"].period.first_day == dt.date(2023, 1, 1)


# --- my usage and company -----------------------------------------------------------------


def test_my_usage_spans_my_teams_only(client, portal, ledger):
    Membership.objects.create(user=portal.member, team=portal.other_team, role=Role.MEMBER)
    at = dt.datetime(2025, 3, 20, tzinfo=UTC)
    charge(make_task(portal.other_team, portal.member, at=at), "2.25")
    client.force_login(portal.member)
    response = client.get(reverse("usage-mine"), MARCH)
    report = response.context["report"]
    assert report.totals.units == Decimal("14.5")  # 8.75 + 3.5 in Blue, 2.25 in Red
    assert {g.label: g.units for g in report.groups} == {
        "Blue team": Decimal("12.25"),
        "Red team": Decimal("2.25"),
    }
    only_red = client.get(reverse("usage-mine"), {**MARCH, "team": str(portal.other_team.code)})
    assert only_red.context["report"].totals.units == Decimal("2.25")


def test_company_report_units_per_team_per_month(client, portal, ledger):
    staff = get_user_model().objects.create_user("finance", is_staff=True)
    charge(make_task(portal.team, portal.member, at=dt.datetime(2025, 4, 3, tzinfo=UTC)), "1.5")
    client.force_login(staff)
    response = client.get(reverse("usage-company"), custom("2025-03-01", "2025-04-30"))
    assert response.status_code == 200
    report = response.context["report"]
    assert report.months == [dt.date(2025, 3, 1), dt.date(2025, 4, 1)]
    cells = {r.team["name"]: r.months for r in report.teams}
    assert cells == {
        "Blue team": [Decimal("16.75"), Decimal("1.5")],
        "Red team": [Decimal("100"), Decimal("0.000")],
    }
    assert report.total == Decimal("118.25")
    assert "Kling notes that remaining quantities can lag by up to 12 hours" in (
        response.content.decode()
    )


# --- CSV ----------------------------------------------------------------------------------


def test_a_long_ledger_csv_arrives_whole_in_chunks_of_whole_lines(client, portal):
    """2,500 ledger rows: every row arrives, in three chunks of at most
    ``CSV_LINES_PER_CHUNK`` lines, none of them cutting a line."""
    team = portal.team
    at = dt.datetime(2025, 3, 10, 12, tzinfo=UTC)
    tasks = Task.objects.bulk_create(
        Task(
            team=team,
            creator=portal.member,
            family="text2video",
            status=Status.SUCCEED,
            created_at=at,
            model_name="kling-v2-6",
            mode="std",
        )
        for _ in range(2500)
    )
    Deduction.objects.bulk_create(
        Deduction(
            team_id=team.pk,
            task=task,
            member_id=portal.member.pk,
            family="text2video",
            model_name="kling-v2-6",
            mode="std",
            task_status=Status.SUCCEED,
            units=Decimal("1.5"),
            recorded_at=at + dt.timedelta(seconds=i),
        )
        for i, task in enumerate(tasks)
    )
    client.force_login(portal.viewer)
    url = reverse("usage-team-export", kwargs={"team": team.code, "table": "ledger"})
    response = client.get(url, MARCH)
    assert response.status_code == 200 and response.streaming
    chunks = [chunk.decode("utf-8") for chunk in response.streaming_content]
    assert [chunk.count("\r\n") for chunk in chunks] == [CSV_LINES_PER_CHUNK] * 2 + [501]
    assert all(chunk.endswith("\r\n") for chunk in chunks)
    rows = list(csv.reader(io.StringIO("".join(chunks))))
    assert len(rows) == 2501
    header = rows[0]
    assert {str(t.code) for t in tasks} == {
        dict(zip(header, r, strict=True))["task"] for r in rows[1:]
    }


def test_ledger_csv_streams_rows_with_iso_timestamps(client, portal, ledger):
    team = portal.team
    team.time_zone = "Europe/Paris"
    team.save()
    client.force_login(portal.viewer)
    url = reverse("usage-team-export", kwargs={"team": team.code, "table": "ledger"})
    response = client.get(url, MARCH)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = parse_csv(response)
    header, body = rows[0], rows[1:]
    assert header[:4] == ["recorded_at", "team", "member", "task"]
    assert len(body) == 5
    first = dict(zip(header, body[0], strict=True))
    when = dt.datetime.fromisoformat(first["recorded_at"])
    assert when == dt.datetime(2025, 3, 10, 12, tzinfo=UTC)
    assert first["recorded_at"].endswith("+01:00")  # Paris, before DST
    assert first["task"] == str(ledger["t1"].code)
    units = sorted(Decimal(dict(zip(header, r, strict=True))["units"]) for r in body)
    assert [str(u) for u in units] == ["-1.25", "0.5", "3.5", "4", "10"]
    kinds = [dict(zip(header, r, strict=True))["kind"] for r in body]
    assert kinds.count("correction") == 2
    assert {dict(zip(header, r, strict=True))["team"] for r in body} == {"Blue team"}


def test_table_csvs_match_the_page(client, portal, ledger):
    client.force_login(portal.member)

    def table(name):
        url = reverse("usage-team-export", kwargs={"team": portal.team.code, "table": name})
        return parse_csv(client.get(url, MARCH))

    families = table("families")
    assert families[0][:3] == ["family", "units", "failed_task_units"]
    assert families[1] == ["avatar", "8", "3.5", "2", "4", "2", "1", "1", "0", "1.12"]
    assert families[2] == ["text2video", "8.75", "0", "1", "8.75", "2", "1", "1", "0", "1.225"]
    members = {r[0]: Decimal(r[1]) for r in table("members")[1:]}
    assert members == {"member": Decimal("12.25"), "admin": Decimal("4.5")}
    models = table("models")
    assert len(models) == 4
    tasks = table("tasks")
    assert [r[0] for r in tasks[1:]] == [str(ledger[k].code) for k in ("t1", "t3", "t2")]
    days = table("days")
    assert days[0] == ["day", "family", "units", "money"]
    assert sum(Decimal(r[2]) for r in days[1:]) == Decimal("16.75")
    assert (
        client.get(
            reverse("usage-team-export", kwargs={"team": portal.team.code, "table": "nope"})
        ).status_code
        == 404
    )


def test_csv_text_cells_cannot_run_as_formulas(client, portal):
    user = get_user_model().objects.create_user("=HYPERLINK(1)")
    Membership.objects.create(user=user, team=portal.team, role=Role.MEMBER)
    charge(make_task(portal.team, user, at=dt.datetime(2025, 3, 5, tzinfo=UTC)), "-2")
    client.force_login(portal.owner)
    url = reverse("usage-team-export", kwargs={"team": portal.team.code, "table": "ledger"})
    rows = parse_csv(client.get(url, MARCH))
    assert rows[1][2] == "'=HYPERLINK(1)"
    assert rows[1][9] == "-2"  # units stay numbers


def test_mine_and_company_csv(client, portal, ledger):
    client.force_login(portal.member)
    rows = parse_csv(client.get(reverse("usage-mine-export", kwargs={"table": "teams"}), MARCH))
    assert rows == [
        ["team", "units", "failed_task_units", "tasks_charged", "money"],
        ["Blue team", "12.25", "3.5", "2", "1.715"],
    ]
    staff = get_user_model().objects.create_user("finance", is_staff=True)
    client.force_login(staff)
    url = reverse("usage-company-export", kwargs={"table": "months"})
    rows = parse_csv(client.get(url, MARCH))
    assert rows == [
        ["team", "month", "units", "money"],
        ["Blue team", "2025-03", "16.75", "2.345"],
        ["Red team", "2025-03", "100", "14"],
    ]


# --- access -------------------------------------------------------------------------------


def test_members_of_other_teams_get_404(client, portal, ledger):
    client.force_login(portal.outsider)
    code = portal.team.code
    assert client.get(reverse("usage-team", kwargs={"team": code})).status_code == 404
    url = reverse("usage-team-export", kwargs={"team": code, "table": "ledger"})
    assert client.get(url).status_code == 404


def test_every_member_role_reads_team_usage(client, portal):
    for user in (portal.owner, portal.admin, portal.member, portal.viewer):
        client.force_login(user)
        assert (
            client.get(reverse("usage-team", kwargs={"team": portal.team.code})).status_code == 200
        )


def test_anonymous_is_sent_to_login(client, portal):
    for url in (
        reverse("usage-team", kwargs={"team": portal.team.code}),
        reverse("usage-team-export", kwargs={"team": portal.team.code, "table": "ledger"}),
        reverse("usage-mine"),
        reverse("usage-mine-export", kwargs={"table": "ledger"}),
        reverse("usage-company"),
        reverse("usage-company-export", kwargs={"table": "months"}),
    ):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("accounts-login")), url


def test_company_page_is_for_staff_only(client, portal):
    client.force_login(portal.owner)  # a team owner, not staff
    assert client.get(reverse("usage-company")).status_code == 404
    url = reverse("usage-company-export", kwargs={"table": "ledger"})
    assert client.get(url).status_code == 404
    portal.owner.is_staff = True
    portal.owner.save()
    assert client.get(reverse("usage-company")).status_code == 200


def test_post_is_405(client, portal):
    portal.owner.is_staff = True
    portal.owner.save()
    client.force_login(portal.owner)
    for url in (
        reverse("usage-team", kwargs={"team": portal.team.code}),
        reverse("usage-mine"),
        reverse("usage-company"),
        reverse("usage-team-export", kwargs={"team": portal.team.code, "table": "ledger"}),
    ):
        assert client.post(url).status_code == 405, url


# --- HTMX ---------------------------------------------------------------------------------


def test_htmx_request_gets_only_the_report_region(client, portal, ledger):
    client.force_login(portal.member)
    url = reverse("usage-team", kwargs={"team": portal.team.code})
    response = client.get(url, MARCH, headers={"HX-Request": "true"})
    html = response.content.decode().strip()
    assert html.startswith('<section id="usage-report"')
    assert html.endswith("</section>")
    assert "<html" not in html and "Budgets" not in html and 'name="period"' not in html
    assert "16.75" in html
    assert "HX-Request" in response["Vary"]
    # The address bar gets the canonical URL of the choice, ready to share.
    assert response["HX-Push-Url"] == f"{url}?period=custom&start=2025-03-01&end=2025-03-31"
    full = client.get(url, MARCH)
    assert '<section id="usage-report"' in full.content.decode()
    assert 'hx-push-url="true"' in full.content.decode()


def test_htmx_history_restore_gets_the_whole_page(client, portal):
    client.force_login(portal.member)
    url = reverse("usage-team", kwargs={"team": portal.team.code})
    headers = {"HX-Request": "true", "HX-History-Restore-Request": "true"}
    assert "<html" in client.get(url, headers=headers).content.decode()


def test_htmx_partials_of_mine_and_company(client, portal, ledger):
    portal.member.is_staff = True
    portal.member.save()
    client.force_login(portal.member)
    for url in (reverse("usage-mine"), reverse("usage-company")):
        html = client.get(url, MARCH, headers={"HX-Request": "true"}).content.decode().strip()
        assert html.startswith('<section id="usage-report"'), url
        assert "Resource packs" not in html


def test_export_links_keep_the_chosen_period(client, portal, ledger):
    client.force_login(portal.member)
    url = reverse("usage-team", kwargs={"team": portal.team.code})
    html = client.get(url, {**MARCH, "family": "avatar"}).content.decode()
    assert (
        "export/ledger.csv?period=custom&amp;start=2025-03-01&amp;end=2025-03-31&amp;family=avatar"
        in html
    )


# --- charts -------------------------------------------------------------------------------


def test_charts_are_served_by_the_portal_with_tables(client, portal, ledger):
    assert finders.find("vendor/chartjs/chart.umd.min.js")
    assert finders.find("vendor/chartjs/LICENSE.md")
    client.force_login(portal.member)
    html = client.get(reverse("usage-team", kwargs={"team": portal.team.code}), MARCH)
    html = html.content.decode()
    assert "/static/vendor/chartjs/chart.umd.min.js" in html
    assert "cdn" not in html.lower()
    assert '<script id="chart-days" type="application/json">' in html
    assert 'data-chart="chart-days"' in html and "<details>" in html
    assert "Units per day as a table" in html


def test_table_filters_format_units_counts_and_days():
    assert usage_units(Decimal("12345.500")) == "12,345.5"
    assert usage_units(Decimal("-0.000")) == "0"
    assert usage_count(4032) == "4,032"
    assert usage_day(dt.date(2025, 10, 1)) == "Wed 1 Oct"
    assert (
        usage_cells([Decimal("1.250"), None]) == '<td class="num">1.25</td><td class="num">–</td>'
    )


# --- queries ------------------------------------------------------------------------------
#
# A report's cost must not depend on how much there is to report: the same number of queries
# with 5 and with 50 of everything (ledger rows, tasks, members with a budget cap, teams).
# The counts themselves belong to one SQL implementation and are not pinned.

SMALL, LARGE = 5, 50


def _grow(portal, start: int, stop: int) -> None:
    """Rows ``start`` … ``stop - 1`` of a March 2025 ledger, one of each per index: a member of
    the Blue team with a daily, weekly or monthly cap; a task (every family, model and mode,
    a quarter failed) by that member or, every other index, by the owner; its ledger row, and
    every fourth a correction of it; and every fifth index a new team the owner belongs to,
    with a charged task of the owner's there."""
    at = dt.datetime(2025, 3, 3, tzinfo=UTC)
    families = ["text2video", "avatar", "multi_shot"]
    for i in range(start, stop):
        user = get_user_model().objects.create_user(f"grow-{i}")
        Membership.objects.create(user=user, team=portal.team, role=Role.MEMBER)
        Budget.objects.create(
            team=portal.team,
            member=user,
            period=["daily", "weekly", "monthly"][i % 3],
            units=Decimal("100"),
        )
        task = make_task(
            portal.team,
            portal.owner if i % 2 else user,
            at=at + dt.timedelta(hours=i),
            family=families[i % 3],
            status=Status.FAILED if i % 4 == 0 else Status.SUCCEED,
            model_name=f"m{i % 5}",
            mode="std" if i % 2 else "pro",
        )
        row = charge(task, "1.5")
        if i % 4 == 1:
            charge(task, "-0.25", at=task.created_at + dt.timedelta(days=1), corrects=row)
        if i % 5 == 0:
            team = Team.objects.create(name=f"Team {i}")
            Membership.objects.create(user=portal.owner, team=team, role=Role.MEMBER)
            charge(make_task(team, portal.owner, at=at + dt.timedelta(hours=i)), "2")


def _queries(client, url: str, params: dict[str, str], **headers: str) -> int:
    """Queries of one GET of ``url``, its streamed body read to the end."""
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, params, headers=headers)
        assert response.status_code == 200, url
        if response.streaming:
            b"".join(response.streaming_content)
    return len(ctx.captured_queries)


def _requests(portal) -> dict[str, tuple[str, dict[str, str], dict[str, str]]]:
    """Every usage page, its HTMX report region, and every CSV export, for March 2025."""
    team = {"team": portal.team.code}
    htmx = {"HX-Request": "true"}
    out = {
        "team page": (reverse("usage-team", kwargs=team), MARCH, {}),
        "team region": (reverse("usage-team", kwargs=team), MARCH, htmx),
        "team region, one member": (
            reverse("usage-team", kwargs=team),
            {**MARCH, "member": "owner"},
            htmx,
        ),
        "my page": (reverse("usage-mine"), MARCH, {}),
        "my region": (reverse("usage-mine"), MARCH, htmx),
        "company page": (reverse("usage-company"), MARCH, {}),
        "company region": (reverse("usage-company"), MARCH, htmx),
    }
    for table in ("ledger", "days", "families", "members", "models", "tasks"):
        url = reverse("usage-team-export", kwargs={**team, "table": table})
        out[f"team {table}.csv"] = (url, MARCH, {})
    for table in ("ledger", "teams"):
        out[f"my {table}.csv"] = (reverse("usage-mine-export", kwargs={"table": table}), MARCH, {})
    for table in ("months", "ledger"):
        url = reverse("usage-company-export", kwargs={"table": table})
        out[f"company {table}.csv"] = (url, MARCH, {})
    return out


def test_queries_do_not_grow_with_rows_members_and_teams(client, portal):
    portal.owner.is_staff = True
    portal.owner.save()
    Budget.objects.create(team=portal.team, period="monthly", units=Decimal("100"))
    client.force_login(portal.owner)
    requests = _requests(portal)

    def measure() -> dict[str, int]:
        return {name: _queries(client, url, p, **h) for name, (url, p, h) in requests.items()}

    _grow(portal, 0, SMALL)
    small = measure()
    _grow(portal, SMALL, LARGE)
    large = measure()
    assert large == small
    # The figures did grow: the same queries now read ten times the rows.
    report = client.get(requests["team page"][0], MARCH).context["report"]
    assert len(report.groups) == LARGE // 2 + 1  # the members who ran a task, and the owner
    assert report.totals.charged_tasks == LARGE


def test_report_figures_take_the_same_queries_for_5_and_50_rows(portal):
    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            report = team_report(portal.team, MARCH)
        assert report.top_tasks  # the most expensive tasks are loaded, not skipped
        return len(ctx.captured_queries)

    _grow(portal, 0, SMALL)
    small = queries()
    _grow(portal, SMALL, LARGE)
    assert queries() == small


# --- resource packs -----------------------------------------------------------------------


def test_resource_packs_fetched_at_most_once_a_second(kling_settings, client, db):
    first = resource_packs_refresh()
    account = KlingAccount.objects.operator_default()
    assert first.fetched == [account.pk]
    again = resource_packs_refresh()  # the same second: skipped, no second call
    assert again.skipped == [account.pk]
    assert ResourcePackSnapshot.objects.count() == 1
    later = resource_packs_refresh(now=dt.datetime.now(UTC) + dt.timedelta(seconds=2))
    assert later.fetched == [account.pk]
    [latest] = resource_packs_latest()
    assert latest.account == account and not latest.error
    pack = latest.packs[0]
    assert pack.total and pack.remaining is not None and pack.status
    staff = get_user_model().objects.create_user("finance", is_staff=True)
    client.force_login(staff)
    html = client.get(reverse("usage-company")).content.decode()
    assert pack.name in html and pack.status in html


def test_resource_pack_failure_is_shown_not_raised(kling_settings, client, db, settings):
    settings.KLING_SECRET_KEY = "not-the-sandbox-secret"
    report = resource_packs_refresh()
    assert report.failed
    [latest] = resource_packs_latest()
    assert latest.error.startswith("authentication")
    assert latest.packs == []
    staff = get_user_model().objects.create_user("finance", is_staff=True)
    client.force_login(staff)
    assert "The last fetch failed" in client.get(reverse("usage-company")).content.decode()


def test_team_without_usage_renders_empty(client, portal):
    client.force_login(portal.viewer)
    team = Team.objects.get(pk=portal.team.pk)
    response = client.get(reverse("usage-team", kwargs={"team": team.code}))
    assert response.status_code == 200
    assert "No units were recorded" in response.content.decode()
