"""Settings of the portal processes the soak starts: the browser tests' server settings, plus
the poller's claims audit (``tasks_app.polling`` at DEBUG) when ``KLINGWEB_SOAK_AUDIT=1``, and
a shorter submit claim (``SUBMIT_LEASE_SECONDS``) when ``KLINGWEB_SOAK_SUBMIT_LEASE`` is set
(the small size in ``make test``: a task whose create was cut by a SIGKILL waits that long).

The audit lines (``poll claim lease=… t=… pks=…`` / ``poll release …``) let the soak check
that no task was held by two poll cycles at once (tests/benchmarks/soak.py).
"""

from __future__ import annotations

import copy
import os

from tests.e2e.server_settings import *  # noqa: F403

LOGGING = copy.deepcopy(LOGGING)  # noqa: F405
if os.environ.get("KLINGWEB_SOAK_AUDIT") == "1":
    LOGGING["loggers"]["tasks_app.polling"] = {"level": "DEBUG"}
if os.environ.get("KLINGWEB_SOAK_SUBMIT_LEASE"):
    SUBMIT_LEASE_SECONDS = float(os.environ["KLINGWEB_SOAK_SUBMIT_LEASE"])
