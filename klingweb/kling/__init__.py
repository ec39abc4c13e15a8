"""The Kling API client: plain Python (httpx + PyJWT), no Django import (DESIGN.md §1).

Public names (the contract between work streams)::

    from klingweb.kling import (KlingClient, KlingError, ErrorClass, KlingTask, ResultImage,
        ResultVideo, ResultElement, ResourcePack, FAMILY_PATHS, PRESET_ELEMENTS_PATH,
        SINGAPORE_BASE_URL, BEIJING_BASE_URL, parse_task)

See ``client`` for the retry policy, ``models`` for the parsed shapes, ``errors`` for the
error-code classes and ``auth`` for the JWT. Vendor reference: /work/shared/KLING_API.md.
"""

from __future__ import annotations

from klingweb.kling.auth import TokenSigner, token_sign
from klingweb.kling.client import (
    ACCOUNT_COSTS_PATH,
    BEIJING_BASE_URL,
    DELETE_ELEMENTS_PATH,
    FAMILY_PATHS,
    PRESET_ELEMENTS_PATH,
    SINGAPORE_BASE_URL,
    KlingClient,
    family_path,
)
from klingweb.kling.errors import ErrorClass, KlingError, classify
from klingweb.kling.models import (
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
    "token_sign",
]
