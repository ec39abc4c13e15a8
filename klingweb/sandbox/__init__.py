"""A stand-alone Kling look-alike HTTP server for the demo and the tests (issue 2 §3).

Written from the vendor spec (KLING_API.md, kling-docs/) independently of the client
``klingweb.kling``, which it never imports; no Django either.

    from klingweb.sandbox import SandboxServer, SandboxConfig
    server = SandboxServer(SandboxConfig(accounts={"ak": "sk"}, task_seconds=1.0)).start()
    server.base_url; server.advance(5); server.tasks_snapshot(); server.stop()
"""

from __future__ import annotations

from .config import SandboxConfig
from .costs import COST_TABLE, cost_for
from .server import SandboxServer
from .state import FAMILY_PATHS

__all__ = ["COST_TABLE", "FAMILY_PATHS", "SandboxConfig", "SandboxServer", "cost_for"]
