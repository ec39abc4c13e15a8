"""The Kling API client: plain Python (httpx + PyJWT), no Django import (DESIGN.md §1).

Public names (the contract between work streams)::

    from klingweb.kling import (KlingClient, KlingError, ErrorClass, KlingTask, ResultImage,
        ResultVideo, ResultElement, ResourcePack, FAMILY_PATHS, PRESET_ELEMENTS_PATH,
        SINGAPORE_BASE_URL, BEIJING_BASE_URL, parse_task,
        # the 2026 design and money (KLING_API_2026.md §2, §3, §4, §7)
        NEW_DESIGN_PATHS, TASKS_PATH, TASKS_BATCH_SIZE, TaskPage, BillingEntry,
        BalanceDeduction, KlingParseError, DESIGN_LEGACY, DESIGN_2026)

See ``client`` for the retry policy and the credentials, ``models`` for the parsed shapes,
``errors`` for the error-code classes and ``auth`` for the JWT. Vendor reference: the
digests KLING_API.md (legacy design) and KLING_API_2026.md (API keys, the 2026 design,
``billing[]``), which cite the vendor pages under https://kling.ai/document-api.
"""

from __future__ import annotations

from klingweb.kling.auth import TokenSigner, token_sign
from klingweb.kling.client import (
    ACCOUNT_COSTS_PATH,
    BEIJING_BASE_URL,
    DELETE_ELEMENTS_PATH,
    FAMILY_PATHS,
    NEW_DESIGN_PATHS,
    PRESET_ELEMENTS_PATH,
    SINGAPORE_BASE_URL,
    TASKS_BATCH_SIZE,
    TASKS_PATH,
    KlingClient,
    TaskPage,
    family_path,
    new_design_path,
)
from klingweb.kling.errors import ErrorClass, KlingError, classify
from klingweb.kling.models import (
    DESIGN_2026,
    DESIGN_LEGACY,
    BalanceDeduction,
    BillingEntry,
    KlingParseError,
    KlingTask,
    ResourcePack,
    ResultElement,
    ResultImage,
    ResultVideo,
    parse_resource_pack,
    parse_task,
)

__all__ = [
    "ACCOUNT_COSTS_PATH",
    "BEIJING_BASE_URL",
    "DELETE_ELEMENTS_PATH",
    "FAMILY_PATHS",
    "PRESET_ELEMENTS_PATH",
    "SINGAPORE_BASE_URL",
    "ErrorClass",
    "KlingClient",
    "KlingError",
    "KlingTask",
    "ResourcePack",
    "ResultElement",
    "ResultImage",
    "ResultVideo",
    "TokenSigner",
    "classify",
    "family_path",
    "parse_resource_pack",
    "parse_task",
    "DESIGN_2026",
    "DESIGN_LEGACY",
    "NEW_DESIGN_PATHS",
    "TASKS_BATCH_SIZE",
    "TASKS_PATH",
    "BalanceDeduction",
    "BillingEntry",
    "KlingParseError",
    "TaskPage",
    "new_design_path",
    "token_sign",
]
