"""``python manage.py setup_schedules``: create or update the cluster's periodic schedules.

Idempotent (``Schedule.objects.update_or_create(name=...)``); run it after every deploy
(``make run`` does). Polling is not among them: it is the ``kling_poll`` process.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone
from django_q.models import Schedule

#: The schedules this project owns. ``first_run`` (callable → aware datetime) is used only
#: when a schedule is created, so re-running the command never shifts a planned run.
RECONCILE_AT = time(3, 30)  # local time (settings.TIME_ZONE)


def _next_local(at: time) -> datetime:
    now = timezone.localtime()
    candidate = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    return candidate if candidate > now else candidate + timedelta(days=1)


SCHEDULES = [
    {
        "name": "klingweb-media-sweep",
        "func": "tasks_app.jobs.sweep_media",
        "schedule_type": Schedule.MINUTES,
        "minutes": 10,
        "first_run": timezone.now,
    },
    {
        "name": "klingweb-budget-alerts",
        "func": "tasks_app.jobs.check_all_budget_alerts",
        "schedule_type": Schedule.MINUTES,
        "minutes": 15,
        "first_run": timezone.now,
    },
    {
        "name": "klingweb-resource-packs",
        "func": "tasks_app.resource_packs.resource_packs_refresh",
        "schedule_type": Schedule.MINUTES,
        "minutes": 15,
        "first_run": timezone.now,
    },
    {
        "name": "klingweb-reconcile",
        "func": "tasks_app.jobs.reconcile_ledger",
        "schedule_type": Schedule.DAILY,
        "minutes": None,
        "first_run": lambda: _next_local(RECONCILE_AT),
    },
]


def _plugin_schedules() -> list[dict]:
    """Schedules other apps declare in ``settings.KLINGWEB_PLUGIN_SCHEDULES`` (e.g. the
    elements app's presets sync), so tasks_app never imports them: ``{"name", "func",
    "minutes"}`` each, run every ``minutes`` minutes."""
    return [
        {
            "name": spec["name"],
            "func": spec["func"],
            "schedule_type": Schedule.MINUTES,
            "minutes": spec["minutes"],
            "first_run": timezone.now,
        }
        for spec in getattr(settings, "KLINGWEB_PLUGIN_SCHEDULES", [])
    ]


def schedules_setup() -> list[tuple[str, bool]]:
    """Create or update every schedule of ``SCHEDULES`` and the plugin schedules; returns
    ``(name, created)`` pairs."""
    done = []
    for spec in [*SCHEDULES, *_plugin_schedules()]:
        _, created = Schedule.objects.update_or_create(
            name=spec["name"],
            defaults={
                "func": spec["func"],
                "schedule_type": spec["schedule_type"],
                "minutes": spec["minutes"],
                "repeats": -1,
            },
            create_defaults={
                "func": spec["func"],
                "schedule_type": spec["schedule_type"],
                "minutes": spec["minutes"],
                "repeats": -1,
                "next_run": spec["first_run"](),
            },
        )
        done.append((spec["name"], created))
    return done


class Command(BaseCommand):
    """Create or update the cluster's periodic schedules; prints one line per schedule."""

    help = "Create or update the background cluster's periodic schedules (idempotent)."

    def handle(self, *args, **options):
        for name, created in schedules_setup():
            self.stdout.write(f"{'created' if created else 'updated'} schedule {name}")
