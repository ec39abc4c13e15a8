"""Settings of the portal processes the topology scenario starts (tests/benchmarks/topology.py):
the soak's (claims audit, a short submit claim via ``KLINGWEB_SOAK_SUBMIT_LEASE``) plus a
django-q2 cluster name of the run's own (``KLINGWEB_TOPOLOGY_QUEUE``), so its Redis queue
(``django_q:<name>:q``) and statistics keys are never shared with another run on the same
Redis server (every process of one run must use the same name: it also salts the signed job
payloads), and a shorter wait before the poller's safety net submits a task whose job was lost
with a killed worker (``SUBMIT_GRACE_SECONDS``, from ``KLINGWEB_TOPOLOGY_SUBMIT_GRACE``).
"""

from __future__ import annotations

import os

from tests.benchmarks.soak_settings import *  # noqa: F403

if os.environ.get("KLINGWEB_TOPOLOGY_QUEUE"):
    Q_CLUSTER = {**Q_CLUSTER, "name": os.environ["KLINGWEB_TOPOLOGY_QUEUE"]}  # noqa: F405
if os.environ.get("KLINGWEB_TOPOLOGY_SUBMIT_GRACE"):
    SUBMIT_GRACE_SECONDS = float(os.environ["KLINGWEB_TOPOLOGY_SUBMIT_GRACE"])
