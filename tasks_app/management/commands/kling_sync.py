"""``python manage.py kling_sync --team T [--since DATE]``: import tasks made by other tools.

``T`` is a team's code (UUID) or exact name; ``DATE`` is ``YYYY-MM-DD`` (midnight in the
team's time zone) or an ISO datetime. See ``tasks_app.sync.tasks_sync``.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from klingweb.accounts.models import Team
from tasks_app.budgets import team_zone
from tasks_app.models import Family
from tasks_app.sync import tasks_sync


def _team(value: str) -> Team:
    try:
        return Team.objects.get(code=uuid.UUID(value))
    except (ValueError, Team.DoesNotExist):
        pass
    teams = list(Team.objects.filter(name=value)[:2])
    if len(teams) != 1:
        raise CommandError(f"No single team with code or name {value!r}.")
    return teams[0]


def _since(value: str | None, team: Team) -> datetime | None:
    if not value:
        return None
    zone = team_zone(team)
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(f"--since {value!r} is not YYYY-MM-DD or an ISO datetime.")
        moment = datetime(day.year, day.month, day.day)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment


class Command(BaseCommand):
    help = "Import a team's Kling tasks made outside the portal (no double counting)."

    def add_arguments(self, parser):
        parser.add_argument("--team", required=True, help="Team code (UUID) or exact name.")
        parser.add_argument("--since", help="YYYY-MM-DD or ISO datetime (team time zone).")
        parser.add_argument(
            "--family",
            action="append",
            choices=[choice.value for choice in Family],
            help="Only this family (repeatable; default: all).",
        )

    def handle(self, *args, **options):
        team = _team(options["team"])
        report = tasks_sync(
            team=team, since=_since(options.get("since"), team), families=options.get("family")
        )
        self.stdout.write(
            f"team {team.name}: {report.seen} seen, {report.imported} imported, "
            f"{report.known} already known, {report.older} older than --since, "
            f"{report.requests} Kling requests"
        )
        for error in report.errors:
            self.stderr.write(f"error: {error}")
        if report.errors:
            raise CommandError(f"{len(report.errors)} Kling error(s); run again later.")
