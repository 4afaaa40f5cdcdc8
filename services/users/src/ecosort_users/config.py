"""Settings of the users service (environment variables; see the README)."""

from functools import lru_cache

from ecosort_common.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "users"
    # Statistics count days and months in this time zone: a streak is about the person's days,
    # not UTC's. EcoSort serves South Korea.
    stats_timezone: str = "Asia/Seoul"
    default_locale: str = "ko-KR"


@lru_cache
def get_settings() -> Settings:
    return Settings()
