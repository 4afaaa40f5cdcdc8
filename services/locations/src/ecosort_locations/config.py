"""Settings of the locations service (environment variables; see the README)."""

from functools import lru_cache

from ecosort_common.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "locations"


@lru_cache
def get_settings() -> Settings:
    return Settings()
