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
from joserfc.errors import ExpiredTokenError, JoseError
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
# How far ahead of ours the issuer's clock may run: a token used the moment it was issued is not
# "issued in the future" (iat, nbf) at a verifier whose clock is a little behind.
CLOCK_SKEW_SECONDS = 60
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
    claims: dict[str, Any] = field(repr=False)


class SkewTolerantClaims(jwt.JWTClaimsRegistry):
    """Claims checks that accept `iat` and `nbf` up to CLOCK_SKEW_SECONDS ahead of our clock,
    while `exp` stays exact: a verifier whose clock runs ahead only shortens a token's life, and
    revocations are kept exactly as long as the revoked tokens last."""

    def __init__(self, **options: Any) -> None:
        super().__init__(leeway=CLOCK_SKEW_SECONDS, **options)

    def validate_exp(self, value: object) -> None:
        super().validate_exp(value)
        if isinstance(value, (int, float)) and value <= self.now:
            raise ExpiredTokenError("exp")


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        detail,
        title="Invalid access token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


class JwksCache:
    """A JWKS, fetched when first needed and kept `cache_seconds`. An unknown `kid` fetches it
    again early, but no fetch follows another attempt, failed or not, within
    MIN_REFRESH_INTERVAL_SECONDS: forged kids must not turn every request into a call to the
    keys' owner, least of all while it is slow or down. A failed fetch keeps the keys we had
    (their tokens keep verifying)."""

    def __init__(
        self, url: str, *, cache_seconds: float, http: httpx.AsyncClient | None = None
    ) -> None:
        self.url = url
        self.cache_seconds = cache_seconds
        self._http = http or httpx.AsyncClient(timeout=3.0)
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._attempted_at = -math.inf  # when the last fetch ended, whatever its outcome
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def key_set(self, kid: str | None = None) -> KeySet | None:
        """The keys, fresh enough and holding `kid` if they can be; None if never fetched."""
        async with self._lock:
            if self._should_fetch(kid):
                await self._fetch()
            return self._keys

    def _should_fetch(self, kid: str | None) -> bool:
        now = time.monotonic()
        if now - self._attempted_at < MIN_REFRESH_INTERVAL_SECONDS:
            return False
        keys = self._keys
        return (
            keys is None
            or now - self._fetched_at >= self.cache_seconds
            or (kid is not None and kid not in {key.kid for key in keys.keys})
        )

    async def _fetch(self) -> None:
        try:
            response = await self._http.get(self.url)
            response.raise_for_status()
            self._keys = KeySet.import_key_set(response.json())
            self._fetched_at = time.monotonic()
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            log.warning("jwks_fetch_failed", url=self.url, error=type(exc).__name__)
        finally:
            # Measured from the answer (or the timeout): a slow owner gets the full interval.
            self._attempted_at = time.monotonic()


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
        self.issuer = issuer
        self.audience = audience
        self.revocations = revocations
        self._jwks = JwksCache(jwks_url, cache_seconds=cache_seconds, http=http)
        self._verified: TTLCache[str, Principal] = TTLCache(
            VERIFIED_TOKEN_CACHE_SIZE, VERIFIED_TOKEN_CACHE_SECONDS
        )
        self._claims = SkewTolerantClaims(
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": True},
            sid={"essential": True},
            jti={"essential": True},
        )

    async def aclose(self) -> None:
        await self._jwks.aclose()

    async def _key_for(self, kid: str) -> Any:
        keys = await self._jwks.key_set(kid)
        if keys is None:
            # No fetch is tried again before the interval is out: retrying sooner gets this 503.
            raise Problem(
                503,
                "The token signing keys are unavailable.",
                headers={"Retry-After": str(math.ceil(MIN_REFRESH_INTERVAL_SECONDS))},
            )
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
