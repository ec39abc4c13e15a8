"""The soak at the small size (issue 9, "Faults"), in the normal suite.

``python -m tests.benchmarks.soak --small --scenarios a,b,c --parallel``: 30 tasks per
scenario against the sandbox with its faults on, with the portal's real processes (gunicorn,
``qcluster`` and ``kling_poll``): (a) faults alone, (b) the same with one SIGKILL of the
cluster (worker and poller), (c) two clusters, so two pollers, at once (PostgreSQL when one
answers, else SQLite). Each must converge — every task's status the sandbox's, every team's ledger
equal to the sandbox's charges to the unit — with no duplicate. The soak picks its own
throwaway databases, so it runs once, in the SQLite pass of ``make test``; the session starts
it in the background once the browser scenarios are done (``tests/background.py``) and the
test reads its outcome.

The claims audit (how the soak tells that no task was held by two poll cycles at once) is
checked here against made-up logs too, so a broken audit cannot pass silently.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests import background
from tests.benchmarks.soak import claims_audit

pytestmark = pytest.mark.soak


def _lease(at: float, seconds: float = 120) -> str:
    return (datetime.fromtimestamp(at, UTC) + timedelta(seconds=seconds)).isoformat()


def _write(path: Path, lines: list[tuple[str, str, float, str]]) -> Path:
    path.write_text(
        "\n".join(
            f"2026-01-01 00:00:00,000 DEBUG tasks_app.polling poll {kind} lease={lease} "
            f"t={stamp:.6f} pks={pks}"
            for kind, lease, stamp, pks in lines
        )
        + "\n"
    )
    return path


def test_claims_audit_accepts_cycles_one_after_another(tmp_path):
    a, b = _lease(1000), _lease(1010)
    log = _write(
        tmp_path / "w.log",
        [
            ("claim", a, 1000.0, "1,2,3"),
            ("release", a, 1001.0, "1,2,3"),
            ("claim", b, 1005.0, "1,2"),
            ("release", b, 1006.0, "1,2"),
        ],
    )
    assert claims_audit([log]) == (2, 0, [])


def test_claims_audit_flags_a_task_held_by_two_cycles_at_once(tmp_path):
    a, b = _lease(1000), _lease(1000.5)
    first = _write(
        tmp_path / "w1.log", [("claim", a, 1000.0, "1,2"), ("release", a, 1004.0, "1,2")]
    )
    second = _write(
        tmp_path / "w2.log", [("claim", b, 1001.0, "2,3"), ("release", b, 1003.0, "2,3")]
    )
    cycles, doubles, examples = claims_audit([first, second])
    assert (cycles, doubles) == (2, 1)
    assert "task pk 2" in examples[0]


def test_claims_audit_holds_a_killed_cycles_tasks_until_its_lease_expires(tmp_path):
    killed = _lease(1000, seconds=120)  # never released: the cycle was SIGKILLed
    early, late = _lease(1060), _lease(1130)
    log = _write(
        tmp_path / "w.log",
        [
            ("claim", killed, 1000.0, "7"),
            ("claim", early, 1060.0, "7"),  # 60 s later: the lease still held it
            ("release", early, 1061.0, "7"),
            ("claim", late, 1130.0, "8"),
            ("release", late, 1131.0, "8"),
        ],
    )
    assert claims_audit([log])[1] == 1


#: The soak's command and environment (its own databases: no ``DATABASE_URL``/``REDIS_URL``).
SOAK_COMMAND = [
    sys.executable,
    "-m",
    "tests.benchmarks.soak",
    "--small",
    "--scenarios",
    "a,b,c",
    "--c-brokers",
    "orm",
    "--parallel",
]
SOAK_ENV = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}


# Started in the background early in the session (tests/background.py); read here.
@pytest.mark.background("soak-small", SOAK_COMMAND, SOAK_ENV)
@pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="runs once, in the SQLite pass: the soak makes its own databases",
)
def test_small_soak_converges_with_no_duplicate_and_an_exact_ledger():
    result = background.finished("soak-small", SOAK_COMMAND, SOAK_ENV, timeout=280)
    table = result.stdout[result.stdout.find("Soak (issue 9") :]
    assert result.returncode == 0, f"{table or result.stdout[-4000:]}\n{result.stderr[-3000:]}"
    rows = [line for line in table.splitlines() if line.endswith(("PASS", "PASS  "))]
    assert len(rows) == 3, table
    assert "0 double claims" in table, table
