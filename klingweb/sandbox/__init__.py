"""A stand-alone Kling look-alike HTTP server for the demo and the tests (issue 2 §3, 13 §10).

Written from the vendor spec (KLING_API.md, KLING_API_2026.md, kling-docs/) independently of
the client ``klingweb.kling``, which it never imports; no Django either.

    from klingweb.sandbox import SandboxServer, SandboxConfig
    server = SandboxServer(
        SandboxConfig(accounts={"ak": "sk"}, api_keys={"key": "ak"}, task_seconds=1.0)
    ).start()
    server.base_url; server.advance(5); server.tasks_snapshot(); server.stop()
"""

from __future__ import annotations

from .config import SandboxConfig
from .costs import cash_figures, legacy_units, new_design_units
from .newdesign import NEW_ENDPOINTS
from .prices import VIDEO_RATES, VIDEO_UNIT_USD
from .server import SandboxServer
from .state import FAMILY_PATHS

__all__ = [
    "FAMILY_PATHS",
    "NEW_ENDPOINTS",
    "VIDEO_RATES",
    "VIDEO_UNIT_USD",
    "SandboxConfig",
    "SandboxServer",
    "cash_figures",
    "legacy_units",
    "new_design_units",
]
