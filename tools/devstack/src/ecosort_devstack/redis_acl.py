"""Redis ACL users, one per service: the one place the rules are written down.

Each service logs in to the shared Redis as its own user (the waste API and its Celery worker
share `waste`). A user may:
- read and write its own keys `<service>:*` (rate limits, caches, waste's progress and leases);
- read the revoked sessions (`auth:revoked-sessions`) and SUBSCRIBE to `auth:revoked-sids`,
  which only auth writes and PUBLISHes;
- XADD to, trim and inspect the streams of the events it produces (its outbox relay);
- run a consumer group (XGROUP CREATE, XREADGROUP, XACK, XAUTOCLAIM, XPENDING) on the streams
  of the events it consumes, and XADD what it gives up on to `events:dead-letter`;
- waste only: run Lua scripts, PUBLISH on `waste:progress`, and use the Celery broker's keys.
Nothing else: no other service's keys, no admin or @dangerous command (FLUSHALL, CONFIG, KEYS,
DEBUG...), no SCAN of the shared keyspace.

The `default` user, the one a password-only AUTH logs in as, is the KEDA scaler's: PING, and
the length of the Celery queue by KEDA's own Lua script (TYPE and LLEN of that one key; a
leaked password can still run busy scripts), nothing else (the local launcher uses it for its
readiness ping).

Rules go in selectors (Redis >= 7, Valkey): a command passes when the user's root rules or one
selector allow both the command and every key and channel it names, so "XADD" and
"events:user.deleted" are granted together or not at all. Scripts are checked command by command.

`render_acl_file` makes the ACL file the local stack's Valkey loads; `ecosort-stack redis-acl`
prints the same for the platform team's Redis (docs/deploy.md).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

# Names the services use (ecosort_common.outbox/events/revocation, ecosort_waste.queue and
# .progress); tools/devstack/tests/test_redis_acl.py checks they still agree.
STREAM_PREFIX = "events:"
DEAD_LETTER_STREAM = "events:dead-letter"
REVOKED_SESSIONS = "auth:revoked-sessions"
REVOCATION_CHANNEL = "auth:revoked-sids"
PROGRESS_CHANNEL = "waste:progress"
CELERY_QUEUE = "analyses"
# kombu's Redis transport: the queue list (and its priority lists `analyses\x06\x16<n>`), the
# hash and index of held messages, the restore mutex, the exchange bindings, and the list of
# each worker's remote-control queue (`celery@<host>.celery.pidbox`, purged at start).
CELERY_KEYS = (
    f"{CELERY_QUEUE}*",
    "unacked",
    "unacked_index",
    "unacked_mutex",
    "_kombu.binding.*",
    "celery@*.celery.pidbox*",
)
# The worker's remote-control (pidbox) broadcasts: kombu PSUBSCRIBEs to `/<db>.celery.pidbox`.
CELERY_CHANNELS = ("/{db}.celery.pidbox",)
KEDA_USER = "default"

# What every connection needs whatever it does: log in, keep alive, transactions.
_CONNECTION = (
    "+ping +hello +auth +quit +reset +select +echo "
    "+client|setinfo +client|setname +client|getname +client|id"
)
_TRANSACTIONS = "+multi +exec +discard +unwatch"
# Anything on one's own keys, except what could touch or list the rest of the server: the only
# keyless commands of @read and @write are SCAN, RANDOMKEY, DBSIZE, LOLWUT and FUNCTION's (FLUSH,
# DELETE... of every library, in @scripting).
_OWN_KEYS = "+@read +@write -@dangerous -@scripting -scan -randomkey"
_SCRIPTS = "+eval +evalsha +script|load +script|exists"
_PRODUCER = "+xadd +xtrim +xinfo|groups +xpending"
_CONSUMER = "+xgroup|create +xreadgroup +xack +xautoclaim +xpending"


@dataclass(frozen=True)
class ServiceAccess:
    produces: tuple[str, ...] = ()  # event types its outbox relay publishes
    consumes: tuple[str, ...] = ()  # event types its consumer group reads
    publishes: tuple[str, ...] = ()  # pub/sub channels it PUBLISHes on
    subscribes: tuple[str, ...] = ()  # channels besides auth:revoked-sids
    scripts: bool = False  # EVAL/EVALSHA (each command inside is checked again)
    celery: bool = False  # the Celery broker's keys and channels


SERVICES: dict[str, ServiceAccess] = {
    "auth": ServiceAccess(
        produces=("user.registered",),
        consumes=("user.deleted",),
        publishes=(REVOCATION_CHANNEL,),
    ),
    "users": ServiceAccess(
        produces=("user.deleted",),
        consumes=("user.registered", "analysis.completed", "analysis.corrected"),
    ),
    "waste": ServiceAccess(
        produces=("analysis.completed", "analysis.corrected"),
        consumes=("user.deleted",),
        publishes=(PROGRESS_CHANNEL,),
        subscribes=(PROGRESS_CHANNEL,),
        scripts=True,
        celery=True,
    ),
    "recycling": ServiceAccess(),
    "locations": ServiceAccess(),
}
USERS = (*SERVICES, KEDA_USER)

_GLOB = set("*?[]\\")


def _check_prefix(celery_key_prefix: str) -> str:
    # PSUBSCRIBE patterns are compared with ACL channel patterns literally, so a prefix with
    # glob characters could not be granted exactly; no one needs one.
    if _GLOB & set(celery_key_prefix) or " " in celery_key_prefix:
        raise ValueError(
            f"CELERY_KEY_PREFIX {celery_key_prefix!r}: glob characters and spaces cannot be "
            "granted in a Redis ACL"
        )
    return celery_key_prefix


def _selector(*rules: str) -> str:
    return "(" + " ".join(rule for rule in rules if rule) + ")"


def _keys(patterns: tuple[str, ...] | list[str], flags: str = "") -> str:
    return " ".join(f"{flags}~{pattern}" for pattern in patterns)


def _channels(names: tuple[str, ...] | list[str]) -> str:
    return " ".join(f"&{name}" for name in names)


def streams(event_types: tuple[str, ...]) -> list[str]:
    return [f"{STREAM_PREFIX}{event_type}" for event_type in event_types]


def service_rules(service: str, *, celery_key_prefix: str = "", celery_db: int = 0) -> str:
    """The ACL rules of `service`'s user, without its state and password."""
    access = SERVICES[service]
    prefix = _check_prefix(celery_key_prefix)
    subscribed = (REVOCATION_CHANNEL, *access.subscribes)
    parts = [
        "resetkeys resetchannels -@all",
        _CONNECTION,
        _TRANSACTIONS,
        # One SUBSCRIBE names all of a process's channels, so they are granted together.
        f"+subscribe +unsubscribe +punsubscribe {_channels(subscribed)}",
        _selector(f"%R~{REVOKED_SESSIONS}", "+zscore +zrangebyscore"),
        _selector(f"~{service}:*", _OWN_KEYS, _SCRIPTS if access.scripts else ""),
    ]
    if access.publishes:
        parts.append(_selector("+publish", _channels(access.publishes)))
    if access.produces:
        parts.append(_selector(_keys(streams(access.produces)), _PRODUCER))
    if access.consumes:
        parts.append(_selector(_keys(streams(access.consumes)), _CONSUMER))
        parts.append(_selector(f"~{DEAD_LETTER_STREAM}", "+xadd"))
    if access.celery:
        channels = [prefix + channel.format(db=celery_db) for channel in CELERY_CHANNELS]
        parts.append(
            _selector(
                _keys([prefix + key for key in CELERY_KEYS]),
                _OWN_KEYS,
                "+watch",
                _SCRIPTS,  # redis-py's lock (kombu's restore mutex) releases with EVALSHA
                "+publish +psubscribe",
                _channels(channels),
            )
        )
    return " ".join(parts)


def keda_rules(*, celery_key_prefix: str = "") -> str:
    """The `default` user: what KEDA's Redis scaler (and the launcher's ping) needs."""
    queue = _check_prefix(celery_key_prefix) + CELERY_QUEUE
    return " ".join(
        [
            "resetkeys resetchannels -@all",
            _CONNECTION,
            # KEDA's Redis scaler asks in a Lua script (TYPE, then LLEN): EVAL declares its
            # keys read-write, so `~`, and a script can run no other command or key.
            _selector(f"~{queue}", "+llen +type +eval +evalsha"),
        ]
    )


def user_rules(user: str, *, celery_key_prefix: str = "", celery_db: int = 0) -> str:
    if user == KEDA_USER:
        return keda_rules(celery_key_prefix=celery_key_prefix)
    return service_rules(user, celery_key_prefix=celery_key_prefix, celery_db=celery_db)


def password_hash(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def render_acl_file(
    passwords: Mapping[str, str], *, celery_key_prefix: str = "", celery_db: int = 0
) -> str:
    """An ACL file (Redis `aclfile`) with every user of USERS, each with its password stored as
    a SHA-256 hash; a user without a password is written disabled (`off`)."""
    lines = []  # an ACL file has no comments: Redis refuses any line but `user ...`
    for user in USERS:
        password = passwords.get(user)
        state = f"on {password_hash(password)}" if password else "off"
        rules = user_rules(user, celery_key_prefix=celery_key_prefix, celery_db=celery_db)
        lines.append(f"user {user} {state} {rules}")
    return "\n".join(lines) + "\n"


def render_setuser_commands(
    passwords: Mapping[str, str], *, celery_key_prefix: str = "", celery_db: int = 0
) -> str:
    """The same users as `ACL SETUSER` commands, one a line, for `redis-cli` (each selector
    quoted as one argument); `reset` first, so loading them again replaces what was there."""
    lines = []
    for user in USERS:
        password = passwords.get(user)
        state = f"on {password_hash(password)}" if password else "off"
        rules = user_rules(user, celery_key_prefix=celery_key_prefix, celery_db=celery_db)
        words = re.findall(r"\([^)]*\)|\S+", rules)
        quoted = " ".join(f'"{word}"' if word.startswith("(") else word for word in words)
        lines.append(f"ACL SETUSER {user} reset {state} {quoted}")
    return "\n".join(lines) + "\n"
