"""Settings of the auth service (environment variables, 12-factor).

Beyond the shared ones (DATABASE_URL, REDIS_URL, JWT_ISSUER, JWT_AUDIENCE, …):

- ``AUTH_KEY_ENCRYPTION_KEY``: passphrase that encrypts the signing keys' private halves in the
  database (PKCS#8, AES-256). Required: auth refuses to start without it (the local stack
  generates one under .local/).
- ``AUTH_PUBLIC_BASE_URL``: where browsers reach us; the default callback address derives from it.
- ``AUTH_REDIRECT_URI_ALLOWLIST``: JSON list of the callback addresses a web flow may use
  (``{provider}`` is replaced by the provider's name).
- ``AUTH_ACCESS_TOKEN_TTL_SECONDS`` (900), ``AUTH_REFRESH_TOKEN_TTL_SECONDS`` (30 days),
  ``AUTH_STATE_TTL_SECONDS`` (600).
- ``AUTH_ENDED_SESSION_RETENTION_SECONDS`` (30 days): a session that ended (expired, signed out,
  revoked) longer ago than this is deleted with its refresh tokens (pruning.py); presented
  after that, one of them is refused as unknown rather than as expired or revoked.
- ``AUTH_DEV_LOGIN_ENABLED`` (false): ``POST /api/v1/auth/dev/login``, which signs anyone in as
  anyone. Auth refuses to start with it on unless ``ENVIRONMENT`` is ``local``, ``dev`` or ``test``.
- ``AUTH_RATE_WINDOW_SECONDS`` and the ``AUTH_RATE_*`` limits per window.
- Per provider (``KAKAO_``, ``NAVER_``, ``GOOGLE_``): ``CLIENT_ID``, ``CLIENT_SECRET`` and the
  endpoint URLs (defaults: the real providers). A provider is enabled when its client id is set.
  ``KAKAO_APP_ID`` (the app's numeric id, not a secret) is required with ``KAKAO_CLIENT_ID``: the
  mobile exchange refuses Kakao tokens whose ``access_token_info`` names another app. Naver
  tokens must name ``NAVER_CLIENT_ID`` in Naver's token verification (``NAVER_TOKEN_INFO_URL``).
  ``GOOGLE_MOBILE_CLIENT_IDS`` lists the Android/iOS client ids Google ID tokens may be issued to.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Self

from pydantic import Field, SecretStr, model_validator

from ecosort_common.settings import ServiceSettings


class MissingKeyEncryptionKeyError(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            "AUTH_KEY_ENCRYPTION_KEY is not set: it encrypts the token signing keys "
            "(create a Secret and reference it; the local stack generates one)"
        )


class MissingKakaoAppIdError(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            "KAKAO_APP_ID is not set: it is required with KAKAO_CLIENT_ID (Kakao Developers > "
            "App > App ID; plain config, not a secret) so that the mobile sign-in refuses Kakao "
            "tokens issued to other apps"
        )


# Where a sign-in as anyone may exist: never a shared or public deployment.
DEV_LOGIN_ENVIRONMENTS = ("local", "dev", "test")


class DevLoginNotAllowedError(RuntimeError):
    def __init__(self, environment: str) -> None:
        super().__init__(
            f"AUTH_DEV_LOGIN_ENABLED is true with ENVIRONMENT={environment!r}: the dev login "
            f"signs anyone in as anyone, so it is allowed only with ENVIRONMENT one of "
            f"{', '.join(DEV_LOGIN_ENVIRONMENTS)}"
        )


class Settings(ServiceSettings):
    service_name: str = "auth"
    jwks_url: str = "http://auth.internal/api/v1/auth/jwks.json"  # auth verifies in-process

    auth_key_encryption_key: SecretStr | None = None
    auth_public_base_url: str = "http://127.0.0.1:8080"
    auth_redirect_uri_allowlist: list[str] = Field(default_factory=list)
    auth_access_token_ttl_seconds: int = 900
    auth_refresh_token_ttl_seconds: int = 30 * 24 * 3600
    auth_state_ttl_seconds: int = 600
    auth_ended_session_retention_seconds: int = Field(default=30 * 24 * 3600, gt=0)
    auth_dev_login_enabled: bool = False

    auth_rate_window_seconds: int = 60
    auth_rate_signin_per_ip: int = 30
    auth_rate_signin_per_subject: int = 10
    auth_rate_refresh_per_ip: int = 120
    auth_rate_refresh_per_subject: int = 30

    kakao_client_id: str | None = None
    kakao_client_secret: SecretStr | None = None
    kakao_app_id: int | None = None
    kakao_authorize_url: str = "https://kauth.kakao.com/oauth/authorize"
    kakao_token_url: str = "https://kauth.kakao.com/oauth/token"
    kakao_userinfo_url: str = "https://kapi.kakao.com/v2/user/me"
    kakao_token_info_url: str = "https://kapi.kakao.com/v1/user/access_token_info"
    kakao_scope: str = "profile_nickname account_email"

    naver_client_id: str | None = None
    naver_client_secret: SecretStr | None = None
    naver_authorize_url: str = "https://nid.naver.com/oauth2.0/authorize"
    naver_token_url: str = "https://nid.naver.com/oauth2.0/token"
    naver_userinfo_url: str = "https://openapi.naver.com/v1/nid/me"
    # info=true: the answer then names the client id the token was issued to.
    naver_token_info_url: str = "https://openapi.naver.com/v1/nid/verify?info=true"
    naver_scope: str = ""

    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    google_mobile_client_ids: list[str] = Field(default_factory=list)
    google_authorize_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_url: str = "https://oauth2.googleapis.com/token"
    google_userinfo_url: str = "https://openidconnect.googleapis.com/v1/userinfo"
    google_jwks_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    google_issuers: list[str] = Field(
        default_factory=lambda: ["https://accounts.google.com", "accounts.google.com"]
    )
    google_scope: str = "openid email profile"

    # The errors below are not ValueErrors on purpose: pydantic would wrap those in a
    # ValidationError that quotes the settings it was given, secrets included, into the logs.
    @model_validator(mode="after")
    def _dev_login_only_where_harmless(self) -> Self:
        if self.auth_dev_login_enabled and self.environment not in DEV_LOGIN_ENVIRONMENTS:
            raise DevLoginNotAllowedError(self.environment)
        return self

    @model_validator(mode="after")
    def _kakao_needs_its_app_id(self) -> Self:
        if self.kakao_client_id and self.kakao_app_id is None:
            raise MissingKakaoAppIdError()
        return self

    @property
    def key_encryption_key(self) -> str:
        if self.auth_key_encryption_key is None:
            raise MissingKeyEncryptionKeyError()
        return self.auth_key_encryption_key.get_secret_value()

    def allowed_redirect_uris(self, provider: str) -> list[str]:
        templates = self.auth_redirect_uri_allowlist or [
            f"{self.auth_public_base_url.rstrip('/')}/api/v1/auth/{{provider}}/callback"
        ]
        return [t.replace("{provider}", provider) for t in templates]


@lru_cache
def get_settings() -> Settings:
    return Settings()
