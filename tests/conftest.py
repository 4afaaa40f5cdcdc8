"""Cross-service tests: one real local stack (`ecosort-stack up`) for the whole session.

`gateway_url` is the fixture to use: every service behind the generated nginx gateway, with
migrations applied, on the machine's PostgreSQL (ECOSORT_TEST_POSTGRES_URL, set by the root
conftest.py) and the stack's own embedded Valkey, so that each service runs as its own Redis
ACL user as in `make run` (redis_acl.py): a rule that does not fit a service's real keys fails
these tests. Each run gets its own databases (`e2e_<run>_<service>`), its own ports and its own
state folder, so it never meets a developer's `make run` or another test run. Teardown runs
`ecosort-stack down` and fails the session if any process or port of the stack is left.

With pytest-xdist every test here is put in one xdist group, so with `--dist loadgroup` one
worker runs them all against one stack.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ecosort_devstack.config import SERVICE_PORTS, StackConfig, find_repo_root
from ecosort_devstack.postgres import drop_databases, parse_url
from ecosort_devstack.processes import ProcessRecord, StateFile, group_members
from ecosort_devstack.readiness import free_port_offset, port_is_listening
from ecosort_devstack.testservers import free_port

REPO = find_repo_root(Path(__file__).parent)
STACK_COMMAND = Path(sys.executable).parent / "ecosort-stack"
UP_TIMEOUT_S = float(os.environ.get("ECOSORT_E2E_UP_TIMEOUT", "180"))
E2E_GROUP = "ecosort-local-stack"


@pytest.hookimpl(tryfirst=True)  # before xdist reads the marker to group the tests
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.xdist_group(E2E_GROUP))


@dataclass
class LocalStack:
    gateway_url: str
    service_urls: dict[str, str]
    home: Path
    env: dict[str, str]
    records: list[ProcessRecord] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    def exec(self, service: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """`ecosort-stack exec <service> -- argv`: a one-off command with its local settings."""
        return subprocess.run(
            [str(STACK_COMMAND), "exec", service, "--", *argv],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _read_lines(process: subprocess.Popen[str], sink: list[str], ready: threading.Event) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        sink.append(line.rstrip("\n"))
        if line.startswith("EcoSort is up"):
            ready.set()
    ready.set()  # the launcher exited: wake the waiter, which then looks at the exit code


def _stop(stack: LocalStack, launcher: subprocess.Popen[str]) -> list[str]:
    """`ecosort-stack down`, then what is still there (processes by PID, ports)."""
    subprocess.run([str(STACK_COMMAND), "down"], env=stack.env, cwd=REPO, timeout=120, check=False)
    try:
        launcher.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
    problems = [f"{r.name} (pid {r.pid}) still runs" for r in stack.records if group_members(r.pid)]
    problems += [
        f"port {r.port} ({r.name}) still listens"
        for r in stack.records
        if r.port is not None and port_is_listening(r.port)
    ]
    return problems


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    run = secrets.token_hex(4)
    # Not under tmp_path: pytest keeps that 0700, and nginx's workers run as `nobody` there.
    home = Path(tempfile.mkdtemp(prefix="ecosort-e2e-stack-"))
    home.chmod(0o755)
    # Below 17000: tools/devstack's start-up tests take the offsets above, perhaps at the same
    # time on another xdist worker.
    offset = free_port_offset(10000, 17000)
    prefix = f"e2e_{run}_"
    server_url = os.environ["ECOSORT_TEST_POSTGRES_URL"]
    # No REDIS_URL: the launcher starts its Valkey with the ACL users. The Celery key prefix
    # stays, so the ACL's grant of prefixed broker keys is exercised too.
    inherited = {name: value for name, value in os.environ.items() if name != "REDIS_URL"}
    env = {
        **inherited,
        "ECOSORT_STACK_HOME": str(home),
        "ECOSORT_STACK_PORT_OFFSET": str(offset),
        "ECOSORT_STACK_DB_PREFIX": prefix,
        "ECOSORT_GATEWAY_RATE_LIMIT": "off",  # tests call faster than limit-rps allows
        "DATABASE_URL": server_url,
        "ECOSORT_STACK_VALKEY_PORT": str(free_port()),
        "CELERY_KEY_PREFIX": f"e2e-{run}:",
        "PYTHONUNBUFFERED": "1",
    }
    config = StackConfig.from_env(REPO, env)
    stack = LocalStack(
        gateway_url=f"http://127.0.0.1:{config.gateway_port}",
        service_urls={s: f"http://127.0.0.1:{config.service_port(s)}" for s in SERVICE_PORTS},
        home=home,
        env=env,
    )
    launcher = subprocess.Popen(
        [str(STACK_COMMAND), "up"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # our Ctrl-C must not reach it before teardown does
    )
    ready = threading.Event()
    threading.Thread(target=_read_lines, args=(launcher, stack.output, ready), daemon=True).start()
    started = time.monotonic()
    try:
        if not ready.wait(UP_TIMEOUT_S) or launcher.poll() is not None:
            log = "\n".join(stack.output)
            pytest.fail(f"`ecosort-stack up` did not come up in {UP_TIMEOUT_S:.0f} s:\n{log}")
        _, stack.records = StateFile(config.state_file).read()
        print(f"\nlocal stack up in {time.monotonic() - started:.1f} s at {stack.gateway_url}")
        yield stack
    finally:
        stopping = time.monotonic()
        problems = _stop(stack, launcher)
        stopped = time.monotonic()
        drop_databases(
            parse_url(server_url, "ECOSORT_TEST_POSTGRES_URL"),
            [config.database_name(s) for s in SERVICE_PORTS],
        )
    print(
        f"\nlocal stack: down in {stopped - stopping:.1f} s, "
        f"databases dropped in {time.monotonic() - stopped:.1f} s"
    )
    shutil.rmtree(home, ignore_errors=True)
    assert not problems, "after `ecosort-stack down`: " + "; ".join(problems)


@pytest.fixture(scope="session")
def gateway_url(local_stack: LocalStack) -> str:
    """http://127.0.0.1:<port> of the running stack's gateway (routes as in ingress/)."""
    return local_stack.gateway_url
