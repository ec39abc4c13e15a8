"""``python manage.py kling_poll [--once] [--interval S]``: the poller (the Procfile's
``poller``).

Runs a poll cycle every ``S`` seconds (default 5): queued tasks whose retry time has come are
sent, and every task in flight that is due is asked about (``tasks_app.polling.poll_run``).
Run one or several, on as many machines as you like: they claim work with conditional
UPDATEs, so no (account, family) group is read by two pollers in the same cycle. SIGTERM or
SIGINT ends the loop: a cycle in progress stops between two tasks or groups and releases its
claims; what it did not reach is done by the next cycle (exit status 0). ``--once`` runs one cycle and
prints what it did.
"""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from tasks_app.polling import FAST_INTERVAL, poll_cycle, poll_run


class Command(BaseCommand):
    """Poll Kling for tasks in flight, in a loop (or once)."""

    help = "Poll Kling for tasks in flight: a cycle every --interval seconds until SIGTERM."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Run one cycle and exit.")
        parser.add_argument(
            "--interval",
            type=float,
            default=FAST_INTERVAL,
            help=f"Seconds from the start of one cycle to the next (default {FAST_INTERVAL:g}).",
        )

    def handle(self, *args, **options):
        interval = options["interval"]
        if not interval > 0:
            raise CommandError(f"--interval must be a positive number of seconds, not {interval}.")
        if options["once"]:
            report = poll_cycle()
            self.stdout.write(
                f"claimed {report.claimed}, requests {report.requests}, "
                f"applied {report.applied}, errors {report.errors}, groups {report.groups}"
            )
            return
        stop = threading.Event()

        def _stop(signum, _frame):
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        self.stdout.write(f"poller: a cycle every {interval:g} s; SIGTERM stops it")
        self.stdout.flush()
        cycles = poll_run(interval=interval, stop=stop)
        self.stdout.write(f"poller: stopped after {cycles} cycles")
