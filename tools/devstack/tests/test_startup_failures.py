"""A start-up failure names the setting or port at fault and leaves nothing running."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecosort_devstack.cli import main
from ecosort_devstack.config import GATEWAY_PORT, StackConfig
from ecosort_devstack.env import missing_data, service_env
from ecosort_devstack.processes import StateFile, launcher_record
from ecosort_devstack.readiness import free_port_offset, port_is_listening

# Away from a stack someone runs on 8080, and above the offsets of the live stack that the
# end-to-end tests (tests/conftest.py) may be starting at the same time on another xdist worker.
OFFSET = free_port_offset(17000, 24000)


@pytest.fixture
def stack_env(open_tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    tmp_path = open_tmp_path
    monkeypatch.setenv("ECOSORT_STACK_HOME", str(tmp_path))
    monkeypatch.setenv("ECOSORT_STACK_PORT_OFFSET", str(OFFSET))
    monkeypatch.setenv("DATABASE_URL", os.environ["ECOSORT_TEST_POSTGRES_URL"])
    monkeypatch.setenv("REDIS_URL", os.environ["ECOSORT_TEST_REDIS_URL"])
    yield tmp_path


def assert_nothing_left(home: Path) -> None:
    assert not (home / "stack.json").exists()
    assert not port_is_listening(GATEWAY_PORT + OFFSET)


def test_a_busy_port_is_named(stack_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    waste_port = 8103 + OFFSET
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", waste_port))
        squatter.listen()
        assert main(["up"]) == 1
    error = capsys.readouterr().err
    assert f"port {waste_port} (waste) is already in use" in error
    assert "ECOSORT_STACK_PORT_OFFSET" in error  # how to move the stack out of the way
    assert_nothing_left(stack_env)


def test_a_full_disk_is_an_error_not_a_traceback(
    stack_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ecosort_devstack.stack import Stack

    def full(self: Stack) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Stack, "_write_gateway_conf", full)
    assert main(["up"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("ecosort-stack: error: [Errno 28] No space left on device")
    assert f"the disk holding {stack_env} is full" in error
    assert_nothing_left(stack_env)


def test_an_unreachable_database_url_is_named(
    stack_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://postgres:secret@127.0.0.1:1/postgres")
    assert main(["up"]) == 1
    error = capsys.readouterr().err
    assert "DATABASE_URL: cannot connect to postgresql+psycopg://postgres:***@127.0.0.1:1" in error
    assert "secret" not in error
    assert_nothing_left(stack_env)


def test_an_unreachable_redis_url_is_named(
    stack_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["up"]) == 1
    assert "REDIS_URL: cannot connect to redis://127.0.0.1:1/0" in capsys.readouterr().err
    assert_nothing_left(stack_env)


def test_every_service_gets_the_local_settings(tmp_path: Path) -> None:
    config = StackConfig(repo=tmp_path, home=tmp_path / ".local", port_offset=100)
    env = service_env(
        config, "waste", database_url="postgresql+psycopg://db", redis_url="redis://r"
    )
    assert env["DATABASE_URL"] == "postgresql+psycopg://db"
    assert env["REDIS_URL"] == "redis://r"
    assert env["JWKS_URL"] == "http://127.0.0.1:8201/api/v1/auth/jwks.json"
    assert env["JWT_ISSUER"] == "http://127.0.0.1:8180"
    assert env["JWT_AUDIENCE"] == "ecosort"
    assert env["AUTH_DEV_LOGIN_ENABLED"] == "true"
    assert env["RECYCLING_URL"] == "http://127.0.0.1:8204"
    assert env["DATA_DIR"] == str(tmp_path / ".local" / "data" / "waste")
    assert env["LOG_LEVEL"] == "info"


def test_generated_secrets_are_kept_and_the_environment_wins(tmp_path: Path) -> None:
    config = StackConfig(repo=tmp_path, home=tmp_path / ".local")
    first = service_env(config, "auth", database_url="d", redis_url="r", base={})
    again = service_env(config, "auth", database_url="d", redis_url="r", base={})
    assert len(first["AUTH_KEY_ENCRYPTION_KEY"]) >= 32
    assert again["AUTH_KEY_ENCRYPTION_KEY"] == first["AUTH_KEY_ENCRYPTION_KEY"]  # survives
    assert (tmp_path / ".local" / "secrets.json").stat().st_mode & 0o077 == 0
    mine = service_env(
        config, "auth", database_url="d", redis_url="r", base={"AUTH_KEY_ENCRYPTION_KEY": "x"}
    )
    assert mine["AUTH_KEY_ENCRYPTION_KEY"] == "x"


def test_a_second_stack_on_the_same_home_is_refused(
    stack_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A live launcher in the state file: this test process plays it.
    StateFile(stack_env / "stack.json").write(launcher_record(), [])
    assert main(["up"]) == 1
    assert f"a stack is already running from {stack_env}" in capsys.readouterr().err
    assert (stack_env / "stack.json").exists()  # the running stack's file is left alone


def test_a_clone_without_the_shared_data_is_told_so(tmp_path: Path) -> None:
    (tmp_path / "main").mkdir()
    config = StackConfig(repo=tmp_path / "main", home=tmp_path / "main" / ".local")
    (notes,) = missing_data(config, environ={})
    assert str(tmp_path / "shared" / "data" / "collection-points") in notes
    assert "locations starts without collection points" in notes
    (tmp_path / "shared" / "data" / "collection-points").mkdir(parents=True)
    assert missing_data(config, environ={}) == []
