"""The CSV exports of the usage reports: their tables, rows and the streamed download.

Every export is a header row, then rows streamed from the database (``QuerySet.iterator`` in
chunks of 2000: a year of ledger rows never sits in memory) or the page's own figures
(``usage_figures``). Timestamps are ISO 8601 with the offset of the report's zone; units are
Kling credit units and money is in ``settings.KLING_CURRENCY`` (``money`` columns: the vendor's
cash figure, else units × ``KLING_UNIT_PRICE``), both written as plain decimal strings with
no trailing zeros and no grouping (``dec``: "0.3333", "12.5"); the ledger adds the vendor's
own cash figures (``amount``, ``currency``, ``list_price``) as sent; free text is made safe
for spreadsheets (``csv_text``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django.db.models.functions import TruncMonth
from django.http import StreamingHttpResponse

from klingweb import csv_safe
from klingweb.csv_safe import csv_cell
from klingweb.reporting.figures import Scope, money_sum, q3, units_sum, usage_figures
from klingweb.reporting.periods import Choice
from tasks_app.ledger import ledger_money_expr
from tasks_app.models import Deduction

#: Exportable tables of a team / personal report, with their header rows.
REPORT_TABLES: dict[str, list[str]] = {
    "ledger": [
        "recorded_at",
        "team",
        "member",
        "task",
        "kind",
        "family",
        "model_name",
        "mode",
        "task_status",
        "units",
        "note",
        "amount",
        "currency",
        "list_price",
        "money",
    ],
    "days": ["day", "family", "units", "money"],
    "families": [
        "family",
        "units",
        "failed_task_units",
        "tasks_charged",
        "average_units_per_task",
        "tasks_run",
        "succeeded",
        "failed",
        "lost",
        "money",
    ],
    "members": ["member", "units", "failed_task_units", "tasks_charged", "money"],
    "teams": ["team", "units", "failed_task_units", "tasks_charged", "money"],
    "models": ["family", "model_name", "mode", "units", "tasks_charged", "money"],
    "tasks": [
        "task",
        "team",
        "family",
        "model_name",
        "mode",
        "status",
        "creator",
        "created_at",
        "units",
        "money",
    ],
}
COMPANY_TABLES: dict[str, list[str]] = {
    "months": ["team", "month", "units", "money"],
    "ledger": REPORT_TABLES["ledger"],
}


def dec(value: Any) -> str:
    """A decimal cell: plain notation, no trailing zeros, no grouping ("0.3333", "12.5",
    "0"); "" for None."""
    if value is None:
        return ""
    text = format(value if isinstance(value, Decimal) else Decimal(str(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def csv_text(value: Any) -> str:
    """A free-text cell made safe for spreadsheets (``klingweb.csv_safe.csv_cell``)."""
    return csv_cell(value)


def _iso(value: dt.datetime | None, tz: dt.tzinfo) -> str:
    return value.astimezone(tz).isoformat() if value else ""


def ledger_csv_rows(*, ledger: QuerySet[Deduction], tz: dt.tzinfo) -> Iterator[list[str]]:
    """Rows of the ``ledger`` table, oldest first, streamed from the database in chunks of
    2000 (``QuerySet.iterator``): a year of rows never sits in memory. Timestamps ISO 8601
    with the offset of ``tz``; units and money as plain decimal strings (``dec``)."""
    rows = (
        ledger.order_by("recorded_at", "id")
        .annotate(row_money=ledger_money_expr())
        .values_list(
            "recorded_at",
            "team__name",
            "member__username",
            "task__code",
            "corrects_id",
            "family",
            "model_name",
            "mode",
            "task_status",
            "units",
            "note",
            "amount",
            "currency",
            "list_price",
            "row_money",
        )
    )
    for (
        recorded,
        team,
        member,
        task,
        corrects,
        family,
        model,
        mode,
        status,
        units,
        note,
        amount,
        currency,
        list_price,
        money,
    ) in rows.iterator(chunk_size=2000):
        yield [
            _iso(recorded, tz),
            csv_text(team),
            csv_text(member),
            str(task) if task else "",
            "correction" if corrects else "charge",
            family,
            csv_text(model),
            csv_text(mode),
            status,
            dec(units),
            csv_text(note),
            dec(amount),
            csv_text(currency),
            dec(list_price),
            dec(q3(Decimal(str(money)))),
        ]


def report_csv_rows(*, table: str, scope: Scope, choice: Choice) -> Iterator[list[str]]:
    """Rows (without header) of ``table`` (a key of ``REPORT_TABLES``) for ``scope`` and
    ``choice``: the tables are the page's figures (``usage_figures``), the ledger and the
    per-task table stream from grouped queries. Raises ``KeyError`` for an unknown table."""
    if table not in REPORT_TABLES:
        raise KeyError(table)
    period = choice.period
    ledger = scope.ledger(period)
    tz = period.tz
    if table == "ledger":
        yield from ledger_csv_rows(ledger=ledger, tz=tz)
    elif table == "days":
        figures = usage_figures(scope=scope, period=period)
        for (day, family), units in sorted(figures.per_day.items()):
            yield [day.isoformat(), family, dec(units), dec(figures.per_day_money[(day, family)])]
    elif table == "families":
        for f in usage_figures(scope=scope, period=period).families:
            yield [
                f.family,
                dec(f.units),
                dec(f.failed_units),
                str(f.charged_tasks),
                dec(f.average),
                str(f.tasks_run),
                str(f.succeeded),
                str(f.failed),
                str(f.lost),
                dec(f.money),
            ]
    elif table in ("members", "teams"):
        kind = "member" if table == "members" else "team"
        for g in usage_figures(scope=scope, period=period, group_kind=kind).groups:
            yield [
                csv_text(g.key if kind == "member" else g.label),
                dec(g.units),
                dec(g.failed_units),
                str(g.charged_tasks),
                dec(g.money),
            ]
    elif table == "models":
        for m in usage_figures(scope=scope, period=period).models:
            yield [
                m.family,
                csv_text(m.model_name),
                csv_text(m.mode),
                dec(m.units),
                str(m.charged_tasks),
                dec(m.money),
            ]
    else:  # tasks: every task charged in the period, most units first
        rows = (
            ledger.filter(task__isnull=False)
            .values(
                "task_id",
                "task__code",
                "task__team__name",
                "task__family",
                "task__model_name",
                "task__mode",
                "task__status",
                "task__creator__username",
                "task__created_at",
            )
            .annotate(spent=units_sum(), spent_money=money_sum())
            .order_by("-spent", "-task_id")
        )
        for r in rows.iterator(chunk_size=2000):
            yield [
                str(r["task__code"]),
                csv_text(r["task__team__name"]),
                r["task__family"],
                csv_text(r["task__model_name"]),
                csv_text(r["task__mode"]),
                r["task__status"],
                csv_text(r["task__creator__username"]),
                _iso(r["task__created_at"], tz),
                dec(q3(r["spent"])),
                dec(q3(r["spent_money"])),
            ]


def company_csv_rows(*, table: str, choice: Choice) -> Iterator[list[str]]:
    """Rows (without header) of a company table (``COMPANY_TABLES``): ``months`` (team,
    YYYY-MM, units; long format, teams with no units left out) or ``ledger`` (every team's
    ledger rows). Raises ``KeyError`` for an unknown table."""
    if table not in COMPANY_TABLES:
        raise KeyError(table)
    period = choice.period
    if table == "ledger":
        yield from ledger_csv_rows(ledger=Scope().ledger(period), tz=period.tz)
        return
    rows = (
        Deduction.objects.filter(recorded_at__gte=period.start, recorded_at__lt=period.end)
        .annotate(month=TruncMonth("recorded_at", tzinfo=period.tz))
        .values("team_id", "team__name", "month")
        .annotate(spent=units_sum(), spent_money=money_sum())
        .order_by("team__name", "team_id", "month")
    )
    for r in rows.iterator(chunk_size=2000):
        month = r["month"].astimezone(period.tz)
        yield [
            csv_text(r["team__name"]),
            f"{month:%Y-%m}",
            dec(q3(r["spent"])),
            dec(q3(r["spent_money"])),
        ]


# --- The streamed download -----------------------------------------------------------


class _Echo:
    """A file-like object whose ``write`` hands the line back (csv writer → generator)."""

    def write(self, value: str) -> str:
        return value


#: Lines of a CSV download sent together as one chunk of the streamed response (a year of a
#: team's ledger is some 50,000 lines: one chunk per line cost a WSGI write each).
CSV_LINES_PER_CHUNK = 1000


def csv_response(
    *, filename: str, header: list[str], rows: Iterable[list[str]]
) -> StreamingHttpResponse:
    """A streamed ``text/csv`` download named ``filename``: ``header`` then ``rows``, sent in
    chunks of ``CSV_LINES_PER_CHUNK`` lines (``StreamingHttpResponse``; at most one chunk of
    lines is held in memory). Not cached (``private, no-store``): a report carries a team's
    spending."""
    writer = csv_safe.writer(_Echo())

    def lines() -> Iterator[str]:
        chunk = [writer.writerow(header)]
        for row in rows:
            chunk.append(writer.writerow(row))
            if len(chunk) >= CSV_LINES_PER_CHUNK:
                yield "".join(chunk)
                chunk.clear()
        if chunk:
            yield "".join(chunk)

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    return response
