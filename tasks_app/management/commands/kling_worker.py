"""``python manage.py kling_worker``: the background worker (the Procfile's ``worker``).

django-q2's cluster (``Q_CLUSTER``: workers, timeout, retry, broker and schedules as
``qcluster`` would use them) with a bounded stop (``klingweb.worker.worker_run``): on SIGTERM
or SIGINT it stops pulling jobs, lets a running job finish for ``settings.Q_STOP_GRACE``
seconds (``WORKER_STOP_GRACE_SECONDS``, default 2), then stops the workers; a job stopped
mid-run is not acknowledged and runs again after the broker's retry time. Exit status 0
after a signal, 1 when the cluster died on its own.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from klingweb.worker import worker_run


class Command(BaseCommand):
    """Run the django-q2 cluster until SIGTERM/SIGINT, then stop it within the grace."""

    help = "Run the background jobs cluster; SIGTERM stops it within WORKER_STOP_GRACE_SECONDS."

    def handle(self, *args, **options):
        status = worker_run(grace=float(settings.Q_STOP_GRACE), stdout=self.stdout)
        if status:
            raise SystemExit(status)
