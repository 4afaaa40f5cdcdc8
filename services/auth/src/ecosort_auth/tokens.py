"""Our tokens: short-lived ES256 access JWTs and opaque refresh tokens (stored as hashes)."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid

from joserfc import jwt

from ecosort_auth.keys import ALGORITHM, ActiveKey

REFRESH_TOKEN_BYTES = 32


def issue_access_token(
    key: ActiveKey,
    *,
    issuer: str,
    audience: str,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    lifetime_seconds: int,
) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": str(user_id),
        "sid": str(session_id),
        "iat": now,
        "exp": now + lifetime_seconds,
        "jti": uuid.uuid4().hex,
    }
    header = {"alg": ALGORITHM, "kid": key.kid, "typ": "at+jwt"}
    return jwt.encode(header, claims, key.key, algorithms=[ALGORITHM])


def new_refresh_token() -> str:
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def hash_refresh_token(token: str) -> str:
    # A fast hash is right here: the token has 256 random bits, so there is nothing to brute-force.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
