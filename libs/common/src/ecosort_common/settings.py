"""Settings every service shares, read from the environment (12-factor)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def async_database_url(url: str) -> str:
    """Point a plain `postgresql://` URL at the psycopg 3 driver SQLAlchemy should use."""
    for prefix in ("postgresql+psycopg://", "postgresql+asyncpg://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


class ServiceSettings(BaseSettings):
    """Base settings; each service subclasses it and adds its own fields."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    service_name: str = "service"
    environment: str = "local"
    log_level: str = "info"
    log_json: bool = True

    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    database_pool_size: int = 10
    database_connect_timeout_seconds: float = 3.0
    redis_url: str = "redis://127.0.0.1:6379/0"

    jwks_url: str = "http://127.0.0.1:8101/api/v1/auth/jwks.json"
    jwt_issuer: str = "http://127.0.0.1:8080"
    jwt_audience: str = "ecosort"
    jwks_cache_seconds: int = 300

    outbox_relay_enabled: bool = True
    outbox_poll_seconds: float = 0.5
    event_consumers_enabled: bool = True

    readiness_timeout_seconds: float = Field(default=2.0, gt=0)
    # The service's own time for a request, from its body read to its answer's start
    # (ecosort_common.deadline): past it, a 503 to retry.
    request_deadline_seconds: float = Field(default=30.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _use_psycopg(cls, value: str) -> str:
        return async_database_url(value)

    @property
    def api_prefix(self) -> str:
        return f"/api/v1/{self.service_name}"
