"""The local gateway's routes are exactly the Ingress paths, each to the right local port.

The expected side is read straight from ingress/*.yaml with PyYAML, and the generated side is
read back out of the nginx.conf text, so neither depends on the code under test.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from ecosort_devstack.config import SERVICE_PORTS, find_repo_root
from ecosort_devstack.errors import StackError
from ecosort_devstack.ingress import IngressRoute, load_routes
from ecosort_devstack.nginx_conf import prepare_work_dir, render_nginx_conf, routed_paths

REPO = find_repo_root(Path(__file__).parent)


def ingress_backends() -> dict[str, str]:
    """path → backend service name, from every Ingress object in ingress/."""
    backends = {}
    for source in sorted((REPO / "ingress").glob("*.yaml")):
        for document in yaml.safe_load_all(source.read_text()):
            if not document or document.get("kind") != "Ingress":
                continue
            for rule in document["spec"]["rules"]:
                for entry in rule["http"]["paths"]:
                    backends[entry["path"]] = entry["backend"]["service"]["name"]
    return backends


def generated_conf(tmp_path: Path, rate_limit: bool = True) -> str:
    return render_nginx_conf(
        load_routes(REPO / "ingress"),
        SERVICE_PORTS,
        listen_port=8080,
        work_dir=tmp_path,
        rate_limit=rate_limit,
    )


def location_blocks(conf: str) -> dict[str, str]:
    """location matcher → its body, for the API locations (not `/` nor named ones)."""
    blocks = {}
    for match in re.finditer(r"location\s+(=\s+)?(/\S+)\s*\{(.*?)\n\s*\}", conf, re.DOTALL):
        blocks[("=" if match.group(1) else "") + match.group(2)] = match.group(3)
    return blocks


def upstream_ports(conf: str) -> dict[str, int]:
    return {
        name: int(port)
        for name, port in re.findall(r"upstream (\w+) \{\s*server 127\.0\.0\.1:(\d+)", conf)
    }


def test_generated_locations_equal_the_ingress_paths(tmp_path: Path) -> None:
    expected = ingress_backends()
    assert expected, "no Ingress paths found in ingress/"
    assert routed_paths(generated_conf(tmp_path)) == set(expected)


def test_each_location_proxies_to_its_services_local_port(tmp_path: Path) -> None:
    conf = generated_conf(tmp_path)
    upstreams = upstream_ports(conf)
    blocks = location_blocks(conf)
    for path, service in ingress_backends().items():
        for matcher in (f"={path}", f"{path}/"):
            target = re.search(r"proxy_pass http://(\w+);", blocks[matcher])
            assert target is not None, matcher
            assert upstreams[target.group(1)] == SERVICE_PORTS[service], matcher


def test_prefix_paths_do_not_match_longer_names(tmp_path: Path) -> None:
    # ingress-nginx's Prefix semantics: /api/v1/auth matches /api/v1/auth/x, not /api/v1/authx.
    blocks = location_blocks(generated_conf(tmp_path))
    assert "=/api/v1/auth" in blocks and "/api/v1/auth/" in blocks
    assert "/api/v1/auth" not in blocks


def test_annotations_become_directives(tmp_path: Path) -> None:
    waste = location_blocks(generated_conf(tmp_path))["/api/v1/waste/"]
    assert "client_max_body_size 12m;" in waste
    assert "proxy_buffering off;" in waste
    assert "proxy_read_timeout 120s;" in waste
    assert re.search(r"limit_req zone=waste_rps burst=100 nodelay;", waste)
    auth = location_blocks(generated_conf(tmp_path))["/api/v1/auth/"]
    assert "client_max_body_size 64k;" in auth


def test_every_annotation_of_the_ingresses_is_known_locally(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Translated, or covered by the gateway itself (its own problem+json errors): an unknown
    one is only a warning, which nobody reads at every start."""
    generated_conf(tmp_path)
    assert "not translated locally" not in caplog.text


def test_rate_limits_can_be_switched_off(tmp_path: Path) -> None:
    assert "limit_req" not in generated_conf(tmp_path, rate_limit=False).replace(
        "limit_req_status", ""
    )


def test_nginx_accepts_the_generated_config(open_tmp_path: Path, nginx: Path) -> None:
    tmp_path = open_tmp_path
    prepare_work_dir(tmp_path)
    (tmp_path / "nginx.conf").write_text(generated_conf(tmp_path))
    result = subprocess.run(
        [str(nginx), "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_a_backend_the_stack_does_not_run_is_refused(tmp_path: Path) -> None:
    route = IngressRoute(
        "shop", tmp_path / "shop.yaml", "/api/v1/shop", "Prefix", "shop", "http", {}
    )
    with pytest.raises(StackError, match="service 'shop'"):
        render_nginx_conf([route], SERVICE_PORTS, listen_port=8080, work_dir=tmp_path)


def test_the_same_path_twice_is_refused(tmp_path: Path) -> None:
    document = (REPO / "ingress" / "auth.yaml").read_text()
    (tmp_path / "a.yaml").write_text(document)
    (tmp_path / "b.yaml").write_text(
        document.replace("name: auth\n  namespace", "name: b\n  namespace")
    )
    with pytest.raises(StackError, match="declared twice"):
        load_routes(tmp_path)
