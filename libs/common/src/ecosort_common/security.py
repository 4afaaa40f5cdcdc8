"""Verification of auth's access tokens, locally against its JWKS: no call to auth per request.

Accepted: ES256 with a `kid` we know, the expected `iss` and `aud`, not expired, with `sub` and
`sid`, and a session that auth has not revoked (ecosort_common.revocation), so a revoked
session's tokens stop working at once rather than when they expire.

A token that verified once is remembered (by its exact text) for a minute: a polling client sends
the same token every second, and the signature check is the costly part. Expiry and revocation
are still checked on every request.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import structlog
from cachetools import TTLCache
from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ecosort_common.errors import Problem
from ecosort_common.revocation import RevocationWatcher

ACCEPTED_ALGORITHMS = ("ES256",)
# Unknown kids trigger a JWKS refresh, but no more often than this after the last attempt, failed
# or not: forged kids must not turn every request into a call to auth, least of all while auth is
# slow or down.
MIN_REFRESH_INTERVAL_SECONDS = 10.0
VERIFIED_TOKEN_CACHE_SIZE = 4096
VERIFIED_TOKEN_CACHE_SECONDS = 60.0
log = structlog.get_logger("ecosort.security")

# Only declares the scheme in OpenAPI, so generated clients send the token: `bearer_token`
# reads it, with our own 401 problem and WWW-Authenticate challenge.
bearer_scheme = HTTPBearer(
    scheme_name="bearerAuth",
    bearerFormat="JWT",
    description="An access token from the auth service.",
    auto_error=False,
)


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    session_id: str
    token_id: str
    claims: dict[str, Any] = field(repr=False)


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        detail,
        title="Invalid access token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


class TokenVerifier:
    def __init__(
        self,
        *,
        jwks_url: str,
        issuer: str,
        audience: str,
        cache_seconds: float = 300,
        revocations: RevocationWatcher | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.cache_seconds = cache_seconds
        self.revocations = revocations
        self._http = http or httpx.AsyncClient(timeout=3.0)
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._attempted_at = -math.inf  # when the last fetch ended, whatever its outcome
        self._lock = asyncio.Lock()
        self._verified: TTLCache[str, Principal] = TTLCache(
            VERIFIED_TOKEN_CACHE_SIZE, VERIFIED_TOKEN_CACHE_SECONDS
        )
        self._claims = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": True},
            sid={"essential": True},
            jti={"essential": True},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _refresh(self, *, force: bool) -> KeySet:
        async with self._lock:
            if self._should_fetch(force=force):
                await self._fetch()
            if self._keys is None:
                raise Problem(503, "The token signing keys are unavailable.")
            return self._keys

    def _should_fetch(self, *, force: bool) -> bool:
        now = time.monotonic()
        if now - self._attempted_at < MIN_REFRESH_INTERVAL_SECONDS:
            return False
        return force or self._keys is None or now - self._fetched_at >= self.cache_seconds

    async def _fetch(self) -> None:
        """Fetch the JWKS; on failure keep the keys we had (their tokens keep verifying)."""
        try:
            response = await self._http.get(self.jwks_url)
            response.raise_for_status()
            self._keys = KeySet.import_key_set(response.json())
            self._fetched_at = time.monotonic()
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            log.warning("jwks_fetch_failed", error=type(exc).__name__)
        finally:
            # Measured from the answer (or the timeout): a slow auth gets the full interval.
            self._attempted_at = time.monotonic()

    async def _key_for(self, kid: str) -> Any:
        keys = await self._refresh(force=False)
        try:
            return keys.get_by_kid(kid)
        except (ValueError, KeyError, JoseError):
            keys = await self._refresh(force=True)
        try:
            return keys.get_by_kid(kid)
        except (ValueError, KeyError, JoseError) as exc:
            raise _unauthorized("The token was signed by an unknown key.") from exc

    async def verify(self, token: str) -> Principal:
        principal = self._verified.get(token)
        if principal is None or principal.claims["exp"] <= time.time():
            principal = await self._verify_signature_and_claims(token)
            self._verified[token] = principal
        if self.revocations is not None and await self.revocations.is_revoked(principal.session_id):
            raise _unauthorized("The session of this token has been revoked.")
        return principal

    async def _verify_signature_and_claims(self, token: str) -> Principal:
        try:
            header = jws.extract_compact(token.encode()).protected
        except (JoseError, ValueError, UnicodeError) as exc:
            raise _unauthorized("The token is malformed.") from exc
        if header.get("alg") not in ACCEPTED_ALGORITHMS:
            raise _unauthorized("The token's algorithm is not accepted.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _unauthorized("The token has no key id.")
        key = await self._key_for(kid)
        try:
            decoded = jwt.decode(token, key, algorithms=list(ACCEPTED_ALGORITHMS))
            self._claims.validate(decoded.claims)
        except JoseError as exc:
            raise _unauthorized(f"The token was refused: {exc.error}.") from exc
        claims = decoded.claims
        try:
            user_id = uuid.UUID(str(claims["sub"]))
        except ValueError as exc:
            raise _unauthorized("The token's subject is not a user id.") from exc
        return Principal(
            user_id=user_id,
            session_id=str(claims["sid"]),
            token_id=str(claims["jti"]),
            claims=claims,
        )


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Problem(
            401,
            "This endpoint needs an access token: Authorization: Bearer <token>.",
            title="Authentication required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


async def current_principal(
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
) -> Principal:
    """FastAPI dependency for authenticated routes (and callable as it is, with the request)."""
    verifier: TokenVerifier = request.app.state.token_verifier
    principal = await verifier.verify(bearer_token(request))
    structlog.contextvars.bind_contextvars(user_id=str(principal.user_id))
    return principal
