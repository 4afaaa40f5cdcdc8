"""A small OAuth 2.0 / OpenID Connect provider for the auth tests.

It speaks the real protocol over real HTTP (uvicorn on a free 127.0.0.1 port, in a thread):
authorization code with PKCE S256, the token endpoint (client_secret_post or client_secret_basic),
and per provider shape the user-info answer the real provider documents:

- ``/google/…``: OIDC, ID tokens signed RS256, JWKS at ``/google/jwks``, ``/google/userinfo``;
- ``/kakao/…``: ``/kakao/v2/user/me`` in Kakao's documented shape;
- ``/naver/…``: ``/naver/v1/nid/me`` in Naver's documented shape.

Tests choose who signs in with :meth:`LocalOAuthProvider.sign_in_as`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

SHAPES = ("google", "kakao", "naver")


# Who signs in when a test did not say: Kakao's user ids are numbers, the others' strings.
DEFAULT_SUBJECTS = {"kakao": "4000000001", "naver": "naver-default", "google": "google-default"}


@dataclass
class RegisteredClient:
    client_id: str
    client_secret: str
    redirect_uris: list[str]


@dataclass
class ProviderUser:
    subject: str
    nickname: str
    email: str = "someone@example.com"


@dataclass
class _PendingCode:
    shape: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    user: ProviderUser


@dataclass
class LocalOAuthProvider:
    clients: dict[str, RegisteredClient]  # by shape
    base_url: str = ""
    users: dict[str, ProviderUser] = field(default_factory=dict)
    codes: dict[str, _PendingCode] = field(default_factory=dict)
    access_tokens: dict[str, tuple[str, ProviderUser]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    # Claims the next ID tokens get changed (a misbehaving or impersonated provider).
    id_token_overrides: dict[str, Any] = field(default_factory=dict)
    # What the token endpoint answers instead of a token, with 200 (a proxy's page, say).
    token_answer_override: Response | None = None
    signing_key: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "local-rsa-1"})
    )
    # Every request to the JWKS, answered or not; while `jwks_down`, each is answered 503.
    jwks_requests: int = 0
    jwks_down: bool = False

    def sign_in_as(self, shape: str, subject: str, nickname: str) -> None:
        self.users[shape] = ProviderUser(subject=subject, nickname=nickname)

    def issuer(self, shape: str) -> str:
        return f"{self.base_url}/{shape}"

    # --- endpoints -----------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        shape = request.path_params["shape"]
        q = request.query_params
        client = self.clients.get(shape)
        if client is None or q.get("client_id") != client.client_id:
            return JSONResponse({"error": "invalid_client"}, status_code=400)
        redirect_uri = q.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            # RFC 6749 §4.1.2.1: never redirect to an unregistered address.
            return JSONResponse({"error": "invalid_request", "detail": "redirect_uri"}, 400)
        if q.get("response_type") != "code":
            return _redirect_error(redirect_uri, "unsupported_response_type", q.get("state"))
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return _redirect_error(redirect_uri, "invalid_request", q.get("state"))
        user = self.users.get(shape) or ProviderUser(
            subject=DEFAULT_SUBJECTS.get(shape, f"{shape}-default"), nickname="기본"
        )
        code = secrets.token_urlsafe(24)
        self.codes[code] = _PendingCode(
            shape=shape,
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            code_challenge=q["code_challenge"],
            nonce=q.get("nonce"),
            user=user,
        )
        params = {"code": code}
        if q.get("state") is not None:
            params["state"] = q["state"]
        return RedirectResponse(f"{redirect_uri}?{urlencode(params)}", status_code=302)

    async def token(self, request: Request) -> Response:
        shape = request.path_params["shape"]
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.token_requests.append({"shape": shape, **form})
        if self.token_answer_override is not None:
            return self.token_answer_override
        client_id, client_secret = _client_credentials(request, form)
        client = self.clients.get(shape)
        if client is None or (client_id, client_secret) != (
            client.client_id,
            client.client_secret,
        ):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") != "authorization_code":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        pending = self.codes.pop(form.get("code", ""), None)  # codes are single use
        if pending is None or pending.shape != shape or pending.client_id != client_id:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if form.get("redirect_uri") != pending.redirect_uri:
            return JSONResponse({"error": "invalid_grant", "detail": "redirect_uri"}, 400)
        if _s256(form.get("code_verifier", "")) != pending.code_challenge:
            return JSONResponse({"error": "invalid_grant", "detail": "code_verifier"}, 400)
        access_token = secrets.token_urlsafe(32)
        self.access_tokens[access_token] = (shape, pending.user)
        answer: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": 3599,
            "refresh_token": secrets.token_urlsafe(32),
        }
        if shape == "google":
            answer["id_token"] = self.id_token(
                pending.user, client.client_id, pending.nonce, self.id_token_overrides
            )
            answer["scope"] = "openid email profile"
        return JSONResponse(answer)

    def id_token(
        self,
        user: ProviderUser,
        audience: str,
        nonce: str | None,
        overrides: dict[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer("google"),
            "azp": audience,
            "aud": audience,
            "sub": user.subject,
            "email": user.email,
            "email_verified": True,
            "name": user.nickname,
            "iat": now,
            "exp": now + 3600,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        claims.update(overrides or {})
        header = {"alg": "RS256", "kid": self.signing_key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self.signing_key, algorithms=["RS256"])

    def _bearer_user(self, request: Request, shape: str) -> ProviderUser | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        found = self.access_tokens.get(token) if scheme.lower() == "bearer" else None
        return found[1] if found and found[0] == shape else None

    async def google_userinfo(self, request: Request) -> Response:
        user = self._bearer_user(request, "google")
        if user is None:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse(
            {
                "sub": user.subject,
                "name": user.nickname,
                "email": user.email,
                "email_verified": True,
            }
        )

    async def google_jwks(self, request: Request) -> Response:
        self.jwks_requests += 1
        if self.jwks_down:
            return JSONResponse({"error": "unavailable"}, status_code=503)
        return JSONResponse(
            {"keys": [{**self.signing_key.as_dict(private=False), "alg": "RS256", "use": "sig"}]}
        )

    async def kakao_user_me(self, request: Request) -> Response:
        user = self._bearer_user(request, "kakao")
        if user is None:
            return JSONResponse({"msg": "this access token does not exist", "code": -401}, 401)
        return JSONResponse(
            {
                "id": int(user.subject),
                "connected_at": "2026-04-11T01:45:28Z",
                "kakao_account": {
                    "profile_nickname_needs_agreement": False,
                    "profile": {"nickname": user.nickname, "is_default_image": True},
                    "email_needs_agreement": False,
                    "is_email_valid": True,
                    "is_email_verified": True,
                    "email": user.email,
                },
                "properties": {"nickname": user.nickname},
            }
        )

    async def naver_me(self, request: Request) -> Response:
        user = self._bearer_user(request, "naver")
        if user is None:
            return JSONResponse(
                {"resultcode": "024", "message": "Authentication failed / 인증에 실패했습니다."},
                401,
            )
        return JSONResponse(
            {
                "resultcode": "00",
                "message": "success",
                "response": {"id": user.subject, "nickname": user.nickname, "email": user.email},
            }
        )

    def asgi_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/{shape}/authorize", self.authorize, methods=["GET"]),
                Route("/{shape}/token", self.token, methods=["POST"]),
                Route("/google/userinfo", self.google_userinfo, methods=["GET"]),
                Route("/google/jwks", self.google_jwks, methods=["GET"]),
                Route("/kakao/v2/user/me", self.kakao_user_me, methods=["GET", "POST"]),
                Route("/naver/v1/nid/me", self.naver_me, methods=["GET"]),
            ]
        )


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        client_id, _, secret = base64.b64decode(value).decode().partition(":")
        return client_id, secret
    return form.get("client_id", ""), form.get("client_secret", "")


def _redirect_error(redirect_uri: str, error: str, state: str | None) -> Response:
    params = {"error": error, **({"state": state} if state else {})}
    return RedirectResponse(f"{redirect_uri}?{urlencode(params)}", status_code=302)


class ProviderServer:
    """Runs a LocalOAuthProvider under uvicorn in a daemon thread on a free loopback port."""

    def __init__(self, provider: LocalOAuthProvider) -> None:
        self.provider = provider
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        port = self._socket.getsockname()[1]
        provider.base_url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(provider.asgi_app(), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> LocalOAuthProvider:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("local OAuth provider did not start")
            time.sleep(0.02)
        return self.provider

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._socket.close()
