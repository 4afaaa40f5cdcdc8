"""Kakao Local address search (https://developers.kakao.com/docs/latest/ko/local/dev-guide):
GET /v2/local/search/address.json?query=… with `Authorization: KakaoAK <REST API key>`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import structlog

ADDRESS_SEARCH_PATH = "/v2/local/search/address.json"
log = structlog.get_logger("ecosort.locations.kakao")


@dataclass(frozen=True)
class GeocodedAddress:
    address: str
    road_address: str | None
    lat: float
    lng: float
    region_1depth: str | None
    region_2depth: str | None
    b_code: str | None  # 법정동 code: its first five digits are the 시·군·구 code

    def as_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


class KakaoLocalError(Exception):
    """Kakao Local did not give an answer we can use. `status` is what to tell our client."""

    def __init__(self, status: int, detail: str, retry_after: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


def _document(doc: dict[str, Any]) -> GeocodedAddress:
    region = doc.get("address") or doc.get("road_address") or {}
    road = doc.get("road_address") or {}
    return GeocodedAddress(
        address=str(doc.get("address_name", "")),
        road_address=road.get("address_name") or None,
        lat=float(doc["y"]),
        lng=float(doc["x"]),
        region_1depth=region.get("region_1depth_name") or None,
        region_2depth=region.get("region_2depth_name") or None,
        b_code=(doc.get("address") or {}).get("b_code") or None,
    )


class KakaoLocalClient:
    def __init__(self, api_key: str, *, base_url: str, timeout: float) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            headers={"Authorization": f"KakaoAK {api_key}"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def search_address(self, query: str, *, size: int = 10) -> list[GeocodedAddress]:
        try:
            response = await self._http.get(
                ADDRESS_SEARCH_PATH, params={"query": query, "size": size}
            )
        except httpx.TimeoutException as exc:
            raise KakaoLocalError(504, "Kakao Local did not answer in time.") from exc
        except httpx.HTTPError as exc:
            raise KakaoLocalError(502, "Kakao Local could not be reached.") from exc
        if response.status_code != 200:
            raise self._error(response)
        try:
            return [_document(doc) for doc in response.json()["documents"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise KakaoLocalError(502, "Kakao Local answered in an unexpected format.") from exc

    @staticmethod
    def _error(response: httpx.Response) -> KakaoLocalError:
        try:
            body = response.json()
            kind, message = body.get("errorType"), body.get("message")
        except ValueError:
            kind, message = None, None
        log.warning("kakao_local_error", status=response.status_code, type=kind, message=message)
        if response.status_code == 429:
            return KakaoLocalError(
                503,
                "Kakao Local's quota is used up for now.",
                retry_after=response.headers.get("retry-after"),
            )
        if response.status_code in (401, 403):
            return KakaoLocalError(502, "Kakao Local refused this service's API key.")
        if response.status_code == 400:
            return KakaoLocalError(400, f"Kakao Local refused the query: {message or kind}.")
        return KakaoLocalError(502, f"Kakao Local failed ({response.status_code}).")
