"""The background worker (``manage.py kling_worker``, the Procfile's ``worker``): django-q2's
cluster with a bounded, graceful stop.

``manage.py qcluster`` waits for every worker process without a limit when it stops, and
under honcho every process of the cluster gets SIGTERM at once; ``make run`` took ~8 s to
stop. ``worker_run`` runs the same cluster (the ``Q_CLUSTER`` settings unchanged:
workers, timeout, retry, broker, schedules) and on SIGTERM or SIGINT:

1. the sentinel stops pulling jobs from the broker (the pusher ends);
2. a job already running may finish for ``settings.Q_STOP_GRACE`` seconds (environment
   ``WORKER_STOP_GRACE_SECONDS``, default 2) and its result is saved and acknowledged;
3. then the workers still busy are killed. Their jobs are not acknowledged, so the ORM
   broker hands them out again once their lock (``Q_CLUSTER['retry']`` s after they were
   pulled) expires — to this cluster after a restart, or to another one. Jobs must be safe
   to run twice (``tasks_app.jobs``: a task submission finds the task Kling already has by
   its ``external_task_id`` instead of creating a second one). With the Redis broker a
   killed job is lost, as when ``qcluster`` is killed (Redis has no acknowledgement); jobs
   pulled but not yet started are pushed back to Redis.

Process layout: the command's process (what honcho signals) starts the sentinel in a
process group of its own, so a signal sent to the command's group reaches the cluster once,
through the command. Every cluster process asks Linux for SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), so SIGKILL of the command (honcho's last resort, the OOM
killer) leaves no orphans. Elsewhere than Linux that guard is skipped.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import time
import uuid

log = logging.getLogger(__name__)

#: prctl option: the signal a process gets when its parent thread exits (linux/prctl.h).
PR_SET_PDEATHSIG = 1
#: Seconds the monitor gets, after the workers are gone, to save results and acknowledge.
MONITOR_GRACE = 1.0
#: Seconds the pusher gets to end a broker read in progress (ORM broker: one ``poll`` sleep
#: of 0.5 s; Redis: a BLPOP of 1 s).
PUSHER_GRACE = 1.5


def parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent exits; True when set.

    Uses ``prctl(PR_SET_PDEATHSIG)`` through ctypes; returns False (nothing done) on other
    systems or when libc cannot be loaded.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _child_guard(expected_parent: int) -> None:
    """In a freshly forked cluster process: die with the parent; if the parent is already
    gone (it died between the fork and the prctl call), exit now."""
    parent_death_signal()
    if os.getppid() != expected_parent:
        os._exit(1)


def _guarded(target, expected_parent: int, *args) -> None:
    """Run ``target(*args)`` in a child process that dies with its parent."""
    _child_guard(expected_parent)
    target(*args)


def _wait(predicate, *, deadline: float, interval: float = 0.05) -> bool:
    """Sleep until ``predicate()`` is true (True) or ``time.monotonic()`` passes ``deadline``."""
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def _sentinel_class():
    """``GracefulSentinel``: django-q2's ``Sentinel`` with guarded children and a bounded
    stop (built lazily: importing ``django_q.cluster`` needs the app registry ready)."""
    from django_q.cluster import Sentinel, get_mp_context
    from django_q.conf import Conf
    from django_q.signing import SignedPackage
    from django_q.status import Stat
    from django_q.worker import worker

    class GracefulSentinel(Sentinel):
        """A ``Sentinel`` whose children die with it and whose ``stop`` takes at most about
        ``grace`` + ``PUSHER_GRACE`` + ``MONITOR_GRACE`` seconds (``grace``: seconds a
        running job may still take)."""

        def __init__(self, *args, grace: float, **kwargs):
            self.grace = grace
            super().__init__(*args, **kwargs)

        def spawn_process(self, target, *args):
            """As django-q2's, with the child guarded by ``_child_guard``."""
            process = get_mp_context().Process(
                target=_guarded,
                args=(target, os.getpid(), *args),
                name=f"Process-{uuid.uuid4().hex}",
            )
            process.daemon = True
            if target == worker:
                process.daemon = Conf.DAEMONIZE_WORKERS
                process.timer = args[2]
                self.pool.append(process)
            process.start()
            return process

        def stop(self):
            """Stop pulling, give running jobs ``grace`` s, kill the workers still busy
            (their jobs stay unacknowledged and are redelivered after the broker's retry
            time), let the monitor save and acknowledge what finished, and return."""
            Stat(self).save()
            started = time.monotonic()
            self.event_out.set()
            # What the pusher queued but no worker took is not run now: the workers find
            # their STOP first. Taking it out also frees a pusher blocked on a full queue.
            # The ORM broker redelivers those jobs (unacknowledged); a broker without
            # acknowledgement (Redis) gets them back below.
            waiting = []

            def pusher_gone() -> bool:
                with contextlib.suppress(Exception):
                    while True:
                        waiting.append(self.task_queue.get_nowait())
                return not self.pusher.is_alive()

            if not _wait(pusher_gone, deadline=started + PUSHER_GRACE):
                self.pusher.kill()
            self.pusher.join(timeout=1)
            pusher_gone()
            if waiting and not Conf.ORM:
                for job in waiting:
                    job.pop("ack_id", None)
                    job.pop("cluster", None)
                    self.broker.enqueue(SignedPackage.dumps(job))
            for _ in self.pool:
                self.task_queue.put("STOP")
            self.task_queue.close()
            self.task_queue.cancel_join_thread()
            deadline = started + self.grace
            if not _wait(lambda: not any(p.is_alive() for p in self.pool), deadline=deadline):
                busy = [p for p in self.pool if p.is_alive()]
                log.warning(
                    "worker: %s job(s) still running after %.1f s stopped (the ORM broker "
                    "runs them again after the retry time; with Redis they are lost)",
                    len(busy),
                    self.grace,
                )
                for process in busy:
                    process.kill()
            for process in self.pool:
                process.join(timeout=1)
            self.pool = []
            self.result_queue.put("STOP")
            self.result_queue.close()
            self.result_queue.cancel_join_thread()
            monitor_deadline = time.monotonic() + MONITOR_GRACE
            if not _wait(lambda: not self.monitor.is_alive(), deadline=monitor_deadline):
                self.monitor.kill()
            self.monitor.join(timeout=1)
            Stat(self).save()

    return GracefulSentinel


def _sentinel_main(stop_event, start_event, cluster_id, grace: float, parent: int) -> None:
    """Body of the sentinel process: own process group, dies with the command, runs the
    cluster until ``stop_event`` is set."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _child_guard(parent)
    _sentinel_class()(stop_event, start_event, cluster_id, grace=grace)


def worker_run(*, grace: float, stdout=None) -> int:
    """Run the django-q2 cluster until SIGTERM or SIGINT, then stop it within about
    ``grace`` (seconds a running job may still take) + 2 s; returns the exit status
    (0 after a signal, 1 when the sentinel died on its own).

    Call from the main thread of a process whose Django is set up (``kling_worker``).
    """
    from django import db
    from django_q.cluster import get_mp_context
    from django_q.humanhash import humanize

    stopping: list[int] = []

    def _stop(signum, _frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    context = get_mp_context()
    stop_event = context.Event()
    start_event = context.Event()
    cluster_id = uuid.uuid4()
    db.connections.close_all()  # the children open their own
    sentinel = context.Process(
        target=_sentinel_main,
        args=(stop_event, start_event, cluster_id, grace, os.getpid()),
        name=f"Process-{uuid.uuid4().hex}",
    )
    sentinel.start()
    with contextlib.suppress(OSError):  # also from here: no window where it shares our group
        os.setpgid(sentinel.pid, sentinel.pid)
    name = humanize(cluster_id.hex)
    if stdout is not None:
        stdout.write(
            f"worker: cluster {name} (pid {sentinel.pid}); SIGTERM stops it, "
            f"running jobs get {grace:g} s"
        )
        stdout.flush()
    while not stopping and sentinel.is_alive():
        time.sleep(0.1)
    if not sentinel.is_alive():
        log.error("worker: the cluster's sentinel exited (code %s)", sentinel.exitcode)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sentinel.pid, signal.SIGKILL)
        return 1
    stop_event.set()
    sentinel.join(timeout=grace + PUSHER_GRACE + MONITOR_GRACE + 1)
    # Whatever is left of the cluster's group (a stuck sentinel, a grandchild) goes now.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sentinel.pid, signal.SIGKILL)
    sentinel.join(timeout=1)
    if stdout is not None:
        stdout.write(f"worker: cluster {name} stopped")
        stdout.flush()
    return 0
