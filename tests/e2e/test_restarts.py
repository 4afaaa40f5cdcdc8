"""A program of the stack killed with SIGKILL comes back by itself, as a pod's container would:
the gateway answers problem+json meanwhile, and the stack works again without a restart."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from ecosort_devstack.config import find_repo_root
from ecosort_devstack.processes import ProcessRecord, StateFile

if TYPE_CHECKING:
    from tests.conftest import LocalStack

PHOTO = find_repo_root(Path(__file__).parent).parent / "shared/data/waste-images/glass/glass1.jpg"
# A fresh start of an API (its imports) or of the worker (its model) on two busy cores.
BACK_WITHIN_S = 90.0


def _record(stack: LocalStack, name: str) -> ProcessRecord:
    _, records = StateFile(stack.home / "stack.json").read()
    return next(r for r in records if r.name == name)


def _replaced(stack: LocalStack, killed: ProcessRecord) -> ProcessRecord:
    deadline = time.monotonic() + BACK_WITHIN_S
    while time.monotonic() < deadline:
        current = next(
            (r for r in StateFile(stack.home / "stack.json").read()[1] if r.name == killed.name),
            None,
        )
        if current is not None and current.pid != killed.pid:
            return current
        time.sleep(0.2)
    raise AssertionError(f"{killed.name} was not started again:\n" + "\n".join(stack.output))


def test_a_killed_api_comes_back_and_the_gateway_says_problem_json_meanwhile(
    local_stack: LocalStack,
) -> None:
    url = f"{local_stack.gateway_url}/api/v1/recycling/categories"
    killed = _record(local_stack, "recycling")
    os.kill(killed.pid, signal.SIGKILL)
    answers: list[httpx.Response] = []
    deadline = time.monotonic() + BACK_WITHIN_S
    while time.monotonic() < deadline:
        answers.append(httpx.get(url, timeout=10))
        if answers[-1].status_code == 200:
            break
        time.sleep(0.1)
    assert answers[-1].status_code == 200, "recycling never answered again"
    for answer in answers[:-1]:
        assert answer.status_code == 502, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "127.0.0.1:" not in answer.text  # no upstream address
    assert _replaced(local_stack, killed).pid != killed.pid


def test_a_killed_worker_comes_back_and_analyses_complete(local_stack: LocalStack) -> None:
    killed = _record(local_stack, "worker")
    os.kill(killed.pid, signal.SIGKILL)
    _replaced(local_stack, killed)
    with httpx.Client(base_url=local_stack.gateway_url, timeout=30) as http:
        login = http.post(
            "/api/v1/auth/dev/login",
            json={"subject": f"restart-{uuid.uuid4().hex[:8]}", "nickname": "재시작"},
        )
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = http.post(
            "/api/v1/waste/analyses",
            headers=headers,
            files={"image": ("bottle.jpg", PHOTO.read_bytes(), "image/jpeg")},
        )
        assert created.status_code == 202, created.text
        deadline = time.monotonic() + BACK_WITHIN_S
        status = "queued"
        while status not in {"completed", "failed"} and time.monotonic() < deadline:
            time.sleep(0.2)
            status = http.get(created.json()["links"]["self"], headers=headers).json()["status"]
    assert status == "completed"
