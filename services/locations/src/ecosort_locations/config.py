"""Settings of the locations service (environment variables; see the README).

- KAKAO_REST_API_KEY: enables geocoding (the /geocode endpoint, and coordinates for imported
  rows that lack them) through the Kakao Local API. Unset: /geocode answers 503 and such rows
  are skipped and counted.
- GEOCODE_RATE_LIMIT_PER_MINUTE: how many queries not already cached one user may send to
  /geocode a minute (each spends Kakao's daily quota); over it, 429 with Retry-After.
- COLLECTION_POINTS_SEED_DIR: a folder of public CSV/JSON files that `migrate` imports after
  the schema is up to date (each file once, by checksum). Unset: `migrate` imports nothing.
"""

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr

from ecosort_common.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "locations"

    kakao_rest_api_key: SecretStr | None = None
    kakao_local_base_url: str = "https://dapi.kakao.com"
    kakao_timeout_seconds: float = Field(default=3.0, gt=0)
    geocode_cache_seconds: int = Field(default=86_400, ge=0)
    # Kakao's free quota is per day: a bulk import geocodes a few addresses at a time.
    geocode_concurrency: int = Field(default=4, ge=1, le=32)
    geocode_rate_limit_per_minute: int = Field(default=30, gt=0)

    collection_points_seed_dir: Path | None = None


@lru_cache
def get_settings() -> Settings:
    return Settings()
