"""Settings of the users service (environment variables; see the README)."""

from functools import lru_cache

from ecosort_common.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "users"


@lru_cache
def get_settings() -> Settings:
    return Settings()
