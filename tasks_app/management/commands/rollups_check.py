"""``python manage.py rollups_check [--team CODE ...]``: compare the daily usage rollups
with the deduction ledger (``tasks_app.rollups.rollups_check``).

Prints each differing key (ledger sums, rollup sums: units, cash amount, priced units,
charged tasks, rows) and exits with status 1 when there is any; fixes nothing
(``rollups_rebuild`` does, when asked).
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand

from tasks_app.management.commands.rollups_rebuild import team_ids
from tasks_app.rollups import rollups_check


class Command(BaseCommand):
    help = "Compare the daily usage rollups with the ledger; exit 1 on any difference."

    def add_arguments(self, parser):
        parser.add_argument(
            "--team", action="append", help="A team's code (repeatable); default every team."
        )

    def handle(self, *args, **options):
        differences = rollups_check(team_ids(options["team"]))
        for difference in differences:
            self.stdout.write(str(difference))
        self.stdout.write(f"{len(differences)} difference(s)")
        if differences:
            sys.exit(1)
