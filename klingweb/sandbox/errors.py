"""The one error type of the sandbox: a vendor error answer (KLING_API.md §2)."""

from __future__ import annotations


class ApiError(Exception):
    """A vendor error to answer with: HTTP ``http_status`` and envelope ``code``/``message``.

    Raised anywhere inside request handling; the server turns it into
    ``{"code": code, "message": message, "request_id": ..., "data": None}``.
    """

    def __init__(self, http_status: int, code: int, message: str) -> None:
        super().__init__(f"{http_status} {code}: {message}")
        self.http_status = http_status
        self.code = code
        self.message = message


def invalid(field: str, rule: str) -> ApiError:
    """HTTP 400, code 1201, message ``"<field>: <rule>"`` (invalid request parameter)."""
    return ApiError(400, 1201, f"{field}: {rule}")


def not_found(message: str = "requested resource not found") -> ApiError:
    """HTTP 404, code 1203 (resource not found)."""
    return ApiError(404, 1203, message)
