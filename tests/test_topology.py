"""The multi-machine topology at its small size (issue 15 item 2), in the normal suite.

``python -m tests.benchmarks.topology --small``: two gunicorn web servers behind HAProxy
(round-robin, one address), two django-q2 clusters and two pollers as separate processes on
PostgreSQL, the Redis broker and an S3 bucket (rclone); 24 tasks submitted through the create
form over HTTP; ``web-2``, ``worker-2`` and ``poller-2`` SIGKILLed half-way through. It must
converge with no task lost, one vendor task per ``external_task_id``, the ledger equal to what
the vendor charged, and every kept result readable (200, the vendor's bytes) through each web
server directly and through HAProxy. The scenario makes its own PostgreSQL database, so it runs
once, in the SQLite pass of ``make test``, started in the background once the browser
scenarios are done (``tests/background.py``); the test reads its outcome. Without haproxy, Redis, PostgreSQL or rclone it is
skipped, except under ``CI``, where it fails (``.ci/run`` installs and starts them).
"""

from __future__ import annotations

import json
import os
import sys
from decimal import Decimal

import pytest

from tests import background
from tests.benchmarks.topology import MISSING_STATUS, RESULT_PREFIX, missing_prerequisites

pytestmark = pytest.mark.soak


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


#: The scenario's command and environment (its own databases: no ``DATABASE_URL``/``REDIS_URL``).
TOPOLOGY_COMMAND = [sys.executable, "-m", "tests.benchmarks.topology", "--small"]
TOPOLOGY_ENV = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}


# Started in the background early in the session (tests/background.py); read here.
@pytest.mark.background("topology-small", TOPOLOGY_COMMAND, TOPOLOGY_ENV)
@pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="runs once, in the SQLite pass: the scenario makes its own PostgreSQL database",
)
def test_two_machines_lose_nothing_when_one_web_server_and_one_worker_die():
    missing = missing_prerequisites()
    if missing:
        message = "the topology scenario cannot run: " + "; ".join(missing)
        if _ci():
            pytest.fail(message)
        pytest.skip(message)
    run = background.finished("topology-small", TOPOLOGY_COMMAND, TOPOLOGY_ENV, timeout=280)
    output = f"{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    assert run.returncode != MISSING_STATUS, output
    lines = [line for line in run.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    assert lines, output
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    # Both web servers took requests through the one address before web-2 died.
    assert set(result["served_before_kill"]) == {"web-1", "web-2"}, output
    assert all(count > 0 for count in result["served_before_kill"].values()), output
    assert result["tasks_posted"] == 24, output
    assert result["converge_s"] is not None, output
    assert (result["lost"], result["doubled"]) == (0, 0), output
    assert Decimal(result["ledger_diff"]) == 0, output
    assert result["files"] > 0 and result["files_read"] == result["files"], output
    assert result["ok"] and run.returncode == 0, output
