"""The gateway waits long only where waste's event stream needs it: a hung waste pod's uploads,
polls and listings get the controller's 504 within minutes, not after an hour."""

from __future__ import annotations

import importlib
import re
import uuid
from typing import Any

from starlette.routing import Match

from ecosort_k8scheck import cel
from ecosort_k8scheck.charts import Rendered, of_kind
from ecosort_k8scheck.validate import validate_object
from ecosort_waste.api.routes.events import stream_events
from ecosort_waste.config import Settings

PREFIX = "nginx.ingress.kubernetes.io/"
CONTROLLER_DEFAULT_READ_TIMEOUT = 60  # ingress-nginx's proxy-read-timeout where none is set
STREAM = "/api/v1/waste/analyses/{id}/events"
# Answered by the rest of waste: must not match the stream's rule.
NOT_STREAM = [
    "/api/v1/waste/analyses",
    "/api/v1/waste/analyses/{id}",
    "/api/v1/waste/analyses/{id}/feedback",
    "/api/v1/waste/analyses/{id}/events/more",
    "/api/v1/waste/uploads",
]


def nginx_annotations(ingress: dict[str, Any]) -> dict[str, str]:
    return {
        key.removeprefix(PREFIX): value
        for key, value in ingress["metadata"].get("annotations", {}).items()
        if key.startswith(PREFIX)
    }


def heartbeats(rendered: Rendered) -> set[int]:
    """SSE_HEARTBEAT_SECONDS of the rendered waste chart (dev and prod), else the default."""
    default = Settings.model_fields["sse_heartbeat_seconds"].default
    return {
        int(configmap["data"].get("SSE_HEARTBEAT_SECONDS", default))
        for env in ("dev", "prod")
        for configmap in of_kind(rendered[("waste", env)], "ConfigMap")
    }


def test_wastes_ingress_outlasts_missed_heartbeats_but_not_by_an_hour(
    ingresses: list[dict[str, Any]], rendered: Rendered
) -> None:
    (waste,) = [i for i in ingresses if i["metadata"]["name"] == "waste"]
    annotations = nginx_annotations(waste)
    assert annotations["proxy-buffering"] == "off"  # each event sent as it is written
    read_timeout = int(annotations["proxy-read-timeout"])
    # nginx counts it between two reads: a few lost heartbeats must not cut a live stream ...
    assert heartbeats(rendered) and all(read_timeout >= 4 * beat for beat in heartbeats(rendered))
    # ... and it is minutes, not the hour that held a hung pod's uploads and polls.
    assert read_timeout <= 300
    for ingress in ingresses:
        if ingress is not waste:
            seconds = int(nginx_annotations(ingress).get("proxy-read-timeout", 60))
            assert seconds <= CONTROLLER_DEFAULT_READ_TIMEOUT, ingress["metadata"]["name"]


def waste_route(gateway_api_docs: list[dict[str, Any]]) -> dict[str, Any]:
    (route,) = [
        d
        for d in gateway_api_docs
        if d["kind"] == "HTTPRoute" and d["metadata"]["namespace"] == "ecosort-waste"
    ]
    return route


def test_the_http_route_gives_only_the_stream_its_long_total_timeout(
    gateway_api_docs: list[dict[str, Any]],
) -> None:
    route = waste_route(gateway_api_docs)
    # What the cluster's API server would check: the CRD's schema and CEL rules
    # (RegularExpression allowed on path, backendRequest <= request).
    assert validate_object(route, "waste HTTPRoute", "1.34") == []
    report = cel.CelReport()
    cel.check_rules(route, "waste HTTPRoute", report)
    assert report.findings == [] and report.evaluated > 0
    rules = route["spec"]["rules"]
    streams = [rule for rule in rules if rule["matches"][0]["path"]["type"] == "RegularExpression"]
    assert len(streams) == 1 and rules[0] is streams[0]  # listed before the prefix
    # A total, not the gap between reads: a stream is cut at it (and resumes).
    assert streams[0]["timeouts"] == {"request": "3600s"}
    for other in (d for d in gateway_api_docs if d["kind"] == "HTTPRoute"):
        for rule in other["spec"]["rules"]:
            if rule is not streams[0]:
                assert "timeouts" not in rule, other["metadata"]["name"]


def test_the_stream_rule_matches_the_apps_event_stream_and_nothing_else(
    gateway_api_docs: list[dict[str, Any]],
) -> None:
    (match,) = waste_route(gateway_api_docs)["spec"]["rules"][0]["matches"]
    pattern = match["path"]["value"]
    app = importlib.import_module("ecosort_waste.main").app
    for template in [STREAM, *NOT_STREAM]:
        analysis = uuid.uuid4()
        for url in (template.format(id=analysis), template.format(id=str(analysis).upper())):
            scope = {"type": "http", "method": "GET", "path": url, "root_path": "", "headers": []}
            served = [r for r in app.router.routes if r.matches(scope)[0] is Match.FULL]
            is_stream = bool(served) and getattr(served[0], "endpoint", None) is stream_events
            # RE2 as Envoy applies it (the whole path), nginx from the start.
            assert is_stream == bool(re.fullmatch(pattern, url)) == bool(re.match(pattern, url))
