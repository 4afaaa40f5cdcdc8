"""The errors the cluster's ingress controller makes itself, answered as problem+json.

ingress-nginx writes its own errors as HTML: a body over the route's `proxy-body-size`, a pod
that refused the connection or did not answer in time, a client over `limit-rps`. Each Ingress
(ingress/*.yaml) names its own Service as `default-backend` for INGRESS_ERROR_CODES
(`custom-http-errors`), with `disable-proxy-intercept-errors` so that the services' own answers
with those codes pass untouched. For such an error ingress-nginx asks that Service for `/`, the
code in `X-Code`, the client's URI in `X-Original-URI` and the request's id in `X-Request-ID`.
Not the rate limit's 429 and 503: each would cost a pod a request, and `limit-rps` is there to
keep a flood off the pods. Nor a Service with no ready pod, which cannot answer for itself. Those
stay nginx's own pages. The local gateway (tools/devstack) writes all of them as problem+json.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ecosort_common.errors import problem_response

DETAILS = {
    413: "The request body is over this route's limit.",
    502: "The service could not be reached.",
    504: "The service did not answer in time.",
}
INGRESS_ERROR_CODES = tuple(DETAILS)
# Worth trying again soon: another pod may answer, or this one once it has restarted.
RETRY_AFTER_SECONDS = {502: 1}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def ingress_error(request: Request) -> JSONResponse:
    code = request.headers.get("x-code", "")
    status = int(code) if code.isdecimal() else 0
    if status not in DETAILS:  # not asked by the ingress controller: nothing lives at /
        return problem_response(request, 404, detail="No such route.")
    retry_after = RETRY_AFTER_SECONDS.get(status)
    return problem_response(
        request,
        status,
        detail=DETAILS[status],
        headers={"Retry-After": str(retry_after)} if retry_after else None,
        instance=urlsplit(request.headers.get("x-original-uri", "/")).path,
    )


def ingress_errors_router() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/", ingress_error, methods=METHODS, include_in_schema=False)
    return router
