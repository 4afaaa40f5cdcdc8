"""The waste service answers health, readiness, metrics and OpenAPI, and errors as problem+json."""

from httpx import AsyncClient


async def test_health_readiness_and_metrics(client: AsyncClient) -> None:
    for path in ("/healthz", "/api/v1/waste/healthz"):
        assert (await client.get(path)).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["dependencies"] == {"database": True, "redis": True}
    metrics = await client.get("/metrics")
    assert "http_request_duration_seconds" in metrics.text


async def test_openapi_document_lists_the_api(client: AsyncClient) -> None:
    document = (await client.get("/api/v1/waste/openapi.json")).json()
    assert document["info"]["title"] == "EcoSort waste"


async def test_unknown_route_is_problem_json(client: AsyncClient) -> None:
    response = await client.get("/api/v1/waste/no-such-thing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404
