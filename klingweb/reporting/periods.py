"""The period picker of the usage reports: which days a report covers, and its filters.

A period is whole days, midnight to midnight in a time zone: the team's (``Team.time_zone``)
for a team report, the portal's (``settings.TIME_ZONE``) for the signed-in member's report
across teams and for the company report. ``start`` is inclusive, ``end`` exclusive.

``UsageForm`` reads the picker's GET parameters (``period``, ``start``, ``end``, ``family``,
``member``, ``team``); ``usage_choice`` turns a bound form into a ``Choice`` (a ``Period`` and
the filters), which the figures and the CSV exports take.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.utils import timezone

from tasks_app.models import Family

#: Longest custom range, in days: a year for the per-day reports, ten for the company's
#: per-month report.
MAX_RANGE_DAYS = 366
MAX_COMPANY_RANGE_DAYS = 3660

TEAM_PERIODS: dict[str, str] = {
    "this_month": "This month",
    "last_month": "Last month",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "90d": "Last 90 days",
    "custom": "Custom range",
}
COMPANY_PERIODS: dict[str, str] = {
    "12m": "Last 12 months",
    "this_year": "This year",
    "last_year": "Last year",
    "custom": "Custom range",
}
#: Display names of the task families, for the family filter and the report tables.
FAMILY_LABELS: dict[str, str] = dict(Family.choices)


def portal_zone() -> dt.tzinfo:
    """The portal's time zone (``settings.TIME_ZONE``), for reports across teams."""
    return timezone.get_default_timezone()


def local_midnight(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    """The aware datetime at which ``day`` starts in ``tz``."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=tz)


@dataclass(frozen=True)
class Period:
    """A report period: whole days ``first_day`` … ``last_day`` (inclusive) in ``tz``.

    ``start``/``end`` are the aware instants bounding it (midnight in ``tz``; end exclusive).
    """

    key: str
    label: str
    first_day: dt.date
    last_day: dt.date
    tz: dt.tzinfo

    @property
    def start(self) -> dt.datetime:
        """Midnight at the start of ``first_day`` in ``tz`` (inclusive)."""
        return local_midnight(self.first_day, self.tz)

    @property
    def end(self) -> dt.datetime:
        """Midnight after ``last_day`` in ``tz`` (exclusive)."""
        return local_midnight(self.last_day + dt.timedelta(days=1), self.tz)

    @property
    def days(self) -> list[dt.date]:
        """Every day of the period, in order."""
        count = (self.last_day - self.first_day).days + 1
        return [self.first_day + dt.timedelta(days=i) for i in range(count)]

    @property
    def months(self) -> list[dt.date]:
        """The first day of every month the period touches, in order."""
        out, month = [], self.first_day.replace(day=1)
        while month <= self.last_day:
            out.append(month)
            month = (month + dt.timedelta(days=32)).replace(day=1)
        return out

    @property
    def params(self) -> dict[str, str]:
        """Query parameters that reproduce this period (for links and exports)."""
        if self.key == "custom":
            return {
                "period": "custom",
                "start": self.first_day.isoformat(),
                "end": self.last_day.isoformat(),
            }
        return {"period": self.key}

    @property
    def tz_name(self) -> str:
        """The zone's name, for display (``Europe/Paris``)."""
        return str(getattr(self.tz, "key", self.tz))


def _add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return dt.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def period_resolve(
    *,
    key: str,
    tz: dt.tzinfo,
    now: dt.datetime | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> Period:
    """The ``Period`` for a picker ``key`` (``TEAM_PERIODS`` or ``COMPANY_PERIODS``) as seen
    at ``now`` in ``tz``. "Last N days" ends today and includes it. ``custom`` uses ``start``
    and ``end`` (dates, inclusive). Raises ``ValueError`` for an unknown key or a custom range
    without dates."""
    today = (now or timezone.now()).astimezone(tz).date()
    labels = {**TEAM_PERIODS, **COMPANY_PERIODS}
    if key not in labels:
        raise ValueError(f"Unknown period {key!r}.")
    month_start = today.replace(day=1)
    if key == "this_month":
        first, last = month_start, today
    elif key == "last_month":
        last = month_start - dt.timedelta(days=1)
        first = last.replace(day=1)
    elif key in ("7d", "30d", "90d"):
        first, last = today - dt.timedelta(days=int(key[:-1]) - 1), today
    elif key == "12m":
        first, last = _add_months(month_start, -11), today
    elif key == "this_year":
        first, last = today.replace(month=1, day=1), today
    elif key == "last_year":
        first, last = dt.date(today.year - 1, 1, 1), dt.date(today.year - 1, 12, 31)
    else:
        if start is None or end is None:
            raise ValueError("A custom range needs a start and an end date.")
        first, last = start, end
    label = labels[key]
    if key == "custom":
        label = f"{first:%d %b %Y} – {last:%d %b %Y}"
    return Period(key=key, label=label, first_day=first, last_day=last, tz=tz)


def _pairs(values: Iterable[str]) -> list[tuple[str, str]]:
    return [(v, v) for v in values]


class UsageForm(forms.Form):
    """The period picker and filters of a usage page (GET parameters).

    ``period``: a key of ``periods``; ``start``/``end``: ISO dates for ``custom`` (at most
    ``max_days`` days); ``family``: a ``Family`` value; ``member``: a username (team page);
    ``team``: a team code (my usage). Filters a page does not ``offer`` are removed.

    ``members`` may be a callable returning the usernames: it is then called at most once,
    and only when the choices are needed (a ``member`` value to validate, or the picker to
    draw), so a report region without a member filter costs no query for them.
    """

    period = forms.ChoiceField(required=False)
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    family = forms.ChoiceField(required=False)
    member = forms.ChoiceField(required=False)
    team = forms.ChoiceField(required=False)

    def __init__(
        self,
        data: Mapping[str, Any] | None,
        *,
        periods: Mapping[str, str],
        default: str,
        members: Sequence[str] | Callable[[], Iterable[str]] = (),
        teams: Sequence[tuple[str, str]] = (),
        offer: Iterable[str] = ("family",),
        max_days: int = MAX_RANGE_DAYS,
    ):
        super().__init__(data)
        self.default = default
        self.max_days = max_days
        self.fields["period"].choices = list(periods.items())
        self.fields["family"].choices = [("", "All kinds"), *Family.choices]
        if callable(members):
            load = functools.cache(members)
            self.fields["member"].choices = lambda: [("", "All members"), *_pairs(load())]
        else:
            self.fields["member"].choices = [("", "All members"), *_pairs(members)]
        self.fields["team"].choices = [("", "All teams"), *teams]
        for name in ("family", "member", "team"):
            if name not in offer:
                del self.fields[name]

    def clean(self) -> dict[str, Any]:
        """A custom range needs both dates, start ≤ end, at most ``max_days`` days."""
        data = super().clean()
        if (data.get("period") or self.default) == "custom":
            start, end = data.get("start"), data.get("end")
            if start is None or end is None:
                raise forms.ValidationError("A custom range needs a start and an end date.")
            if start > end:
                raise forms.ValidationError("The start date is after the end date.")
            if (end - start).days + 1 > self.max_days:
                raise forms.ValidationError(f"A range is at most {self.max_days} days.")
        return data


@dataclass(frozen=True)
class Choice:
    """What a usage request asked for, once validated: a period and optional filters."""

    period: Period
    family: str = ""
    member: str = ""
    team: str = ""

    @property
    def family_label(self) -> str:
        """The display name of the ``family`` filter ("" when none)."""
        return FAMILY_LABELS.get(self.family, self.family)

    @property
    def period_query(self) -> str:
        """The query string reproducing the period alone (``period=…[&start=…&end=…]``)."""
        return urlencode(self.period.params)

    @property
    def query(self) -> str:
        """The query string reproducing this choice (``period=…&family=…``)."""
        params = dict(self.period.params)
        for name in ("family", "member", "team"):
            if getattr(self, name):
                params[name] = getattr(self, name)
        return urlencode(params)


def usage_choice(form: UsageForm, *, tz: dt.tzinfo, now: dt.datetime | None = None) -> Choice:
    """The validated ``Choice`` of a bound ``UsageForm``. An invalid form falls back to the
    default period with no filter (the form keeps its errors for the page to show)."""
    if not form.is_valid():
        return Choice(period=period_resolve(key=form.default, tz=tz, now=now))
    data = form.cleaned_data
    period = period_resolve(
        key=data.get("period") or form.default,
        tz=tz,
        now=now,
        start=data.get("start"),
        end=data.get("end"),
    )
    return Choice(
        period=period,
        family=data.get("family") or "",
        member=data.get("member") or "",
        team=data.get("team") or "",
    )
