"""The API's one error type and its JSON shape.

Every error answer is ``{"error": {"code": str, "message": str, "field": str | null,
"details": [...]?}}``; ``message`` is the text the portal's pages show for the same problem.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer: HTTP ``status``, machine ``code``, human ``message``, the body or
    query ``field`` it concerns (None for the whole request), optional ``details`` (a list
    of ``{"code", "message", "field"}``), ``headers`` (e.g. ``Retry-After``) and ``extra``
    members of the error object (e.g. ``budget``)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        details: list[dict] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.details = details
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict:
        """The JSON body of the answer."""
        error: dict[str, Any] = {"code": self.code, "message": self.message, "field": self.field}
        if self.details:
            error["details"] = self.details
        error.update(self.extra)
        return {"error": error}
