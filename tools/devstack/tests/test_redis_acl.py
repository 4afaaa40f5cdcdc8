"""The Redis ACL users of redis_acl.py, loaded into a real Valkey (the embedded binary, on a free
port): each service does what its code does in Redis, through that code (ecosort_common's
revocation, subscription, rate limits, outbox relay and event consumer; waste's progress
scripts, leases and Celery broker; recycling's model-token budget), and what it must not do is
refused with NOPERM.

The whole stack runs with the same rules in tests/e2e; these tests say which rule failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import yaml
from kombu.message import Message
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, ResponseError
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_common.aio import cancel_and_wait
from ecosort_common.db import create_engine, create_sessionmaker
from ecosort_common.events import Event, EventConsumer, Handler, processed_events_table
from ecosort_common.outbox import OutboxRelay, add_event, outbox_table
from ecosort_common.ratelimit import RateLimiter
from ecosort_common.redis import create_redis
from ecosort_common.revocation import RevocationWatcher, revoke_sessions
from ecosort_common.subscription import Subscription
from ecosort_common.testing import temporary_database
from ecosort_devstack import redis_acl
from ecosort_devstack.config import StackConfig, find_repo_root
from ecosort_devstack.env import REDIS_PASSWORDS, redis_passwords, service_env
from ecosort_devstack.readiness import wait_until
from ecosort_devstack.redis_acl import KEDA_USER, SERVICES, USERS, render_acl_file
from ecosort_devstack.stack import redis_url
from ecosort_devstack.testservers import free_port
from ecosort_devstack.valkey import EmbeddedValkey, embedded_url, ping

REPO = find_repo_root(Path(__file__).parent)
OTHERS_THAN_AUTH = [service for service in SERVICES if service != "auth"]
ADMIN = "test-admin"


@dataclass(frozen=True)
class AclServer:
    port: int
    passwords: dict[str, str]

    def url(self, user: str) -> str:
        return embedded_url(self.port, user, self.passwords[user])

    def client(self, user: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(user), decode_responses=True)

    @asynccontextmanager
    async def service(self, user: str) -> AsyncIterator[Redis]:
        """The client a service process makes (ecosort_common.redis), logged in as `user`."""
        client = create_redis(self.url(user))
        try:
            yield client
        finally:
            await client.aclose()


@pytest.fixture(scope="module")
def acl_server(open_tmp_path_module: Path) -> Iterator[AclServer]:
    passwords = {user: secrets.token_urlsafe(16) for user in (*USERS, ADMIN)}
    acl_file = open_tmp_path_module / "users.acl"
    # An administrator of the tests' own, to read what was refused (ACL LOG).
    admin = f"user {ADMIN} on >{passwords[ADMIN]} ~* &* +@all\n"
    acl_file.write_text(render_acl_file(passwords) + admin)
    server = EmbeddedValkey(open_tmp_path_module / "data", free_port(), acl_file)
    log = open_tmp_path_module / "valkey.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            server.command(), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        answers = AclServer(server.port, passwords)
        wait_until(
            lambda: ping(answers.url(KEDA_USER)),
            what="Valkey",
            timeout=15,
            process=process,
            log=log,
        )
        yield answers
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def open_tmp_path_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("redis-acl")


# ------------------------------------------------------------------ the names the rules use


def test_the_rules_name_what_the_code_uses() -> None:
    from ecosort_common import events, outbox, revocation
    from ecosort_users.config import Settings as UsersSettings
    from ecosort_users.handlers import event_handlers
    from ecosort_waste import progress, queue

    assert redis_acl.STREAM_PREFIX == outbox.STREAM_PREFIX
    assert redis_acl.DEAD_LETTER_STREAM == events.DEAD_LETTER_STREAM
    assert redis_acl.REVOKED_SESSIONS == revocation.REVOKED_SESSIONS
    assert redis_acl.REVOCATION_CHANNEL == revocation.REVOCATION_CHANNEL
    assert redis_acl.PROGRESS_CHANNEL == progress.PROGRESS_CHANNEL
    assert redis_acl.CELERY_QUEUE == queue.QUEUE
    assert {queue.UNACKED_KEY, queue.UNACKED_INDEX_KEY} <= set(redis_acl.CELERY_KEYS)
    assert SERVICES["auth"].produces == (events.USER_REGISTERED,)
    assert SERVICES["users"].produces == (events.USER_DELETED,)
    assert set(SERVICES["waste"].produces) == {events.ANALYSIS_COMPLETED, events.ANALYSIS_CORRECTED}
    assert set(SERVICES["users"].consumes) == set(event_handlers(UsersSettings()))
    # Whatever one service produces, another consumes, and the other way round.
    produced = {e for access in SERVICES.values() for e in access.produces}
    consumed = {e for access in SERVICES.values() for e in access.consumes}
    assert produced == consumed


# ------------------------------------------------------------------ what each service must do


@pytest.mark.parametrize("service", list(SERVICES))
async def test_a_service_follows_revocations_counts_rate_limits_and_answers_ping(
    acl_server: AclServer, service: str
) -> None:
    async with acl_server.service(service) as client, acl_server.service("auth") as auth:
        subscription = Subscription(client, ping_seconds=0.2, reconnect_seconds=0.1)
        watcher = RevocationWatcher(client, subscription)
        if service == "waste":  # its API's one SUBSCRIBE names both channels (sse.py)
            subscription.add(redis_acl.PROGRESS_CHANNEL, lambda data: None)
        following = asyncio.create_task(subscription.run())
        try:
            await asyncio.wait_for(subscription.subscribed.wait(), 5)
            sid = str(uuid.uuid4())
            await revoke_sessions(auth, [sid], ttl_seconds=60)
            for _ in range(100):  # the announcement arrives on the subscription
                if await watcher.is_revoked(sid):
                    break
                await asyncio.sleep(0.05)
            assert await watcher.is_revoked(sid)
            await asyncio.sleep(0.5)  # pings on the subscription go through
            assert subscription.live
        finally:
            await cancel_and_wait(following)
        # Without a live subscription the verifier asks Redis (ZSCORE).
        cold = RevocationWatcher(client, Subscription(client))
        assert await cold.is_revoked(sid)
        assert not await cold.is_revoked(str(uuid.uuid4()))
        await RateLimiter(client, service, window_seconds=60).hit("acl-test", "someone", 5)
        assert await client.ping()  # /readyz


class Seen:
    """What the consumers' handlers were given: (consumer, event type)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def handler(self, consumer: str, *, fail: bool = False) -> Handler:
        async def handle(session: AsyncSession, event: Event) -> None:
            if fail:
                raise RuntimeError("left pending on purpose")
            self.events.append((consumer, event.type))

        return handle


async def test_events_go_from_each_producer_to_each_consumer(acl_server: AclServer) -> None:
    """The outbox relay as each producer, the consumer group as each consumer: publish, read,
    fail and recover (XAUTOCLAIM, XPENDING), dead-letter, read and acknowledge, then trim."""
    metadata = MetaData()
    outbox = outbox_table(metadata)
    producers = {s: a for s, a in SERVICES.items() if a.produces}
    consumers = {s: a for s, a in SERVICES.items() if a.consumes}
    # Each consumer its own processed-events table (auth and waste both take user.deleted).
    processed = {
        s: processed_events_table(MetaData()).to_metadata(metadata, schema=s) for s in consumers
    }
    with temporary_database("redis_acl") as database_url:
        engine = create_engine(database_url, pool_size=2, connect_timeout=5)
        sessionmaker = create_sessionmaker(engine)
        clients = {s: create_redis(acl_server.url(s)) for s in SERVICES}
        relays = {s: OutboxRelay(outbox, sessionmaker, clients[s], source=s) for s in producers}
        try:
            async with engine.begin() as connection:
                for schema in consumers:
                    await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
                await connection.run_sync(metadata.create_all)

            async def publish_everything() -> None:
                # One producer at a time: its relay publishes what is in the (shared) table.
                for service, access in producers.items():
                    async with sessionmaker() as session, session.begin():
                        for event_type in access.produces:
                            await add_event(session, outbox, event_type, {"by": service})
                    assert await relays[service].publish_pending() == len(access.produces)

            def consumer(service: str, handler: Handler, **options: int) -> EventConsumer:
                return EventConsumer(
                    redis=clients[service],
                    sessionmaker=sessionmaker,
                    processed=processed[service],
                    group=service,
                    handlers=dict.fromkeys(consumers[service].consumes, handler),
                    consumer=f"{service}-acl-test",
                    block_ms=100,
                    **options,
                )

            seen = Seen()
            await publish_everything()
            for service, access in consumers.items():
                failing = consumer(service, seen.handler(service, fail=True))
                await failing.ensure_groups()
                assert await failing.poll_once() == len(access.consumes)  # all left pending
                giving_up = consumer(
                    service, seen.handler(service, fail=True), claim_idle_ms=0, max_deliveries=1
                )
                await giving_up.recover_pending()  # a last try fails: to events:dead-letter
                for stream in redis_acl.streams(access.consumes):
                    pending = await clients[service].xpending(stream, service)
                    assert pending["pending"] == 0
            assert seen.events == []

            await publish_everything()
            for service, access in consumers.items():
                assert await consumer(service, seen.handler(service)).poll_once() == len(
                    access.consumes
                )
            assert sorted(seen.events) == sorted(
                (service, event)
                for service, access in consumers.items()
                for event in access.consumes
            )
            for relay in relays.values():
                await relay.trim()  # XINFO GROUPS, XPENDING, XTRIM
        finally:
            for client in clients.values():
                await client.aclose()
            await engine.dispose()


async def test_waste_reports_progress_and_holds_leases(acl_server: AclServer) -> None:
    from ecosort_waste import pipeline, progress, queue, reaper

    analysis = uuid.uuid4()
    async with acl_server.service("waste") as waste:
        listener = waste.pubsub()
        await listener.subscribe(progress.PROGRESS_CHANNEL)
        # EVAL of the progress script: HGET, HSET, XADD, EXPIRE and PUBLISH inside.
        data = {"status": "processing", "stage": "load", "progress": 10}
        assert await progress.publish_event(waste, analysis, "progress", data, attempt=1) == 1
        async with asyncio.timeout(5):
            while (message := await listener.get_message(timeout=1)) is None or (
                message["type"] != "message"
            ):
                pass
        assert str(analysis) in message["data"]
        await listener.aclose()
        assert (await progress.read_state(waste, analysis))["stage"] == "load"
        assert [event.seq for event in await progress.read_events(waste, analysis)] == [1]

        lease = pipeline.lease_key(analysis)
        assert await waste.set(lease, "1", nx=True, px=60_000)
        assert await waste.eval(pipeline._RENEW_SCRIPT, 1, lease, "1", "60000", pipeline.CLAIMING)
        assert await waste.eval(pipeline._RELEASE_SCRIPT, 1, lease, "1") == 1
        # The reaper's look at the leases, with its epoch key.
        assert await reaper._without_lease(waste, [analysis], 0) == {analysis}

        # The reaper's count of what the broker holds.
        async with waste.pipeline(transaction=True) as pipe:
            pipe.llen(queue.QUEUE)
            pipe.zcount(queue.UNACKED_INDEX_KEY, 0, "+inf")
            assert await pipe.execute() == [0, 0]


async def test_recycling_reserves_and_settles_model_tokens(acl_server: AclServer) -> None:
    """The day's budget and the user's share of it, both in one transaction: recycling may run
    no script."""
    from ecosort_recycling.limits import reserve_tokens, settle_tokens

    user = uuid.uuid4()
    async with acl_server.service("recycling") as recycling:
        limits = {"daily_budget": 10_000, "user_share": 1_000}
        reservation = await reserve_tokens(recycling, user, 600, **limits)
        assert reservation is not None
        assert await reserve_tokens(recycling, user, 600, **limits) is None  # over the share
        await settle_tokens(recycling, reservation, 250)
        assert await recycling.mget(reservation.keys) == ["250", "250"]


# How KEDA's Redis scaler reads a list's length (kedacore/keda, pkg/scalers/redis_scaler.go):
# one script, TYPE then the length command that fits the type.
KEDA_LENGTH_SCRIPT = """
local listType = redis.call('type', KEYS[1])["ok"]
local cmd = {zset = 'zcard', set = 'scard', list = 'llen', hash = 'hlen', none = 'llen'}
return redis.call(cmd[listType], KEYS[1])
"""


def keda_queue_length(keda: redis.Redis, queue: str) -> int:
    return int(keda.eval(KEDA_LENGTH_SCRIPT, 1, queue))  # type: ignore[no-untyped-call]


def test_waste_sends_and_takes_celery_tasks_and_keda_counts_them(acl_server: AclServer) -> None:
    from kombu import Queue

    from ecosort_waste.config import Settings
    from ecosort_waste.queue import QUEUE, configure_celery, send_analysis

    celery = configure_celery(Settings(redis_url=acl_server.url("waste")))
    send_analysis(celery, uuid.uuid4())  # LPUSH, binding lookups
    keda = acl_server.client(KEDA_USER)
    assert keda_queue_length(keda, QUEUE) == 1
    taken: list[str] = []

    def take(body: object, message: Message) -> None:
        taken.append(message.headers["task"])
        message.ack()  # HDEL/ZREM of the held message

    with celery.connection_for_read() as connection:
        # BRPOP over the queue's priority lists; the held message goes to unacked (MULTI).
        with connection.Consumer(Queue(QUEUE), callbacks=[take], accept=["json"]):
            connection.drain_events(timeout=5)
        # The restore of messages held too long: SET NX mutex, ZREVRANGEBYSCORE, EVALSHA.
        connection.default_channel.qos.restore_visible()
    assert taken == ["ecosort_waste.analyse"]
    assert keda_queue_length(keda, QUEUE) == 0
    # The worker's remote control: a PSUBSCRIBE of the pidbox broadcasts.
    listener = acl_server.client("waste").pubsub()
    listener.psubscribe("/0.celery.pidbox")
    assert listener.get_message(timeout=5)["type"] == "psubscribe"  # type: ignore[index]
    listener.close()


def test_the_charts_worker_command_runs_as_waste(
    acl_server: AclServer, open_tmp_path_module: Path
) -> None:
    """The worker exactly as the chart starts it: with Celery's mingle it exited at start on
    NOPERM, and its heartbeats were refused for as long as it ran."""
    values = yaml.safe_load((REPO / "charts" / "waste" / "values.yaml").read_text())
    command = values["workers"]["worker"]["command"]
    assert command[0] == "celery"
    admin = acl_server.client(ADMIN)
    admin.acl_log_reset()
    log = open_tmp_path_module / "worker.log"
    with temporary_database("acl_worker") as database_url:
        env = {
            **os.environ,
            "REDIS_URL": acl_server.url("waste"),
            "DATABASE_URL": database_url,
            "DATA_DIR": str(open_tmp_path_module / "waste-data"),
            "WORKER_HEARTBEAT_FILE": str(open_tmp_path_module / "worker-heartbeat"),
            "LOG_JSON": "false",
        }
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", *command],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(
                lambda: " ready." in log.read_text(errors="replace"),
                what="the worker",
                timeout=60,
                process=process,
                log=log,
            )
            time.sleep(3)  # past a heartbeat's interval (2 s)
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            refused = [(e["username"], e["object"]) for e in admin.acl_log()]
            assert refused == []
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


# ------------------------------------------------------------------ what each must not do

FORGED = [
    # A forged user.deleted would make auth and waste delete someone's sessions and analyses.
    ("locations", "XADD", "events:user.deleted", "*", "user_id", "x"),
    ("recycling", "XADD", "events:user.deleted", "*", "user_id", "x"),
    ("auth", "XADD", "events:user.deleted", "*", "user_id", "x"),  # it consumes, not produces
    ("waste", "XADD", "events:user.deleted", "*", "user_id", "x"),
    ("users", "XADD", "events:analysis.completed", "*", "user_id", "x"),
    ("locations", "XADD", "events:user.registered", "*", "user_id", "x"),
    # Revocations are auth's.
    ("users", "PUBLISH", "auth:revoked-sids", '{"sid": "x", "ttl": 60}'),
    ("waste", "PUBLISH", "auth:revoked-sids", '{"sid": "x", "ttl": 60}'),
    ("locations", "ZREM", "auth:revoked-sessions", "x"),
    ("recycling", "DEL", "auth:revoked-sessions"),
    ("locations", "SET", "auth:oauth-state:x", "{}"),
    # Other services' keys.
    ("recycling", "GET", "waste:analysis:x"),
    ("recycling", "HGETALL", "waste:analysis:x"),
    ("locations", "GET", "recycling:llm-tokens:2026-01-01"),
    ("users", "INCR", "auth:ratelimit:login:x:1"),
    ("auth", "LPUSH", "analyses", "{}"),
    ("users", "LLEN", "analyses"),
    # A consumer group is read, not reset or removed.
    ("users", "XGROUP", "DESTROY", "events:user.registered", "users"),
    ("users", "XGROUP", "SETID", "events:user.registered", "users", "$"),
    ("auth", "XTRIM", "events:user.deleted", "MAXLEN", "0"),
    ("auth", "XDEL", "events:user.deleted", "0-1"),
    ("waste", "XRANGE", "events:dead-letter", "-", "+"),
    # Scripts are waste's, and checked command by command.
    ("recycling", "EVAL", "return 1", "0"),
    ("waste", "EVAL", "return redis.call('ZADD', KEYS[1], 1, 'x')", "1", "auth:revoked-sessions"),
    ("waste", "EVAL", "return redis.call('PUBLISH', 'auth:revoked-sids', 'x')", "0"),
    # KEDA's user counts the queue and nothing else.
    (KEDA_USER, "LRANGE", "analyses", "0", "-1"),
    (KEDA_USER, "LPUSH", "analyses", "{}"),
    (KEDA_USER, "GET", "auth:oauth-state:x"),
    (KEDA_USER, "ZSCORE", "auth:revoked-sessions", "x"),
    # Its scripts may only count the queue.
    (KEDA_USER, "EVAL", "return redis.call('DEL', KEYS[1])", "1", "analyses"),
    (KEDA_USER, "EVAL", "return redis.call('LLEN', KEYS[1])", "1", "waste:analysis:x"),
]


@pytest.mark.parametrize(("user", "command"), [(f[0], f[1:]) for f in FORGED])
def test_forged_and_foreign_commands_are_refused(
    acl_server: AclServer, user: str, command: tuple[str, ...]
) -> None:
    with acl_server.client(user) as client, pytest.raises(ResponseError) as refused:
        client.execute_command(*command)
    # A script's refusal comes as "ACL failure in script: No permissions ...".
    assert "no permissions" in str(refused.value).lower()


DANGEROUS = [
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "SET", "appendonly", "no"),
    ("KEYS", "*"),
    ("SCAN", "0"),
    ("REPLICAOF", "NO", "ONE"),  # DEBUG is off in Valkey's own configuration anyway
    ("MODULE", "LIST"),
    ("ACL", "LIST"),
    ("ACL", "SETUSER", "someone", "on", "nopass", "+@all", "~*"),
    ("CLIENT", "LIST"),
    ("INFO",),
    ("SWAPDB", "0", "1"),
    ("SCRIPT", "FLUSH"),
    ("FUNCTION", "FLUSH"),
    ("BGSAVE",),
]


@pytest.mark.parametrize("user", USERS)
def test_no_user_may_run_admin_or_dangerous_commands(acl_server: AclServer, user: str) -> None:
    with acl_server.client(user) as client:
        for command in DANGEROUS:
            with pytest.raises(NoPermissionError):
                client.execute_command(*command)
        assert client.ping()  # refused, not disconnected


@pytest.mark.parametrize("service", OTHERS_THAN_AUTH)
async def test_only_auth_may_revoke_sessions(acl_server: AclServer, service: str) -> None:
    async with acl_server.service(service) as client:
        with pytest.raises(NoPermissionError):
            await revoke_sessions(client, [uuid.uuid4()], ttl_seconds=60)
        with pytest.raises(NoPermissionError):
            await client.zadd(redis_acl.REVOKED_SESSIONS, {"x": 1})


@pytest.mark.parametrize(
    ("service", "channels"),
    [
        ("users", ["waste:progress"]),
        ("recycling", ["auth:revoked-sids", "waste:progress"]),
        ("locations", ["auth:*"]),
    ],
)
def test_subscriptions_are_limited_to_the_services_channels(
    acl_server: AclServer, service: str, channels: list[str]
) -> None:
    listener = acl_server.client(service).pubsub()
    try:
        with pytest.raises(NoPermissionError):
            if "*" in channels[0]:
                listener.psubscribe(*channels)
            else:
                listener.subscribe(*channels)
            listener.get_message(timeout=5)  # the refusal is the answer to the SUBSCRIBE
    finally:
        listener.close()


def test_no_one_gets_in_without_a_users_password(acl_server: AclServer) -> None:
    anonymous = redis.Redis(port=acl_server.port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    wrong = redis.Redis(port=acl_server.port, username="auth", password="not-auths-password")
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    wrong.close()


# ------------------------------------------------------------------ the stack's side


def test_the_stack_gives_each_service_its_own_user(tmp_path: Path) -> None:
    config = StackConfig(repo=REPO, home=tmp_path)
    urls = {service: redis_url(config, service) for service in SERVICES}
    stored = json.loads((tmp_path / "secrets.json").read_text())
    for service, url in urls.items():
        parts = urlsplit(url)
        assert (parts.username, parts.port) == (service, config.valkey_port)
        assert parts.password == stored[REDIS_PASSWORDS[service]]
        env = service_env(config, service, database_url="d", redis_url=url, base={})
        assert env["REDIS_URL"] == url
        others = {stored[name] for user, name in REDIS_PASSWORDS.items() if user != service}
        assert not others & set(env.values()), "another user's password in its environment"
        assert not any(part in env for part in REDIS_PASSWORDS.values())
    assert (tmp_path / "secrets.json").stat().st_mode & 0o077 == 0
    # The file the embedded Valkey loads keeps hashes only, and `default` is no open superuser.
    text_ = render_acl_file(redis_passwords(tmp_path))
    assert not any(stored[name] in text_ for name in REDIS_PASSWORDS.values())
    default = next(line for line in text_.splitlines() if line.startswith("user default "))
    assert "nopass" not in default and "+@all" not in default and "~*" not in default


def test_a_redis_you_run_is_used_as_it_is(tmp_path: Path) -> None:
    config = StackConfig(repo=REPO, home=tmp_path, external_redis_url="redis://r:6379/3")
    assert redis_url(config, "locations") == "redis://r:6379/3"


def test_the_celery_key_prefix_moves_the_broker_grants() -> None:
    rules = redis_acl.service_rules("waste", celery_key_prefix="run-1:")
    assert "~run-1:analyses*" in rules and "&run-1:/0.celery.pidbox" in rules
    assert "~run-1:analyses " in redis_acl.keda_rules(celery_key_prefix="run-1:") + " "
    with pytest.raises(ValueError, match="glob"):
        redis_acl.service_rules("waste", celery_key_prefix="run*")


def test_what_the_services_wrote_survives_a_restart_of_valkey(tmp_path: Path) -> None:
    # Transactions too (the recycling budget's, kombu's): replayed from an append-only file,
    # Valkey refused them with the `default` user's rights (valkey-io/valkey#3983).
    passwords = {user: secrets.token_urlsafe(16) for user in USERS}
    acl_file = tmp_path / "users.acl"
    acl_file.write_text(render_acl_file(passwords))
    server = EmbeddedValkey(tmp_path / "data", free_port(), acl_file)
    url = embedded_url(server.port, "recycling", passwords["recycling"])
    log = tmp_path / "valkey.log"

    def running() -> subprocess.Popen[bytes]:
        with log.open("ab") as output:
            process = subprocess.Popen(server.command(), stdout=output, stderr=subprocess.STDOUT)
        wait_until(lambda: ping(url), what="Valkey", timeout=15, process=process, log=log)
        return process

    process = running()
    try:
        with redis.Redis.from_url(url, decode_responses=True) as client:
            with client.pipeline(transaction=True) as pipe:
                pipe.incrby("recycling:llm-tokens:20261128", 976)
                pipe.expire("recycling:llm-tokens:20261128", 86_400)
                pipe.execute()
            client.set("recycling:feedback:cached", "an answer")
        process.send_signal(server.stop_signal)
        process.wait(timeout=10)
        process = running()
        with redis.Redis.from_url(url, decode_responses=True) as client:
            assert client.get("recycling:llm-tokens:20261128") == "976"
            assert client.get("recycling:feedback:cached") == "an answer"
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert "NOPERM" not in log.read_text()
