"""Bearer checks, as the vendor does them: AK/SK JWTs (KLING_API.md §1 and §2) and API
keys (KLING_API_2026.md §2: ``Authorization: Bearer <API_KEY>``, the key itself).

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


API_KEY = "api_key"
JWT = "jwt"


def authenticate_any(
    header: str | None,
    accounts: dict[str, str],
    api_keys: dict[str, str],
    *,
    now: float | None = None,
) -> tuple[str, str]:
    """Check an ``Authorization`` header holding an API key or an AK/SK JWT.

    Returns ``(account, kind)``: for an API key of ``api_keys`` (``{key: account}``) the
    key's account and ``"api_key"``; otherwise the JWT is checked as ``authenticate`` does
    and the result is ``(access_key, "jwt")``. Raises ``ApiError`` HTTP 401: 1001 for a
    missing/empty header; 1002 for a token that is neither a known API key nor a valid JWT
    (an unknown or mistyped key ends here, as "Authorization header is invalid"); 1003/1004
    for a JWT's ``nbf``/``exp``. The digest is silent on whether 1003/1004 apply to keys;
    the sandbox never expires a key.
    """
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token and token in api_keys:
            return api_keys[token], API_KEY
        if scheme.lower() == "bearer" and token and token.count(".") != 2:
            # Not shaped like a JWT at all: the caller meant an API key we do not know.
            raise _unauthorized(1002, "Authorization header is invalid: unknown API key")
    return authenticate(header, accounts, now=now), JWT
