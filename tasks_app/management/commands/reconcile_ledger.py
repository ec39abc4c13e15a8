"""``python manage.py reconcile_ledger [--days N]``: compare the ledger with Kling now.

The same work as the nightly ``klingweb-reconcile`` schedule; differences are listed on
``/ops/reconciliation/`` (staff). Never changes the ledger.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from tasks_app.reconcile import ledger_reconcile


class Command(BaseCommand):
    help = "Compare finished tasks' ledger rows with Kling's final_unit_deduction."

    def add_arguments(self, parser):
        parser.add_argument(
            "--days", type=int, default=3, help="Tasks finished in the last N days (default 3)."
        )

    def handle(self, *args, **options):
        report = ledger_reconcile(days=options["days"])
        self.stdout.write(
            f"{report.checked} checked, {report.ok} in step, {report.opened} new issue(s), "
            f"{report.updated} updated, {report.requests} Kling requests, "
            f"{report.errors} error(s)"
        )
        for message in report.messages:
            self.stderr.write(message)
