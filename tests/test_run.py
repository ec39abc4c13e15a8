"""`make run`'s start-up pieces (the .env file, the mode switch, the demo company) and its
stop (issue 14): SIGTERM ends the worker (``kling_worker``) and all its processes, a job it
was running is run again and still sends its task once, and a poller stopped mid-cycle
leaves the rest of the cycle to the next one without charging anything twice."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from django_q.models import OrmQ

from klingweb.accounts.models import Membership, Team
from klingweb.run import (
    SANDBOX_ACCESS_KEY,
    env_build,
    env_file_ensure,
    env_file_parse,
    processes_for,
)
from tasks_app import submission
from tasks_app.models import Deduction, Status, Task
from tasks_app.polling import tasks_poll
from tests.cluster_support import in_flight_tasks, make_due, sandbox_account, vendor_units
from tests.processes import MARKER, STRIPPED, ProcfileProcess, pids_marked, wait_until

ROOT = Path(__file__).resolve().parents[1]


def test_env_file_is_written_once_private_and_kept(tmp_path):
    path = tmp_path / ".env"
    first = env_file_ensure(path)
    assert set(first) == {"SECRET_KEY", "FERNET_KEYS", "DEMO_PASSWORD"}
    assert len(first["SECRET_KEY"]) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert env_file_ensure(path) == first
    assert env_file_parse(path.read_text()) == first


def test_env_file_gains_a_missing_variable_without_changing_the_others(tmp_path):
    path = tmp_path / ".env"
    path.write_text("SECRET_KEY=keep-me\nKLING_ACCESS_KEY=ak-real")
    values = env_file_ensure(path)
    assert values["SECRET_KEY"] == "keep-me"
    assert values["KLING_ACCESS_KEY"] == "ak-real"
    assert {"FERNET_KEYS", "DEMO_PASSWORD"} <= set(values)
    assert env_file_parse(path.read_text()) == values


def test_without_kling_keys_the_portal_runs_against_the_sandbox():
    env, sandbox = env_build(base={"PATH": "/bin"}, file_vars={}, port=8001, sandbox_port=8701)
    assert sandbox
    assert env["KLING_API_BASE_URL"] == "http://127.0.0.1:8701"
    assert env["KLING_ACCESS_KEY"] == SANDBOX_ACCESS_KEY
    assert env["KLING_SANDBOX_MODE"] == "1"
    assert env["PUBLIC_BASE_URL"] == "http://127.0.0.1:8001"
    assert env["SECURE_COOKIES"] == "0"  # plain http: Secure cookies would never come back
    assert env["PORT"] == "8001"
    assert processes_for(sandbox_mode=sandbox) == ["web", "worker", "poller", "sandbox"]


def test_real_kling_keys_start_no_sandbox_and_the_environment_wins_over_env_file():
    env, sandbox = env_build(
        base={"KLING_ACCESS_KEY": "ak-env", "KLING_SECRET_KEY": "sk-env", "SECRET_KEY": "env"},
        file_vars={"KLING_ACCESS_KEY": "ak-file", "SECRET_KEY": "file"},
        port=8000,
    )
    assert not sandbox
    assert env["KLING_ACCESS_KEY"] == "ak-env"
    assert env["SECRET_KEY"] == "env"
    assert "KLING_SANDBOX_MODE" not in env
    assert "PUBLIC_BASE_URL" not in env  # Kling cannot reach 127.0.0.1: polling only
    assert processes_for(sandbox_mode=sandbox) == ["web", "worker", "poller"]


@pytest.mark.django_db
def test_demo_data_creates_the_company_once(capsys):
    call_command("demo_data", password="demo-pass-123")
    out = capsys.readouterr().out
    assert "studio-member" in out and "demo-pass-123" in out
    call_command("demo_data", password="demo-pass-123")
    assert "nothing changed" in capsys.readouterr().out

    assert sorted(Team.objects.values_list("name", flat=True)) == ["Acme Marketing", "Acme Studio"]
    roles = {
        (m.user.username, m.team.name, m.role)
        for m in Membership.objects.select_related("user", "team")
    }
    assert roles == {
        ("studio-owner", "Acme Studio", "owner"),
        ("studio-member", "Acme Studio", "member"),
        ("studio-viewer", "Acme Studio", "viewer"),
        ("marketing-owner", "Acme Marketing", "owner"),
    }
    member = get_user_model().objects.get(username="studio-member")
    assert member.check_password("demo-pass-123") and not member.is_staff
    assert get_user_model().objects.get(username="studio-owner").is_superuser


@pytest.mark.django_db
def test_demo_data_never_changes_an_existing_password(capsys):
    call_command("demo_data", password="first-pass-123")
    call_command("demo_data", password="other-pass-456")
    assert "keep the password they were created with" in capsys.readouterr().out
    assert get_user_model().objects.get(username="studio-viewer").check_password("first-pass-123")


# --- stopping (issue 14) -------------------------------------------------------------------

needs_orm_broker = pytest.mark.skipif(
    "orm" not in settings.Q_CLUSTER,
    reason="the processes share the test database as their broker (ORM broker)",
)


def _database_env() -> dict[str, str]:
    """``SQLITE_PATH`` or ``DATABASE_URL`` pointing a process at this test's database."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return {"SQLITE_PATH": str(db["NAME"])}
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    at = f"{user}{password}@" if user else ""
    return {"DATABASE_URL": f"postgres://{at}{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"}


def _process_env(marker: str) -> dict[str, str]:
    """The environment of a worker or poller process on this test's database, marked."""
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED}
    env.update(
        **_database_env(),
        DJANGO_SETTINGS_MODULE="klingweb.settings",
        SECRET_KEY=settings.SECRET_KEY,
        FERNET_KEYS=",".join(settings.FERNET_KEYS),
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        Q_WORKERS="1",
        **{MARKER: marker},
    )
    return env


def _sigterm_group(worker: ProcfileProcess) -> None:
    """SIGTERM the entry's process group, as honcho does, and wait for its leader."""
    os.killpg(worker.proc.pid, signal.SIGTERM)
    worker.proc.wait(timeout=60)


def _worker(marker: str, tmp_path) -> ProcfileProcess:
    worker = ProcfileProcess("worker", env=_process_env(marker), log_path=tmp_path / "worker.log")
    worker.start()
    ready = wait_until(lambda: "running." in worker.log_path.read_text(), timeout=60, interval=0.1)
    assert ready, worker.log_path.read_text()
    return worker


def _cleanup(marker: str, worker: ProcfileProcess | None = None) -> None:
    if worker is not None and worker.alive():
        worker.kill()
    for pid in pids_marked(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_the_procfile_worker_is_kling_worker():
    from tests.processes import procfile_command

    assert procfile_command("worker") == "python manage.py kling_worker"


@needs_orm_broker
@pytest.mark.django_db(transaction=True)
def test_sigterm_stops_the_worker_and_every_process_it_started(tmp_path):
    marker = uuid.uuid4().hex
    worker = _worker(marker, tmp_path)
    try:
        assert len(pids_marked(marker)) >= 4  # command, sentinel, worker, pusher, monitor
        _sigterm_group(worker)
        assert wait_until(lambda: not pids_marked(marker), timeout=30, interval=0.1), (
            "processes left after SIGTERM: " + worker.log_path.read_text()
        )
        assert "stopped" in worker.log_path.read_text()
    finally:
        _cleanup(marker, worker)


@needs_orm_broker
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_outright_leaves_no_orphans(tmp_path):
    marker = uuid.uuid4().hex
    worker = _worker(marker, tmp_path)
    try:
        worker.kill()  # SIGKILL of the command's group (honcho's last resort, OOM killer)
        assert wait_until(lambda: not pids_marked(marker), timeout=30, interval=0.1), (
            "the cluster outlived its command: " + worker.log_path.read_text()
        )
    finally:
        _cleanup(marker, worker)


@needs_orm_broker
@pytest.mark.django_db(transaction=True)
def test_a_submission_cut_off_by_sigterm_runs_again_and_sends_the_task_once(
    portal, fresh_sandbox, tmp_path
):
    sandbox_account(fresh_sandbox, portal.team)
    fresh_sandbox.config.latency = 8.0  # Kling creates the task, then answers 8 s later
    marker = uuid.uuid4().hex
    worker = _worker(marker, tmp_path)
    try:
        body = {"model_name": "kling-v1-6", "prompt": "a fox", "mode": "std", "duration": "5"}
        task = submission.task_queue(
            team=portal.team, user=portal.member, family="text2video", params=body, prompt="a fox"
        )

        def at_vendor():
            return [
                t
                for t in fresh_sandbox.tasks_snapshot()
                if t["external_task_id"] == task.external_task_id
            ]

        # The job is in its create call: Kling has the task, the answer has not come yet.
        assert wait_until(at_vendor, timeout=60, interval=0.05), worker.log_path.read_text()
        _sigterm_group(worker)
        assert wait_until(lambda: not pids_marked(marker), timeout=30, interval=0.1)
        task.refresh_from_db()
        if task.status == Status.QUEUED:
            # Cut off: not acknowledged, so the broker still holds the job for later.
            assert OrmQ.objects.count() == 1, worker.log_path.read_text()
            # The retry time (Q_CLUSTER["retry"] = timeout + 60 s) passes, and with it the
            # submission claim (300 s): as the clock would.
            past = timezone.now() - timedelta(seconds=1)
            OrmQ.objects.update(lock=past)
            Task.objects.filter(pk=task.pk).update(claimed_until=past)
        fresh_sandbox.config.latency = 0.0
        worker = _worker(marker, tmp_path)

        def sent():
            task.refresh_from_db()
            return task.status != Status.QUEUED and not OrmQ.objects.exists()

        assert wait_until(sent, timeout=60, interval=0.2), worker.log_path.read_text()
        remote = at_vendor()
        assert len(remote) == 1, "one vendor task per external_task_id"
        assert task.task_id == remote[0]["task_id"]
        assert task.status in (Status.SUBMITTED, Status.PROCESSING, Status.SUCCEED)
        _sigterm_group(worker)
    finally:
        fresh_sandbox.config.latency = 0.0
        _cleanup(marker, worker)


@needs_orm_broker
@pytest.mark.django_db(transaction=True)
def test_a_poller_stopped_mid_cycle_leaves_the_rest_to_the_next_cycle_billed_once(
    portal, fresh_sandbox, tmp_path
):
    first = sandbox_account(fresh_sandbox, portal.team)
    first_tasks = in_flight_tasks(portal.team, portal.member, first, 2)
    second = sandbox_account(fresh_sandbox, portal.team)  # a second group of the same cycle
    second_tasks = in_flight_tasks(portal.team, portal.member, second, 2)
    Task.objects.filter(pk__in=[t.pk for t in first_tasks]).update(
        next_poll_at=timezone.now() - timedelta(seconds=10)  # the cycle's first group
    )
    fresh_sandbox.advance(2)  # every task has finished at Kling
    fresh_sandbox.config.latency = 3.0  # each Kling answer takes 3 s: the cycle is slow
    marker = uuid.uuid4().hex
    log = tmp_path / "poller.log"
    with log.open("w") as out:
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "manage.py", "kling_poll", "--interval", "0.5"],
            cwd=ROOT,
            env=_process_env(marker),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # The poller is inside its cycle once it holds the claims of the tasks.
        held = Task.objects.filter(pk=first_tasks[0].pk, claimed_until__isnull=False)
        assert wait_until(held.exists, timeout=60, interval=0.05), log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        fresh_sandbox.config.latency = 0.0
        _cleanup(marker)
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert "poller: stopped after 1 cycles" in log.read_text()
    everything = Task.objects.filter(pk__in=[t.pk for t in first_tasks + second_tasks])
    assert not everything.filter(claimed_until__isnull=False).exists(), "claims released"
    stopped_short = everything.exclude(status=Status.SUCCEED)
    assert stopped_short.exists(), "the cycle stopped before its last group"

    make_due(everything)  # the next poller's cycle (a few seconds later)
    tasks_poll()
    charged = {t.task_id: t for t in everything.all()}
    assert all(t.status == Status.SUCCEED for t in charged.values())
    for task in charged.values():
        assert Deduction.objects.filter(task=task).count() == 1, "billed once"
    units = vendor_units(fresh_sandbox)
    billed = sum(d.units for d in Deduction.objects.filter(task__in=charged.values()))
    assert billed == sum(units[task_id] for task_id in charged), "as Kling charged"
    make_due(everything)
    assert tasks_poll().applied == 0, "applying again changes nothing"


def _redis_url() -> str | None:
    """A Redis database of its own for the Redis-broker stop test, or None without Redis:
    15 in the SQLite pass, 14 in the PostgreSQL pass (``make test`` runs both at once)."""
    import redis

    sqlite = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
    url = f"redis://127.0.0.1:6379/{15 if sqlite else 14}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.exceptions.RedisError:
        return None
    return url


@pytest.mark.django_db(transaction=True)
def test_with_the_redis_broker_jobs_pulled_but_not_started_go_back_to_redis(tmp_path):
    import redis

    url = _redis_url()
    if url is None:
        pytest.skip("no Redis on 127.0.0.1:6379")
    connection = redis.Redis.from_url(url)
    key = "django_q:klingweb:q"
    connection.delete(key)
    marker = uuid.uuid4().hex
    env = {**_process_env(marker), "REDIS_URL": url}
    enqueue = (
        "from django_q.tasks import async_task\nfor _ in range(4): async_task('time.sleep', 30)"
    )
    subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "shell", "-c", enqueue],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    assert connection.llen(key) == 4
    worker = ProcfileProcess("worker", env=env, log_path=tmp_path / "worker.log").start()
    try:
        # One job runs (Q_WORKERS=1); the pusher has pulled the next ones into the cluster's
        # queue (one place: Q_WORKERS²) and holds one more, waiting for room.
        assert wait_until(
            lambda: "processing" in worker.log_path.read_text(), timeout=60, interval=0.1
        )
        assert wait_until(lambda: connection.llen(key) <= 1, timeout=20, interval=0.1)
        _sigterm_group(worker)
        assert wait_until(lambda: not pids_marked(marker), timeout=30, interval=0.1)
        # The running job is lost (Redis cannot redeliver); the three waiting are back.
        assert connection.llen(key) == 3, worker.log_path.read_text()
    finally:
        _cleanup(marker, worker)
        connection.delete(key)
