"""The one error type of the Kling client and its classification (KLING_API.md §2).

Every failure the client reports is a ``KlingError``: a vendor error answer (an envelope
whose ``code`` is not 0), a response that is not a Kling envelope at all, or a transport
failure (connection refused, timeout, dropped connection). Its ``error_class`` decides
what a caller does; ``retryable`` is True exactly for rate limit, concurrency, server and
network errors.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    """What kind of failure a ``KlingError`` is (KLING_API.md §2, "what a client does").

    - ``AUTHENTICATION`` (1000–1004, HTTP 401): credentials or token wrong; tell an admin.
    - ``ACCOUNT`` (1100–1102, HTTP 429): account exception, arrears, resource pack used up.
    - ``PERMISSION`` (1103 HTTP 403, 1304 HTTP 429): no access to the API/model, IP allow-list.
    - ``INVALID_REQUEST`` (1200, 1201, HTTP 400): a parameter is wrong; ``message`` says which.
    - ``NOT_FOUND`` (1202, 1203, HTTP 404): method or resource (task, model) not found.
    - ``POLICY`` (1300, 1301, HTTP 400): platform or content-safety policy triggered.
    - ``RATE_LIMIT`` (1302, HTTP 429): too many requests; retry with backoff.
    - ``CONCURRENCY`` (1303, HTTP 429): over the resource pack's concurrency; retry later.
    - ``SERVER`` (5000–5002, HTTP 5xx): vendor trouble; retry with backoff.
    - ``NETWORK`` (no code): connection refused, timeout, dropped connection.
    """

    AUTHENTICATION = "authentication"
    ACCOUNT = "account"
    PERMISSION = "permission"
    INVALID_REQUEST = "invalid_request"
    NOT_FOUND = "not_found"
    POLICY = "policy"
    RATE_LIMIT = "rate_limit"
    CONCURRENCY = "concurrency"
    SERVER = "server"
    NETWORK = "network"


RETRYABLE_CLASSES = frozenset(
    {ErrorClass.RATE_LIMIT, ErrorClass.CONCURRENCY, ErrorClass.SERVER, ErrorClass.NETWORK}
)

# Vendor code -> class, from the error-code table of KLING_API.md §2.
CODE_CLASSES: dict[int, ErrorClass] = {
    1000: ErrorClass.AUTHENTICATION,
    1001: ErrorClass.AUTHENTICATION,
    1002: ErrorClass.AUTHENTICATION,
    1003: ErrorClass.AUTHENTICATION,
    1004: ErrorClass.AUTHENTICATION,
    1100: ErrorClass.ACCOUNT,
    1101: ErrorClass.ACCOUNT,
    1102: ErrorClass.ACCOUNT,
    1103: ErrorClass.PERMISSION,
    1200: ErrorClass.INVALID_REQUEST,
    1201: ErrorClass.INVALID_REQUEST,
    1202: ErrorClass.NOT_FOUND,
    1203: ErrorClass.NOT_FOUND,
    1300: ErrorClass.POLICY,
    1301: ErrorClass.POLICY,
    1302: ErrorClass.RATE_LIMIT,
    1303: ErrorClass.CONCURRENCY,
    1304: ErrorClass.PERMISSION,
    5000: ErrorClass.SERVER,
    5001: ErrorClass.SERVER,
    5002: ErrorClass.SERVER,
}

#: The vendor's server-side failure codes (5000–5002, HTTP 5xx; KLING_API.md §2). A task
#: that waits after one of them (or after a transport failure, which has no code) may be
#: tried again as soon as the vendor answers another call.
SERVER_CODES = frozenset(code for code, kind in CODE_CLASSES.items() if kind is ErrorClass.SERVER)


def classify(code: int | None, http_status: int | None) -> ErrorClass:
    """Return the ``ErrorClass`` of a failure.

    ``code``: the vendor's envelope code (None when there is none); ``http_status``: the HTTP
    status (None when no response arrived). A known code decides (HTTP 429 is used both for
    money and for rate limits, so the status alone never does); an unknown code falls back to
    the status: 5xx is ``SERVER``, anything else ``INVALID_REQUEST``. No response at all is
    ``NETWORK``. KLING_API.md §2.
    """
    if code is not None and code in CODE_CLASSES:
        return CODE_CLASSES[code]
    if http_status is None:
        return ErrorClass.NETWORK
    if http_status >= 500:
        return ErrorClass.SERVER
    return ErrorClass.INVALID_REQUEST


class KlingError(Exception):
    """A failed Kling API call.

    Attributes:
    - ``http_status``: HTTP status of the answer, or None when none arrived (network errors).
    - ``code``: the vendor's error code (e.g. 1201, 1303, 5000), or None (network errors,
      answers that are not a Kling envelope).
    - ``message``: the vendor's message (names the bad field for 1201), or a description of
      the transport failure.
    - ``request_id``: the vendor's request id (support asks for it), or None.
    - ``error_class``: an ``ErrorClass``; derived with ``classify(code, http_status)`` unless
      given.
    - ``retryable`` (property): True for ``RATE_LIMIT``, ``CONCURRENCY``, ``SERVER``,
      ``NETWORK``.

    ``str(error)`` is one line: class, code, HTTP status, message and request id.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: int | None = None,
        request_id: str | None = None,
        error_class: ErrorClass | None = None,
    ) -> None:
        self.message = message
        self.http_status = http_status
        self.code = code
        self.request_id = request_id
        self.error_class = error_class if error_class is not None else classify(code, http_status)
        super().__init__(self.one_line())

    @property
    def retryable(self) -> bool:
        """True when trying again later can succeed (rate limit, concurrency, server, network)."""
        return self.error_class in RETRYABLE_CLASSES

    def one_line(self) -> str:
        """The error on one line: ``Kling <class> error: code=… http=… message=… request_id=…``."""
        message = " ".join(str(self.message).split())
        return (
            f"Kling {self.error_class.value} error: code={self.code} http={self.http_status} "
            f"message={message!r} request_id={self.request_id}"
        )

    def __reduce__(self):
        # Keyword-only arguments do not survive the default Exception pickling (task queues
        # pickle exceptions).
        return (
            _rebuild_error,
            (self.message, self.http_status, self.code, self.request_id, self.error_class),
        )


def _rebuild_error(
    message: str,
    http_status: int | None,
    code: int | None,
    request_id: str | None,
    error_class: ErrorClass,
) -> KlingError:
    return KlingError(
        message,
        http_status=http_status,
        code=code,
        request_id=request_id,
        error_class=error_class,
    )
