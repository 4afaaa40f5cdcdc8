"""Generates the gateway's nginx.conf from the Ingress routes.

The translation follows what the ingress-nginx controller does with the same objects, so the
local gateway behaves like the cluster's: Prefix paths match the path itself and everything
below it, annotations become the matching directives, and errors nginx makes itself come back
as RFC 9457 problem+json, never as nginx's HTML pages or with internal addresses.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from ecosort_devstack.errors import StackError
from ecosort_devstack.ingress import IngressRoute

_log = logging.getLogger(__name__)

# ingress-nginx: burst = limit-rps x limit-burst-multiplier (default 5), served with nodelay.
DEFAULT_BURST_MULTIPLIER = 5

# Errors nginx itself can produce in front of the services, with their RFC 9110 titles.
GATEWAY_ERRORS: dict[int, tuple[str, str]] = {
    400: ("Bad Request", "The gateway could not read this request."),
    404: ("Not Found", "No route of the API matches this path."),
    405: ("Method Not Allowed", "This method is not allowed here."),
    408: ("Request Timeout", "The request was not received in time."),
    413: ("Content Too Large", "The request body is larger than this route accepts."),
    414: ("URI Too Long", "The request URI is too long."),
    429: ("Too Many Requests", "Too many requests from this client; slow down and retry."),
    500: ("Internal Server Error", "The gateway failed to handle this request."),
    505: ("HTTP Version Not Supported", "The gateway speaks HTTP/1.0 and HTTP/1.1."),
    502: ("Bad Gateway", "The $ecosort_service service is not reachable right now."),
    503: ("Service Unavailable", "The $ecosort_service service is unavailable right now."),
    504: ("Gateway Timeout", "The $ecosort_service service did not answer in time."),
}


def _seconds(value: str) -> str:
    return f"{int(value)}s" if value.isdigit() else value


def _on_off(value: str) -> str:
    if value.lower() not in {"on", "off"}:
        raise ValueError(f"expected on or off, got {value!r}")
    return value.lower()


# Annotation (without its prefix) → function turning its value into an nginx directive.
_TRANSLATIONS = {
    "proxy-body-size": lambda v: f"client_max_body_size {v};",
    "proxy-buffering": lambda v: f"proxy_buffering {_on_off(v)};",
    "proxy-request-buffering": lambda v: f"proxy_request_buffering {_on_off(v)};",
    "proxy-read-timeout": lambda v: f"proxy_read_timeout {_seconds(v)};",
    "proxy-send-timeout": lambda v: f"proxy_send_timeout {_seconds(v)};",
    "proxy-connect-timeout": lambda v: f"proxy_connect_timeout {_seconds(v)};",
    "proxy-http-version": lambda v: f"proxy_http_version {v};",
}
# Handled separately (they need a zone at http level).
_RATE_LIMIT_ANNOTATIONS = {"limit-rps", "limit-rpm", "limit-burst-multiplier", "limit-connections"}
# The cluster's problem+json pages for the controller's own errors: this gateway writes its own.
_OWN_ERROR_PAGES = {"custom-http-errors", "default-backend", "disable-proxy-intercept-errors"}


def translate_annotations(route: IngressRoute) -> list[str]:
    """The location-level directives for a route's annotations (rate limits excluded)."""
    directives = []
    for name, value in sorted(route.annotations.items()):
        if name in _RATE_LIMIT_ANNOTATIONS | _OWN_ERROR_PAGES:
            continue
        translate = _TRANSLATIONS.get(name)
        if translate is None:
            # Not fatal: the cluster may use an annotation the local gateway has no use for.
            _log.warning("Ingress %s: annotation %s is not translated locally", route.ingress, name)
            continue
        try:
            directives.append(translate(value))
        except ValueError as exc:
            raise StackError(f"{route.source}: annotation {name}: {exc}") from exc
    return directives


def _zone_name(route: IngressRoute, kind: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{route.ingress}_{kind}")


def rate_limit_zones(route: IngressRoute) -> list[str]:
    """http-level zones for a route's limit-rps / limit-rpm / limit-connections."""
    zones = []
    rps = route.annotations.get("limit-rps")
    rpm = route.annotations.get("limit-rpm")
    if rps:
        zones.append(
            f"limit_req_zone $binary_remote_addr zone={_zone_name(route, 'rps')}:5m rate={rps}r/s;"
        )
    if rpm:
        zones.append(
            f"limit_req_zone $binary_remote_addr zone={_zone_name(route, 'rpm')}:5m rate={rpm}r/m;"
        )
    if route.annotations.get("limit-connections"):
        zones.append(f"limit_conn_zone $binary_remote_addr zone={_zone_name(route, 'conn')}:5m;")
    return zones


def rate_limit_directives(route: IngressRoute) -> list[str]:
    multiplier = int(route.annotations.get("limit-burst-multiplier", DEFAULT_BURST_MULTIPLIER))
    directives = []
    for kind in ("rps", "rpm"):
        rate = route.annotations.get(f"limit-{kind}")
        if rate:
            zone = _zone_name(route, kind)
            directives.append(f"limit_req zone={zone} burst={int(rate) * multiplier} nodelay;")
    connections = route.annotations.get("limit-connections")
    if connections:
        directives.append(f"limit_conn {_zone_name(route, 'conn')} {int(connections)};")
    return directives


def location_matchers(route: IngressRoute) -> list[str]:
    """nginx location matchers for a path, as ingress-nginx writes them.

    Prefix `/api/v1/auth` matches `/api/v1/auth` and `/api/v1/auth/...` but not
    `/api/v1/authx`; Exact matches only the path itself.
    """
    if route.path_type == "Exact":
        return [f"= {route.path}"]
    if route.path.endswith("/"):
        return [route.path]
    return [f"= {route.path}", f"{route.path}/"]


TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def prepare_work_dir(work_dir: Path) -> str | None:
    """Creates nginx's temp folders; returns the `user` directive's value when we are root.

    As root, nginx's workers drop to an unprivileged user (the one PostgreSQL runs as) and
    must be able to write request bodies larger than their memory buffer to the temp folders.
    """
    from ecosort_devstack import postgres  # the unprivileged user is chosen there

    user = postgres.server_user()
    for sub in TEMP_DIRS:
        (work_dir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        if user is not None:
            shutil.chown(work_dir / "tmp" / sub, user)
    if user is None:
        return None
    postgres.make_traversable(work_dir / "tmp", user)
    return f"{user} {postgres.primary_group_name(user)}"


# Statuses nginx may answer before it has a URI (a NUL byte in the path, a request line over
# its buffers, CONNECT): error_page sends them to internal URI locations, since it can only jump
# to a named location once the URI is parsed (before, they ended in nginx's HTML 500 page). The
# others go to named locations, which keep what the route's location set ($ecosort_service, in
# 502-504), where an internal redirect to a URI would run the server's `set` again.
_BEFORE_ROUTING = frozenset({400, 405, 408, 414, 505})
# nginx's own codes for requests it refuses as 400 ("Request Header Or Cookie Too Large" is
# 494): error_page matches these, not the 400 the client gets.
_ANSWERED_AS = {494: 400}
PROBLEM_PREFIX = "/.ecosort-problem/"
# The gateway's own rate limit (ingress-nginx's limit-rps) counts in one-second windows.
_EXTRA_HEADERS = {429: {"Retry-After": "1"}}


def _problem_target(status: int) -> str:
    return f"{PROBLEM_PREFIX}{status}" if status in _BEFORE_ROUTING else f"@problem_{status}"


def _problem_location(status: int) -> str:
    title, detail = GATEWAY_ERRORS[status]
    body = (
        f'{{"type":"about:blank","title":"{title}","status":{status},'
        f'"detail":"{detail}","request_id":"$ecosort_request_id"}}'
    )
    matcher = (
        f"= {_problem_target(status)}" if status in _BEFORE_ROUTING else _problem_target(status)
    )
    lines = [
        f"location {matcher} {{",
        *(["    internal;"] if status in _BEFORE_ROUTING else []),
        "    default_type application/problem+json;",
        "    add_header X-Request-ID $ecosort_request_id always;",
        "    add_header Cache-Control no-store always;",
        *(
            f"    add_header {name} {value} always;"
            for name, value in _EXTRA_HEADERS.get(status, {}).items()
        ),
        f"    return {status} '{body}';",
        "}",
    ]
    return "".join(f"        {line}\n" for line in lines)


def render_nginx_conf(
    routes: list[IngressRoute],
    upstream_ports: Mapping[str, int],
    *,
    listen_port: int,
    work_dir: Path,
    rate_limit: bool = True,
    run_as_user: str | None = None,
) -> str:
    """The whole nginx.conf: one upstream per backend service and one location per path.

    `upstream_ports` maps the Ingress backend service names to the local ports of the services.
    """
    for route in routes:
        if route.service not in upstream_ports:
            raise StackError(
                f"{route.source}: Ingress {route.ingress!r} routes {route.path} to service "
                f"{route.service!r}, which the local stack does not run "
                f"(known: {', '.join(sorted(upstream_ports))})"
            )
    temp = work_dir / "tmp"
    lines = [
        "# Generated by ecosort-stack from ingress/*.yaml; edits are overwritten at every start.",
        f"user {run_as_user};" if run_as_user else "",
        "worker_processes 1;",
        "daemon off;",
        f"pid {work_dir / 'nginx.pid'};",
        "error_log stderr warn;",
        "events { worker_connections 4096; }",
        "http {",
        "    server_tokens off;",
        '    log_format ecosort escape=json \'{"time":"$time_iso8601","request_id":'
        '"$ecosort_request_id","remote":"$remote_addr","method":"$request_method",'
        '"uri":"$request_uri","status":$status,"bytes":$body_bytes_sent,'
        '"duration":$request_time,"upstream":"$ecosort_service"}\';',
        f"    access_log {work_dir / 'access.log'} ecosort;",
        *(f"    {sub}_temp_path {temp / sub};" for sub in TEMP_DIRS),
        "    # ingress-nginx's defaults for what the annotations do not set.",
        "    client_max_body_size 1m;",
        "    proxy_read_timeout 60s;",
        "    proxy_send_timeout 60s;",
        "    proxy_connect_timeout 5s;",
        "    limit_req_status 429;",
        "    limit_conn_status 429;",
        "    # A client's X-Request-ID is kept only if it is a plain token: it is echoed in JSON.",
        "    map $http_x_request_id $ecosort_request_id {",
        '        "~^[A-Za-z0-9._:-]{1,128}$" $http_x_request_id;',
        "        default $request_id;",
        "    }",
    ]
    if rate_limit:
        for route in routes:
            lines.extend(f"    {zone}" for zone in rate_limit_zones(route))
    for service in sorted({route.service for route in routes}):
        lines += [
            f"    upstream {service} {{",
            f"        server 127.0.0.1:{upstream_ports[service]} max_fails=0;",
            "        keepalive 32;",
            "    }",
        ]
    lines += [
        "    server {",
        f"        listen 127.0.0.1:{listen_port};",
        "        set $ecosort_service gateway;",
        # HTTP/1.1 with an empty Connection header keeps upstream connections alive and lets
        # Server-Sent Events stream; the services may still set X-Accel-Buffering: no.
        "        proxy_http_version 1.1;",
        '        proxy_set_header Connection "";',
        "        proxy_set_header Host $host;",
        "        proxy_set_header X-Request-ID $ecosort_request_id;",
        "        proxy_set_header X-Real-IP $remote_addr;",
        # Replaced, not appended to, as ingress-nginx does (use-forwarded-headers off): the
        # services trust this header from the gateway, and take the client's own entries for
        # its address, the key of auth's per-IP limits, if the gateway passes them on.
        "        proxy_set_header X-Forwarded-For $remote_addr;",
        "        proxy_set_header X-Forwarded-Proto $scheme;",
        "        proxy_set_header X-Forwarded-Host $host;",
        "        proxy_set_header X-Forwarded-Port $server_port;",
        "        proxy_buffering on;",
    ]
    lines += [
        f"        error_page {status} {_problem_target(status)};" for status in GATEWAY_ERRORS
    ]
    lines += [
        f"        error_page {internal} ={status} {_problem_target(status)};"
        for internal, status in _ANSWERED_AS.items()
    ]
    for route in routes:
        body = [f"set $ecosort_service {route.service};", *translate_annotations(route)]
        if rate_limit:
            body += rate_limit_directives(route)
        body.append(f"proxy_pass http://{route.service};")
        for matcher in location_matchers(route):
            lines.append(f"        location {matcher} {{")
            lines += [f"            {directive}" for directive in body]
            lines.append("        }")
    if not any(route.path == "/" for route in routes):
        lines.append("        location / { return 404; }")
    text = "\n".join(line for line in lines if line) + "\n"
    text += "".join(_problem_location(status) for status in GATEWAY_ERRORS)
    return text + "    }\n}\n"


_LOCATION = re.compile(r"^\s*location\s+(=\s+)?(/\S*)\s*\{", re.MULTILINE)


def routed_paths(nginx_conf: str) -> set[str]:
    """The API paths a generated config routes (its catch-all 404 and error pages excluded).

    `location = /p` and `location /p/` are one Prefix path `/p`.
    """
    paths = set()
    for match in _LOCATION.finditer(nginx_conf):
        path = match.group(2)
        if path == "/" or path.startswith(PROBLEM_PREFIX):
            continue
        paths.add(path.rstrip("/") if not match.group(1) else path)
    return paths
