"""``python manage.py sync_element_presets``: refresh the cached vendor presets now."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    """Runs the same sync as the periodic job (``elements_app.jobs.sync_presets``)."""

    help = "Refresh the cached Kling preset elements (GET /v1/general/advanced-presets-elements)."

    def handle(self, *args, **options) -> None:
        """Print the sync summary; a vendor failure becomes a ``CommandError``."""
        from elements_app.jobs import sync_presets
        from klingweb.kling import KlingError

        try:
            summary = sync_presets()
        except KlingError as exc:
            raise CommandError(f"Kling refused the presets list: {exc}") from None
        self.stdout.write(summary)
