"""Stop bench (issue 14): seconds from SIGTERM / Ctrl-C to every process of `make run` gone.

The stack is the ``Procfile`` under honcho with every entry of sandbox mode (``web``,
``worker``, ``poller``, ``sandbox``) on a fresh SQLite file (``tests/processes.py``, as the
browser tests start it), measured two ways in the same run:

- old: ``python -m honcho`` (SIGKILL after 5 s), the worker as ``manage.py qcluster`` and
  gunicorn ``--graceful-timeout 5`` (the Procfile before issue 14);
- new: the project's ``Procfile`` through ``klingweb.run honcho`` (``kling_worker``,
  SIGKILL after ``HONCHO_KILL_WAIT`` s).

Cases: (a) idle, SIGTERM to honcho (what ``make run`` passes on); (b) idle, SIGINT to
honcho's process group (Ctrl-C in the terminal); (c) SIGTERM while the worker runs a 30 s
job (``time.sleep``). "Gone" = no process left whose environment carries this run's marker
variable (orphans included). For (c) it also says whether the job's queue row is still there
to be delivered again (``OrmQ``), or was lost.

Run: ``python -m tests.benchmarks.bench_stop [--runs N]`` (default 3) or ``make bench``.
About 20 s per run and case on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from klingweb.run import BASE_DIR, PROCFILE, honcho_command, prepare
from tests.processes import MARKER, free_port, pids_marked, portal_env, wait_http, wait_until

NAMES = ["web", "worker", "poller", "sandbox"]
JOB_SECONDS = 30


def _old_procfile(work: Path) -> Path:
    """The Procfile as it was before issue 14 (``qcluster``, gunicorn graceful 5 s)."""
    text = PROCFILE.read_text()
    text = text.replace("python manage.py kling_worker", "python manage.py qcluster")
    text = text.replace("--graceful-timeout 2", "--graceful-timeout 5")
    path = work / "Procfile.old"
    path.write_text(text)
    return path


def _command(way: str, *, port: int, work: Path) -> list[str]:
    new = honcho_command(names=NAMES, port=port, colour=False)
    if way == "new":
        return new
    # python -m honcho start --procfile <old> --app-root <project> ... (honcho's own 5 s)
    command = [sys.executable, "-m", "honcho", *new[new.index("start") :]]
    command[command.index("--procfile") + 1] = str(_old_procfile(work))
    return command


def _enqueue_sleep(env: dict[str, str]) -> None:
    code = (
        "from django_q.tasks import async_task; "
        f"async_task('time.sleep', {JOB_SECONDS}, task_name='bench-stop-sleep')"
    )
    subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "shell", "-c", code],
        env=env,
        cwd=BASE_DIR,
        check=True,
        capture_output=True,
    )


def _queued_rows(env: dict[str, str]) -> int:
    code = "from django_q.models import OrmQ; print(OrmQ.objects.count())"
    out = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "shell", "-c", code],
        env=env,
        cwd=BASE_DIR,
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def _clear_queue(env: dict[str, str]) -> None:
    code = "from django_q.models import OrmQ; OrmQ.objects.all().delete()"
    subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "shell", "-c", code],
        env=env,
        cwd=BASE_DIR,
        check=True,
        capture_output=True,
    )


def one_stop(way: str, case: str, *, env: dict[str, str], work: Path, port: int) -> dict:
    """Start the stack ``way`` (old/new), stop it as ``case`` says; returns
    ``{"seconds": s, "left": pids, "kept": bool|None}``."""
    marker = uuid.uuid4().hex
    run_env = {**env, MARKER: marker}
    log_path = work / f"{way}-{case}-{marker[:6]}.log"
    with log_path.open("a") as log:
        proc = subprocess.Popen(  # noqa: S603
            _command(way, port=port, work=work),
            env=run_env,
            cwd=BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        ready = wait_http(f"http://127.0.0.1:{port}/accounts/login/", timeout=60, proc=proc)
        ready = ready and wait_until(
            lambda: "running." in log_path.read_text() and "poller:" in log_path.read_text(),
            timeout=30,
            interval=0.2,
        )
        if not ready:
            raise RuntimeError(f"the stack did not start; see {log_path}")
        kept = None
        if case == "job":
            _clear_queue(env)
            _enqueue_sleep(env)
            if not wait_until(
                lambda: "bench-stop-sleep" in log_path.read_text(), timeout=30, interval=0.1
            ):
                raise RuntimeError(f"the job did not start; see {log_path}")
            time.sleep(0.5)
        started = time.monotonic()
        if case == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        wait_until(lambda: not pids_marked(marker), timeout=30, interval=0.02)
        seconds = time.monotonic() - started
        left = pids_marked(marker)
        if case == "job":
            kept = _queued_rows(env) == 1
        return {"seconds": seconds, "left": left, "kept": kept}
    finally:
        for pid in pids_marked(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    """Run every case ``--runs`` times both ways, interleaved; print medians and ratios."""
    parser = argparse.ArgumentParser(prog="bench_stop")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args([] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="bench-stop-") as tmp:
        work = Path(tmp)
        port, sandbox_port = free_port(), free_port()
        env = portal_env(
            work=work,
            port=port,
            sandbox_url=f"http://127.0.0.1:{sandbox_port}",
            secret_key=secrets.token_urlsafe(48),
            password=secrets.token_urlsafe(12),
            nomigrations=True,
            extra={"LOG_LEVEL": "INFO", "KLING_SANDBOX_PORT": str(sandbox_port)},
        )
        prepare(env=env, quiet=True)
        cases = ["sigterm", "ctrl-c", "job"]
        results: dict[tuple[str, str], list[dict]] = {}
        failed = False
        for run in range(args.runs):
            for case in cases:
                for way in ("old", "new"):
                    result = one_stop(way, case, env=env, work=work, port=port)
                    results.setdefault((way, case), []).append(result)
                    print(
                        f"  run {run + 1} {case:8} {way}: {result['seconds']:.2f} s"
                        + (f", job row kept: {result['kept']}" if case == "job" else "")
                        + (f", LEFT {result['left']}" if result["left"] else ""),
                        flush=True,
                    )
                    failed = failed or bool(result["left"])
        print()
        print(f"{'case':28} {'old (s)':>9} {'new (s)':>9} {'old/new':>8}  job kept old/new")
        labels = {
            "sigterm": "(a) idle, SIGTERM",
            "ctrl-c": "(b) idle, Ctrl-C (SIGINT)",
            "job": f"(c) {JOB_SECONDS} s job in flight",
        }
        for case in cases:
            old = statistics.median(r["seconds"] for r in results[("old", case)])
            new = statistics.median(r["seconds"] for r in results[("new", case)])
            kept = ""
            if case == "job":
                kept = "/".join(
                    f"{sum(bool(r['kept']) for r in results[(way, case)])}"
                    f" of {len(results[(way, case)])}"
                    for way in ("old", "new")
                )
            print(f"{labels[case]:28} {old:9.2f} {new:9.2f} {old / new:7.1f}x  {kept}")
        print(f"medians of {args.runs} runs; old = qcluster under honcho's 5 s, new = kling_worker")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
