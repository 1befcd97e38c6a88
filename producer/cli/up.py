"""Start a standing local cluster (redis-server and prefork workers) until Ctrl-C.

The broker URL carries a fresh random password. It is printed masked; the full
URL goes to an environment file readable only by you (`. FILE` sets
DISTLOOP_BROKER_URL), or to stdout with --show-password.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from distloop.cli.options import allow_option, check_env_file, check_listen, port_number
from distloop.tasks.core import defaults
from distloop.tasks.core.errors import UsageError
from distloop.tasks.core.limits import check_workers
from distloop.tasks.core.settings import ENV_BROKER, ENV_ENV_FILE, Settings, mask_url
from distloop.worker.standing import StandingCluster

NAME = "up"
DEFAULT_ENV_FILE = defaults.UP_ENV_FILE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, help="worker processes (default: one per core; at most 16 per CPU)")
    parser.add_argument("--flower", action="store_true", help="also start Flower (basic auth) on 127.0.0.1")
    parser.add_argument("--flower-port", type=port_number, metavar="N",
                        help=f"Flower's port (default {defaults.FLOWER_PORT}; 0 picks a free one)")  # fmt: skip
    parser.add_argument("--bind", default="127.0.0.1", help="address Redis listens on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, help="Redis port (default or 0: a free one)")
    parser.add_argument("--allow", help="comma-separated modules whose functions workers may run")
    parser.add_argument("--env-file",
                        help=f"where to write the full broker URL, mode 600 (default ${ENV_ENV_FILE}, "
                             f"else {DEFAULT_ENV_FILE}); `distloop run` and the facades find it there")  # fmt: skip
    parser.add_argument("--show-password", action="store_true", help="print the full broker URL on stdout")


def main(args: argparse.Namespace) -> int:
    check_workers(args.workers, "--workers")  # before anything forks
    if args.flower_port is not None and not args.flower:
        raise UsageError("--flower-port needs --flower")
    if not args.bind.strip():
        raise UsageError("--bind must not be empty: give an address such as 127.0.0.1")
    check_listen(args.bind, args.port or 0, "--port")
    base = Settings.from_env()
    env_path = os.path.expanduser(base.env_file if args.env_file is None else args.env_file)  # where producers look
    check_env_file(env_path)
    env_file = Path(env_path)
    if args.allow is not None:
        base = base.replace(allow=base.allow + allow_option(args.allow))
    concurrency = args.workers or os.cpu_count() or 1
    cluster = StandingCluster(
        base, concurrency=concurrency, env_file=env_file, bind=args.bind, port=args.port, flower=args.flower,
        flower_port=args.flower_port,
    )  # fmt: skip
    try:
        cluster.start()
        assert cluster.redis is not None and cluster.worker is not None
        redis = cluster.redis
        say(f"redis-server {redis.host}:{redis.port} (pid {redis.process.pid}), no persistence")
        say(f"worker up-{os.getpid()} with {concurrency} processes (pid {cluster.worker.pid})")
        if cluster.flower is not None:
            say(f"Flower at {cluster.flower.url} (user {cluster.flower.username}; password in {env_file})")
        say(f"broker {mask_url(redis.url)}")
        say(f"to use it: . {env_file}   (sets {ENV_BROKER}; the file is readable by you only)")
        if args.show_password:
            print(redis.url, flush=True)
        say("Ctrl-C stops everything")
        cluster.watch()
    except KeyboardInterrupt:
        say("stopping")
    finally:
        cluster.stop()
    say("stopped")
    return 0


def say(line: str) -> None:
    print(f"distloop up: {line}", file=sys.stderr, flush=True)
