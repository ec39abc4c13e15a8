"""``python manage.py rollups_rebuild [--team CODE ...]``: rebuild the daily usage rollups
from the deduction ledger (``tasks_app.rollups.rollups_rebuild``).

Idempotent: each team's rollups are replaced by the sums of its ledger (days in the team's
zone), one team per transaction, its ledger version bumped (cached reports are recomputed).
Run it after seeding ledger rows by hand, after changing a team's time zone, or when
``rollups_check`` reported a difference that someone has looked at.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from klingweb.accounts.models import Team
from tasks_app.rollups import rollups_rebuild


def team_ids(codes: list[str] | None) -> list[int] | None:
    """Team ids of ``codes`` (team codes, UUIDs); None for every team. Raises
    ``CommandError`` for an unknown or malformed code."""
    if not codes:
        return None
    ids = []
    for code in codes:
        try:
            ids.append(Team.objects.values_list("pk", flat=True).get(code=code))
        except (Team.DoesNotExist, ValidationError, ValueError) as exc:
            raise CommandError(f"unknown team {code!r}") from exc
    return ids


class Command(BaseCommand):
    help = "Rebuild the daily usage rollups from the ledger (every team, or --team CODE)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--team", action="append", help="A team's code (repeatable); default every team."
        )

    def handle(self, *args, **options):
        def progress(team_id: int, rows: int) -> None:
            self.stdout.write(f"team {team_id}: {rows} rollup row(s)")

        written = rollups_rebuild(team_ids(options["team"]), progress=progress)
        self.stdout.write(f"{written} rollup row(s) written")
