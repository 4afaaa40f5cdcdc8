"""`ecosort-stack up | down | exec | gateway-config | redis-acl`: the command behind `make run`,
`make stop` and `make train-head`."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from collections.abc import Sequence
from signal import SIGHUP, SIGINT, SIGTERM
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from ecosort_devstack.config import SERVICE_PORTS, StackConfig
from ecosort_devstack.errors import StackError
from ecosort_devstack.shutdown import down

if TYPE_CHECKING:
    from ecosort_devstack.stack import StackInfo


def _say(message: str) -> None:
    print(message, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # `down` and a closed terminal stop the stack the same way Ctrl-C does.
    raise KeyboardInterrupt


def _summary(info: StackInfo, config: StackConfig) -> str:
    width = max(len(name) for name in info.service_urls) + 2
    lines = [f"EcoSort is up in {info.seconds:.1f} s", f"  {'gateway':<{width}}{info.gateway_url}"]
    for service, url in info.service_urls.items():
        routed = f"{info.gateway_url}/api/v1/{service}"
        lines.append(f"  {service:<{width}}{url}   (through the gateway: {routed})")
    lines += [
        f"  {'postgres':<{width}}{info.database}",
        f"  {'redis':<{width}}{info.redis}",
        f"  {'worker':<{width}}{info.worker}",
        f"  {'logs':<{width}}{config.logs_dir}/",
        *(f"  note: {note}" for note in info.notes),
        "Ctrl-C stops the stack (or `make stop` / `ecosort-stack down` in another terminal).",
    ]
    return "\n".join(lines)


def _still_stopping(signum: int, frame: FrameType | None) -> None:
    """A second Ctrl-C (or `timeout` signalling the whole process group) during the teardown:
    raising again would abandon it halfway and leave the servers running."""


def run_up(config: StackConfig) -> int:
    from ecosort_devstack.stack import Stack  # imported here: `down` must start fast

    previous = {signum: signal.signal(signum, _interrupt) for signum in (SIGTERM, SIGHUP)}
    stack = Stack(config, say=_say)
    try:
        info = stack.up()
        _say(_summary(info, config))
        stack.watch()
    except KeyboardInterrupt:
        _say("stopping the stack...")
    finally:
        # A handler, not SIG_IGN: programs the teardown starts must not inherit ignored signals.
        # stop() ends in bounded time (each tier gets SIGKILL after its timeout).
        interrupt = signal.signal(SIGINT, _still_stopping)
        for signum in previous:
            signal.signal(signum, _still_stopping)
        stack.stop()
        signal.signal(SIGINT, interrupt)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    _say("stopped")
    return 0


def run_exec(config: StackConfig, service: str, command: list[str]) -> NoReturn:
    from ecosort_devstack.stack import running_service_env

    command = command[1:] if command[:1] == ["--"] else command
    if not command:
        raise StackError("exec: name the command to run after the service")
    os.execvpe(command[0], command, running_service_env(config, service))


def run_gateway_config(config: StackConfig) -> int:
    from ecosort_devstack.ingress import load_routes
    from ecosort_devstack.nginx_conf import render_nginx_conf

    routes = load_routes(config.repo / "ingress")
    ports = {service: config.service_port(service) for service in config.services}
    print(
        render_nginx_conf(
            routes,
            ports,
            listen_port=config.gateway_port,
            work_dir=config.nginx_dir,
            rate_limit=config.rate_limit,
        ),
        end="",
    )
    return 0


def run_redis_acl(args: argparse.Namespace) -> int:
    from ecosort_devstack.env import REDIS_PASSWORDS
    from ecosort_devstack.redis_acl import render_acl_file, render_setuser_commands

    # The platform's passwords come from the environment, never from arguments (shell history).
    missing = [name for name in REDIS_PASSWORDS.values() if not os.environ.get(name)]
    if missing:
        raise StackError(f"redis-acl: set the password of each user first: {', '.join(missing)}")
    passwords = {user: os.environ[name] for user, name in REDIS_PASSWORDS.items()}
    render = render_setuser_commands if args.format == "commands" else render_acl_file
    print(
        render(passwords, celery_key_prefix=args.celery_key_prefix, celery_db=args.celery_db),
        end="",
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ecosort-stack",
        description="The EcoSort local stack. Settings: DATABASE_URL / REDIS_URL (use servers "
        "you run), ECOSORT_STACK_HOME (default <repo>/.local), ECOSORT_STACK_PORT_OFFSET, "
        "ECOSORT_STACK_DB_PREFIX, ECOSORT_GATEWAY_RATE_LIMIT=off, ECOSORT_STACK_WORKER=off, "
        "ECOSORT_STACK_MIGRATE=always (see tools/devstack/README.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start everything; Ctrl-C stops it")
    sub.add_parser("down", help="stop a stack started in another terminal")
    run = sub.add_parser(
        "exec", help="run a command with a service's local settings (its database, data folder…)"
    )
    run.add_argument("service", choices=SERVICE_PORTS)
    run.add_argument("program", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    sub.add_parser("gateway-config", help="print the nginx.conf generated from ingress/")
    acl = sub.add_parser(
        "redis-acl",
        help="print the Redis ACL users of every service (passwords from REDIS_ACL_PASSWORD_<USER>"
        " variables, stored hashed), for a Redis you run",
    )
    acl.add_argument(
        "--format",
        choices=("file", "commands"),
        default="file",
        help="an aclfile (default), or ACL SETUSER commands for redis-cli",
    )
    acl.add_argument("--celery-key-prefix", default="", help="waste's CELERY_KEY_PREFIX, if any")
    acl.add_argument(
        "--celery-db", type=int, default=0, help="the database number of waste's REDIS_URL (its /N)"
    )
    args = parser.parse_args(argv)
    home = "the stack's folder"
    try:
        config = StackConfig.from_env()
        home = str(config.home)
        if args.command == "up":
            return run_up(config)
        if args.command == "down":
            return down(config, say=_say)
        if args.command == "exec":
            run_exec(config, args.service, args.program)
        if args.command == "redis-acl":
            return run_redis_acl(args)
        return run_gateway_config(config)
    except (StackError, FileNotFoundError, ValueError) as exc:
        print(f"ecosort-stack: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except OSError as exc:  # a full disk, or files a run as another user (root) left behind
        hints = {
            errno.ENOSPC: f"the disk holding {home} is full",
            errno.EACCES: f"files under {home} belong to another user (a run as root?): "
            f"`sudo chown -R $(id -un) {home}`",
        }
        hint = hints.get(exc.errno or 0)
        print(
            f"ecosort-stack: error: {exc}{f'; {hint}' if hint else ''}", file=sys.stderr, flush=True
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
