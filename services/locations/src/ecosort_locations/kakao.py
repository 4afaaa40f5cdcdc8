"""Kakao Local address search (https://developers.kakao.com/docs/latest/ko/local/dev-guide):
GET /v2/local/search/address.json?query=… with `Authorization: KakaoAK <REST API key>`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from ecosort_locations.geo import in_korea

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


# When Kakao's 429 names no time: the app should not come back at once, nor give up for good.
QUOTA_RETRY_AFTER = "60"


class KakaoLocalError(Exception):
    """Kakao Local did not give an answer we can use. `status` is what to tell our client."""

    def __init__(self, status: int, detail: str, retry_after: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


def _document(doc: Any) -> GeocodedAddress:
    """One of Kakao's documents, checked: any other shape raises TypeError or ValueError, which
    the caller reports as an unexpected format rather than letting a 500 or a null through."""
    if not isinstance(doc, dict):
        raise TypeError(f"a document is a {type(doc).__name__}")
    address, road = _part(doc, "address"), _part(doc, "road_address")
    region = address or road
    lat, lng = _coordinate(doc.get("y")), _coordinate(doc.get("x"))
    # Kakao Local covers Korea only: anything else is a wrong answer, not a place.
    if not in_korea(lat, lng):
        raise ValueError(f"coordinates outside Korea: {lat}, {lng}")
    return GeocodedAddress(
        address=_text(doc, "address_name") or "",
        road_address=_text(road, "address_name"),
        lat=lat,
        lng=lng,
        region_1depth=_text(region, "region_1depth_name"),
        region_2depth=_text(region, "region_2depth_name"),
        b_code=_text(address, "b_code"),
    )


def _part(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{key} is a {type(value).__name__}")
    return value


def _text(part: dict[str, Any], key: str) -> str | None:
    value = part.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key} is a {type(value).__name__}")
    return value or None


def _coordinate(value: Any) -> float:
    number = float(value)  # Kakao sends strings; a missing one (None) is a TypeError
    if not math.isfinite(number):
        raise ValueError(f"not a coordinate: {value!r}")
    return number


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
            log.warning("kakao_local_unexpected_answer", error=str(exc))
            raise KakaoLocalError(502, "Kakao Local answered in an unexpected format.") from exc

    @staticmethod
    def _error(response: httpx.Response) -> KakaoLocalError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):  # an HTML error page, or JSON of another shape
            body = {}
        kind, message = body.get("errorType"), body.get("message")
        log.warning("kakao_local_error", status=response.status_code, type=kind, message=message)
        if response.status_code == 429:
            return KakaoLocalError(
                503,
                "Kakao Local's quota is used up for now.",
                retry_after=response.headers.get("retry-after") or QUOTA_RETRY_AFTER,
            )
        if response.status_code in (401, 403):
            return KakaoLocalError(502, "Kakao Local refused this service's API key.")
        if response.status_code == 400:
            return KakaoLocalError(400, f"Kakao Local refused the query: {message or kind}.")
        return KakaoLocalError(502, f"Kakao Local failed ({response.status_code}).")
