"""Bearer JWT check, as the vendor does it (KLING_API.md §1 and §2).

The token is an HS256 JWT whose ``iss`` is the access key, signed with the matching secret
key, with ``exp`` (and usually ``nbf``) in Unix seconds. Time here is the real wall clock,
not the sandbox clock: ``SandboxServer.advance`` must not expire a client's fresh token.
"""

from __future__ import annotations

import time

import jwt

from .errors import ApiError


def _unauthorized(code: int, message: str) -> ApiError:
    return ApiError(401, code, message)


def authenticate(header: str | None, accounts: dict[str, str], *, now: float | None = None) -> str:
    """Check an ``Authorization`` header value and return the caller's access key.

    Raises ``ApiError`` with HTTP 401 and:
    - 1001: no header, or an empty one (also ``"Bearer "`` with nothing after it);
    - 1002: not ``Bearer <jwt>``, a malformed token, a wrong algorithm, an unknown issuer
      (access key), a bad signature, or no ``exp``;
    - 1003: ``nbf`` is in the future (token not yet valid);
    - 1004: ``exp`` has passed (token expired).
    ``now`` is Unix seconds (default: ``time.time()``).
    """
    if header is None or not header.strip():
        raise _unauthorized(1001, "Authorization header is empty")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise _unauthorized(1002, "Authorization header is invalid: expected 'Bearer <token>'")
    token = token.strip()
    if not token:
        raise _unauthorized(1001, "Authorization header is empty: no token after 'Bearer'")
    try:
        header_fields = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise _unauthorized(1002, "Authorization header is invalid: malformed token")
    if header_fields.get("alg") != "HS256":
        raise _unauthorized(1002, "Authorization header is invalid: algorithm must be HS256")
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer not in accounts:
        raise _unauthorized(1002, "Authorization header is invalid: unknown access key (iss)")
    try:
        claims = jwt.decode(
            token,
            accounts[issuer],
            algorithms=["HS256"],
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
            },
        )
    except jwt.PyJWTError:
        raise _unauthorized(1002, "Authorization header is invalid: signature check failed")
    exp = claims.get("exp")
    nbf = claims.get("nbf")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise _unauthorized(1002, "Authorization header is invalid: exp claim missing")
    if nbf is not None and (not isinstance(nbf, int | float) or isinstance(nbf, bool)):
        raise _unauthorized(1002, "Authorization header is invalid: nbf claim malformed")
    now = time.time() if now is None else now
    if nbf is not None and nbf > now:
        raise _unauthorized(1003, "Token is not yet valid (nbf is in the future)")
    if exp <= now:
        raise _unauthorized(1004, "Token has expired")
    return issuer
