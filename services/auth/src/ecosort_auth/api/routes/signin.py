"""Signing in: the providers list, the web flow (authorize → callback), the mobile exchange of a
native SDK's token, and the local dev login."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from authlib.common.security import generate_token
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse

from ecosort_auth import oauth_state
from ecosort_auth.api.deps import client_ip, device_of, rate_limiter, settings_of
from ecosort_auth.api.schemas import DevLoginIn, MobileTokenIn, ProvidersOut, TokenAnswer
from ecosort_auth.config import Settings
from ecosort_auth.issuance import tokens_for_sign_in
from ecosort_auth.providers import (
    PROVIDER_HTTP_ERRORS,
    ProviderConfig,
    ProviderRefused,
    authorization_url,
    enabled_providers,
    exchange_code,
    provider_config,
    provider_unavailable,
    verify_mobile_token,
)
from ecosort_auth.sessions import ProviderIdentity
from ecosort_common.errors import Problem
from ecosort_common.head import refuse_head
from ecosort_common.openapi import retry_later
from ecosort_common.ratelimit import RateLimiter

router = APIRouter(tags=["sign-in"])
SettingsDep = Annotated[Settings, Depends(settings_of)]
LimiterDep = Annotated[RateLimiter, Depends(rate_limiter)]
PKCE_VERIFIER_LENGTH = 64  # RFC 7636: 43-128 characters


def _enabled(settings: Settings, provider: str) -> ProviderConfig:
    config = provider_config(settings, provider)
    if config is None:
        raise Problem(404, f"Sign-in with '{provider}' is not enabled here.")
    return config


async def _limit_ip(limiter: LimiterDep, settings: SettingsDep, request: Request) -> None:
    await limiter.hit("sign-in", f"ip:{client_ip(request)}", settings.auth_rate_signin_per_ip)


async def _limit_subject(limiter: RateLimiter, settings: Settings, who: ProviderIdentity) -> None:
    subject = f"{who.provider}:{who.subject}"
    await limiter.hit("sign-in", f"subject:{subject}", settings.auth_rate_signin_per_subject)


Responses = dict[int | str, dict[str, Any]]
NOT_ENABLED: Responses = {404: {"description": "This provider's sign-in is not enabled here."}}
TOO_MANY: Responses = {
    429: retry_later("Too many sign-ins from this address, or for this provider account.")
}
SIGN_IN_ERRORS: Responses = {
    **NOT_ENABLED,
    **TOO_MANY,
    401: {"description": "The provider did not sign this person in, or refused the token."},
    502: {"description": "The provider could not be reached; try again."},
}


@router.get("/providers", response_model=ProvidersOut)
async def list_providers(settings: SettingsDep) -> ProvidersOut:
    return ProvidersOut(
        providers=enabled_providers(settings), dev_login=settings.auth_dev_login_enabled
    )


@router.get(
    "/{provider}/authorize",
    status_code=302,
    response_class=RedirectResponse,
    dependencies=[Depends(refuse_head), Depends(_limit_ip)],
    responses={**NOT_ENABLED, **TOO_MANY},
)
async def authorize(
    provider: str,
    request: Request,
    settings: SettingsDep,
    redirect_uri: Annotated[str | None, Query(max_length=2048)] = None,
    # Kept until the callback stores it with the session: no NUL, which PostgreSQL refuses.
    device: Annotated[str | None, Query(max_length=200, pattern="^[^\x00]*$")] = None,
) -> RedirectResponse:
    """Start the web flow: redirect to the provider with a fresh state and PKCE challenge."""
    config = _enabled(settings, provider)
    allowed = settings.allowed_redirect_uris(provider)
    if redirect_uri is None:
        redirect_uri = allowed[0]
    elif redirect_uri not in allowed:
        # Exact match only: no prefixes or patterns, so no open redirect (RFC 9700 §4.1).
        raise Problem(400, "redirect_uri is not on the allow-list.", title="Bad redirect_uri")
    state = secrets.token_urlsafe(32)
    pending = oauth_state.PendingSignIn(
        provider=provider,
        code_verifier=generate_token(PKCE_VERIFIER_LENGTH),
        redirect_uri=redirect_uri,
        nonce=secrets.token_urlsafe(16),
        device=device_of(request, device),
    )
    browser_key = secrets.token_urlsafe(32)
    await oauth_state.save(
        request.app.state.redis, state, browser_key, pending, settings.auth_state_ttl_seconds
    )
    url = await authorization_url(
        config,
        redirect_uri=redirect_uri,
        state=state,
        code_verifier=pending.code_verifier,
        nonce=pending.nonce,
    )
    redirect = RedirectResponse(url, status_code=302)
    # Lax: sent on the top-level GET the provider redirects the browser back with.
    redirect.set_cookie(
        oauth_state.cookie_name(state),
        browser_key,
        max_age=settings.auth_state_ttl_seconds,
        path=_callback_path(settings, provider),
        secure=settings.auth_public_base_url.startswith("https://"),
        httponly=True,
        samesite="lax",
    )
    return redirect


def _callback_path(settings: Settings, provider: str) -> str:
    return f"{settings.api_prefix}/{provider}/callback"


@router.get(
    "/{provider}/callback",
    response_model=TokenAnswer,
    dependencies=[Depends(refuse_head), Depends(_limit_ip)],
    responses=SIGN_IN_ERRORS,
)
async def callback(
    provider: str,
    request: Request,
    response: Response,
    settings: SettingsDep,
    limiter: LimiterDep,
    state: Annotated[str, Query(min_length=1, max_length=256)],
    code: Annotated[str | None, Query(max_length=2048)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> TokenAnswer:
    """Finish the web flow: the state must be one we issued to this browser, unused and for this
    provider."""
    config = _enabled(settings, provider)
    cookie = oauth_state.cookie_name(state)
    pending = await oauth_state.take(request.app.state.redis, state, request.cookies.get(cookie))
    if pending is None or pending.provider != provider:
        raise Problem(
            400,
            "Unknown, expired or already used state, or a sign-in started in another browser.",
            title="Invalid sign-in state",
        )
    response.delete_cookie(cookie, path=_callback_path(settings, provider))
    if error is not None or code is None:
        raise Problem(401, f"The provider did not sign you in ({error}).", title="Sign-in refused")
    try:
        who = await exchange_code(
            settings,
            config,
            request.app.state.google_keys,
            code=code,
            state=state,
            redirect_uri=pending.redirect_uri,
            code_verifier=pending.code_verifier,
            nonce=pending.nonce,
        )
    except ProviderRefused as exc:
        raise Problem(401, str(exc), title="Sign-in refused") from exc
    except PROVIDER_HTTP_ERRORS as exc:
        raise provider_unavailable(exc, provider) from exc
    await _limit_subject(limiter, settings, who)
    return await tokens_for_sign_in(request.app, who, pending.device)


@router.post(
    "/{provider}/token",
    response_model=TokenAnswer,
    dependencies=[Depends(_limit_ip)],
    responses=SIGN_IN_ERRORS,
)
async def mobile_token(
    provider: str,
    body: MobileTokenIn,
    request: Request,
    settings: SettingsDep,
    limiter: LimiterDep,
) -> TokenAnswer:
    """Exchange the token a provider's native SDK gave the app for ours, once the provider has
    confirmed it."""
    config = _enabled(settings, provider)
    field = "id_token" if provider == "google" else "access_token"
    sdk_token = getattr(body, field)
    if not sdk_token:
        raise Problem(422, f"{provider} sign-in needs '{field}' from its SDK.")
    try:
        who = await verify_mobile_token(settings, config, request.app.state.google_keys, sdk_token)
    except ProviderRefused as exc:
        raise Problem(401, str(exc), title="Sign-in refused") from exc
    except PROVIDER_HTTP_ERRORS as exc:
        raise provider_unavailable(exc, provider) from exc
    await _limit_subject(limiter, settings, who)
    return await tokens_for_sign_in(request.app, who, device_of(request, body.device))


@router.post(
    "/dev/login",
    response_model=TokenAnswer,
    dependencies=[Depends(_limit_ip)],
    responses={
        404: {"description": "The dev login is off (always, outside local and dev)."},
        **TOO_MANY,
    },
)
async def dev_login(
    body: DevLoginIn, request: Request, settings: SettingsDep, limiter: LimiterDep
) -> TokenAnswer:
    """Local development only: sign in as anyone. Answers 404 unless AUTH_DEV_LOGIN_ENABLED."""
    if not settings.auth_dev_login_enabled:
        raise Problem(404, f"No resource at {request.url.path}.")
    who = ProviderIdentity(provider="dev", subject=body.subject, nickname=body.nickname)
    await _limit_subject(limiter, settings, who)
    return await tokens_for_sign_in(request.app, who, device_of(request, body.device))
