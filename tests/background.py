"""Long scenarios run as background processes of the test session (the small soak, the
small topology): started early, their result read by their test later.

Each scenario is a ``python -m tests.benchmarks.<…>`` child that makes its own databases,
ports and processes and mostly waits (sandbox clocks, poll intervals, processes starting):
the soak spends about 19 CPU-seconds of its ~65 s, the topology about 10 of its ~45 s (2
cores, measured with ``/usr/bin/time`` on 2026-11-29). Run in the background while the rest
of the suite goes on, they no longer add their minute each to ``make test``; what they check
is unchanged (the same command, the same assertions in the test, the same 280 s limit counted
from the child's start).

Use: a test marked ``@pytest.mark.background(name, command, env)`` (``command``: argv,
``env``: the child's environment) calls ``finished(name, command, env, timeout=...)``.
``tests/conftest.py`` calls ``start`` for every such test of the session once the browser
scenarios are done (so the children never compete with Chromium and the portal stacks), and
``stop_all`` at the end; run alone, a test starts its scenario itself. Nothing here imports
Django.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Running:
    """One started scenario: its process, output files and start (``time.monotonic()``)."""

    proc: subprocess.Popen
    stdout: Path
    stderr: Path
    started: float


_running: dict[str, Running] = {}


def start(name: str, command: Sequence[str], env: Mapping[str, str]) -> Running:
    """Start ``command`` in ``ROOT`` with ``env`` as scenario ``name``, output to temporary
    files (no-op when ``name`` runs already); returns it."""
    if name in _running:
        return _running[name]
    folder = Path(tempfile.mkdtemp(prefix=f"klingweb-bg-{name}-"))
    stdout, stderr = folder / "stdout.txt", folder / "stderr.txt"
    with stdout.open("w") as out, stderr.open("w") as err:
        proc = subprocess.Popen(  # noqa: S603
            list(command),
            cwd=ROOT,
            env=dict(env),
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,  # a group of its own: ``stop_all`` reaches its children
        )
    _running[name] = Running(proc, stdout, stderr, time.monotonic())
    return _running[name]


def finished(
    name: str, command: Sequence[str], env: Mapping[str, str], *, timeout: float
) -> subprocess.CompletedProcess:
    """Scenario ``name``'s outcome, as ``subprocess.run(..., capture_output=True, text=True)``
    gives it: started now unless it runs already, then waited for until ``timeout`` seconds
    after its start. Raises ``subprocess.TimeoutExpired`` (after killing it) when it takes
    longer."""
    running = start(name, command, env)
    left = max(0.0, timeout - (time.monotonic() - running.started))
    try:
        returncode = running.proc.wait(timeout=left)
    except subprocess.TimeoutExpired:
        _stop(running, grace=20)
        raise subprocess.TimeoutExpired(list(command), timeout) from None
    return subprocess.CompletedProcess(
        list(command),
        returncode,
        running.stdout.read_text(errors="replace"),
        running.stderr.read_text(errors="replace"),
    )


def _stop(running: Running, *, grace: float) -> None:
    """SIGTERM to the scenario's process group (a scenario stops the portal processes it
    started and drops its databases on SIGTERM), SIGKILL after ``grace`` seconds."""
    if running.proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(running.proc.pid, signal.SIGTERM)
    try:
        running.proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.proc.pid, signal.SIGKILL)
        running.proc.wait()


def stop_all(*, grace: float = 20) -> None:
    """Stop the scenarios still running (a test deselected or skipped after the start, an
    interrupted session) as ``_stop`` does, and forget them all."""
    for running in _running.values():
        _stop(running, grace=grace)
    _running.clear()
