"""Kakao, Naver and Google: the authorization-code flow (authlib's OAuth 2.0 client with PKCE),
the user-info answers in each provider's documented shape, Google ID tokens checked against
Google's JWKS, and the mobile exchange of a native SDK's token."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from joserfc import jws, jwt
from joserfc.errors import JoseError

from ecosort_auth.config import Settings
from ecosort_auth.sessions import ProviderIdentity
from ecosort_common.errors import Problem
from ecosort_common.security import JwksCache, SkewTolerantClaims

try:  # authlib's OAuth client runs on httpx2 when it is installed, else on httpx
    import httpx2

    PROVIDER_HTTP_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, httpx2.HTTPError)
except ImportError:  # pragma: no cover - depends on what else is installed
    PROVIDER_HTTP_ERRORS = (httpx.HTTPError,)

PROVIDERS = ("kakao", "naver", "google")
HTTP_TIMEOUT_SECONDS = 5.0
log = structlog.get_logger("ecosort.auth.providers")


class ProviderRefused(Exception):
    pass


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    client_id: str
    client_secret: str | None
    authorize_url: str
    token_url: str
    userinfo_url: str
    scope: str


def provider_config(settings: Settings, name: str) -> ProviderConfig | None:
    """The provider's settings, or None when it is not enabled (no client id)."""
    if name not in PROVIDERS:
        return None
    client_id = getattr(settings, f"{name}_client_id")
    if not client_id:
        return None
    secret = getattr(settings, f"{name}_client_secret")
    return ProviderConfig(
        name=name,
        client_id=client_id,
        client_secret=secret.get_secret_value() if secret is not None else None,
        authorize_url=getattr(settings, f"{name}_authorize_url"),
        token_url=getattr(settings, f"{name}_token_url"),
        userinfo_url=getattr(settings, f"{name}_userinfo_url"),
        scope=getattr(settings, f"{name}_scope"),
    )


def enabled_providers(settings: Settings) -> list[str]:
    return [name for name in PROVIDERS if provider_config(settings, name) is not None]


def _oauth_client(config: ProviderConfig) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=config.client_id,
        client_secret=config.client_secret,
        # Kakao and Naver take the secret in the form body; Google accepts it there too.
        token_endpoint_auth_method="client_secret_post" if config.client_secret else "none",
        scope=config.scope or None,
        code_challenge_method="S256",
        timeout=HTTP_TIMEOUT_SECONDS,
    )


async def authorization_url(
    config: ProviderConfig, *, redirect_uri: str, state: str, code_verifier: str, nonce: str
) -> str:
    extra = {"nonce": nonce} if config.name == "google" else {}
    async with _oauth_client(config) as client:
        url, _ = client.create_authorization_url(
            config.authorize_url,
            state=state,
            code_verifier=code_verifier,
            redirect_uri=redirect_uri,
            **extra,
        )
    return str(url)


class GoogleKeysUnavailable(httpx.HTTPError):
    """No key of Google's to check an ID token with: Google is unreachable, as for a sign-in."""


def google_keys(settings: Settings) -> JwksCache:
    """Google's signing keys, kept an hour (Google rotates them over days); an unknown `kid`
    refetches them at most once per interval, so forged kids cannot turn sign-in attempts into
    calls to Google."""
    return JwksCache(
        settings.google_jwks_url,
        cache_seconds=3600,
        http=httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS),
    )


async def verify_google_id_token(
    settings: Settings,
    google_keys: JwksCache,
    id_token: str,
    *,
    audiences: list[str],
    nonce: str | None,
) -> ProviderIdentity:
    try:
        kid = jws.extract_compact(id_token.encode()).protected.get("kid")
        keys = await google_keys.key_set(kid)
        if keys is None:
            raise GoogleKeysUnavailable("Google's signing keys could not be fetched")
        decoded = jwt.decode(id_token, keys, algorithms=["RS256"])
        checks: dict[str, Any] = {
            "iss": {"essential": True, "values": settings.google_issuers},
            "aud": {"essential": True, "values": audiences},
            "exp": {"essential": True},
            "sub": {"essential": True},
        }
        if nonce is not None:
            checks["nonce"] = {"essential": True, "value": nonce}
        SkewTolerantClaims(**checks).validate(decoded.claims)
    except (JoseError, ValueError) as exc:
        raise ProviderRefused(f"Google ID token refused: {exc}") from exc
    claims = decoded.claims
    return ProviderIdentity(
        provider="google",
        subject=str(claims["sub"]),
        nickname=claims.get("name"),
        email=claims.get("email") if claims.get("email_verified") else None,
    )


def _kakao_identity(body: dict[str, Any]) -> ProviderIdentity:
    account = body.get("kakao_account") or {}
    nickname = (account.get("profile") or {}).get("nickname") or (body.get("properties") or {}).get(
        "nickname"
    )
    # Kakao's address is the user's only while `is_email_valid`: it turns false (and the address
    # comes masked) once the address has been taken by another Kakao account.
    usable = account.get("is_email_verified") is True and account.get("is_email_valid") is True
    email = account.get("email") if usable else None
    return ProviderIdentity(
        provider="kakao", subject=str(body["id"]), nickname=nickname, email=email
    )


def _naver_identity(body: dict[str, Any]) -> ProviderIdentity:
    if body.get("resultcode") != "00":
        raise ProviderRefused(f"Naver refused the token: {body.get('message')}")
    profile = body["response"]
    return ProviderIdentity(
        provider="naver",
        subject=str(profile["id"]),
        nickname=profile.get("nickname") or profile.get("name"),
        email=profile.get("email"),
    )


async def _user_info(config: ProviderConfig, http: Any, access_token: str) -> dict[str, Any]:
    """GET the user-info endpoint with `http`: an httpx client, or authlib's (httpx2) one."""
    response = await http.get(
        config.userinfo_url, headers={"Authorization": f"Bearer {access_token}"}
    )
    if response.status_code in (400, 401, 403):
        raise ProviderRefused(f"{config.name} refused the access token ({response.status_code})")
    response.raise_for_status()
    try:
        body = response.json()
    except ValueError as exc:
        raise ProviderRefused(f"{config.name} answered with something other than JSON") from exc
    if not isinstance(body, dict):
        raise ProviderRefused(f"{config.name} answered with an unexpected shape")
    return body


def _identity_from_user_info(name: str, body: dict[str, Any]) -> ProviderIdentity:
    try:
        return _parse_user_info(name, body)
    except (KeyError, TypeError) as exc:
        raise ProviderRefused(f"{name} user info lacks {exc}") from exc


def _parse_user_info(name: str, body: dict[str, Any]) -> ProviderIdentity:
    if name == "kakao":
        return _kakao_identity(body)
    if name == "naver":
        return _naver_identity(body)
    return ProviderIdentity(
        provider="google",
        subject=str(body["sub"]),
        nickname=body.get("name"),
        email=body.get("email"),
    )


async def exchange_code(
    settings: Settings,
    config: ProviderConfig,
    google_keys: JwksCache,
    *,
    code: str,
    state: str,
    redirect_uri: str,
    code_verifier: str,
    nonce: str,
) -> ProviderIdentity:
    """Finish the web flow: code + PKCE verifier → provider tokens → who signed in."""
    async with _oauth_client(config) as client:
        try:
            token = await client.fetch_token(
                config.token_url,
                grant_type="authorization_code",
                code=code,
                redirect_uri=redirect_uri,
                code_verifier=code_verifier,
                # Naver's token endpoint asks for the state again; others ignore it.
                body=urlencode({"state": state}) if config.name == "naver" else "",
            )
        except OAuthError as exc:
            raise ProviderRefused(f"{config.name} refused the code: {exc.error}") from exc
        except ValueError as exc:  # a 200 that is not JSON: no token came back
            raise ProviderRefused(f"{config.name} answered the code without a token") from exc
        access_token = token.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise ProviderRefused(f"{config.name} answered the code without an access token")
        if config.name == "google":
            if "id_token" not in token:
                raise ProviderRefused("Google answered without an ID token")
            who = await verify_google_id_token(
                settings,
                google_keys,
                token["id_token"],
                audiences=[config.client_id],
                nonce=nonce,
            )
            info = await _user_info(config, client, access_token)
            if str(info.get("sub")) != who.subject:  # OIDC Core §5.3.2
                raise ProviderRefused("Google user info does not match the ID token")
            return who
        return _identity_from_user_info(config.name, await _user_info(config, client, access_token))


async def verify_mobile_token(
    settings: Settings, config: ProviderConfig, google_keys: JwksCache, token: str
) -> ProviderIdentity:
    """Check a native SDK's token with its provider before trusting who it names."""
    if config.name == "google":
        audiences = [config.client_id, *settings.google_mobile_client_ids]
        return await verify_google_id_token(
            settings, google_keys, token, audiences=audiences, nonce=None
        )
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS) as http:
        # The user-info endpoints answer for a token issued to any app: without these checks,
        # another Kakao/Naver login app could replay its users' tokens here and sign in as them.
        if config.name == "kakao":
            await _check_kakao_app(settings, config, http, token)
        elif config.name == "naver":
            await _check_naver_client(settings, config, http, token)
        return _identity_from_user_info(config.name, await _user_info(config, http, token))


async def _token_info(
    config: ProviderConfig, url: str, http: httpx.AsyncClient, token: str
) -> dict[str, Any]:
    """What the provider says about the token itself (refusals handled as for user info)."""
    return await _user_info(replace(config, userinfo_url=url), http, token)


async def _check_kakao_app(
    settings: Settings, config: ProviderConfig, http: httpx.AsyncClient, token: str
) -> None:
    info = await _token_info(config, settings.kakao_token_info_url, http, token)
    # Settings refuse to load without KAKAO_APP_ID; None here still must not match a missing id.
    if settings.kakao_app_id is None or info.get("app_id") != settings.kakao_app_id:
        raise ProviderRefused("The Kakao token was issued to another app")


async def _check_naver_client(
    settings: Settings, config: ProviderConfig, http: httpx.AsyncClient, token: str
) -> None:
    info = await _token_info(config, settings.naver_token_info_url, http, token)
    if info.get("resultcode") != "00":
        raise ProviderRefused(f"Naver refused the token: {info.get('message')}")
    details = info.get("response")
    if not isinstance(details, dict) or details.get("client_id") != config.client_id:
        raise ProviderRefused("The Naver token was issued to another app")


def provider_unavailable(exc: Exception, provider: str) -> Problem:
    log.warning("provider_unavailable", provider=provider, error=type(exc).__name__)
    return Problem(502, f"{provider} could not be reached; try again.", title="Bad gateway")
