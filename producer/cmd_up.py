"""Start a standing local cluster (redis-server and prefork workers) until Ctrl-C.

The broker URL carries a fresh random password. It is printed masked; the full
URL goes to an environment file readable only by you (`. FILE` sets
DISTLOOP_BROKER_URL), or to stdout with --show-password.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from tasks.errors import BrokerUnavailable, UsageError
from tasks.settings import ENV_BROKER, Settings, mask_url, split_patterns
from worker.celery_worker import start_worker
from worker.processes import ManagedProcess
from worker.redis_server import RedisServer, start_redis

NAME = "up"
DEFAULT_ENV_FILE = "~/.distloop/up.env"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    parser.add_argument("--flower", action="store_true", help="also start Flower (basic auth) on 127.0.0.1")
    parser.add_argument("--bind", default="127.0.0.1", help="address Redis listens on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="Redis port (default: a free one)")
    parser.add_argument("--allow", help="comma-separated modules whose functions workers may run")
    parser.add_argument("--env-file", default=DEFAULT_ENV_FILE,
                        help=f"where to write the full broker URL, mode 600 (default {DEFAULT_ENV_FILE})")  # fmt: skip
    parser.add_argument("--show-password", action="store_true", help="print the full broker URL on stdout")


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """Write ``export NAME='value'`` lines to ``path``, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as stream:
        for name, value in values.items():
            stream.write(f"export {name}='{value}'\n")


def start_flower_for(settings: Settings) -> Any:
    try:
        from worker.flower import start_flower  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise UsageError("Flower support is not installed") from None
    return start_flower(settings)


def main(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, not {args.workers}")
    env_file = Path(os.path.expanduser(args.env_file))
    base = Settings.from_env()
    redis: RedisServer | None = None
    worker: ManagedProcess | None = None
    flower: Any = None
    try:
        redis = start_redis(host=args.bind, port=args.port)
        settings = base.replace(broker_url=redis.url, result_url=None, allow=base.allow + split_patterns(args.allow))
        concurrency = args.workers or os.cpu_count() or 1
        worker = start_worker(settings, concurrency=concurrency, hostname=f"up-{os.getpid()}@%h", cwd=os.getcwd())
        flower = start_flower_for(settings) if args.flower else None
        env = {ENV_BROKER: redis.url}
        write_env_file(env_file, env)
        say(f"redis-server {redis.host}:{redis.port} (pid {redis.process.pid}), no persistence")
        say(f"worker up-{os.getpid()} with {concurrency} processes (pid {worker.pid})")
        if flower is not None:
            say(f"Flower at {flower.url} (user {flower.username}; password in {env_file})")
            write_env_file(env_file, {**env, "DISTLOOP_FLOWER_USER": flower.username,
                                      "DISTLOOP_FLOWER_PASSWORD": flower.password})  # fmt: skip
        say(f"broker {mask_url(redis.url)}")
        say(f"to use it: . {env_file}   (sets {ENV_BROKER}; the file is readable by you only)")
        if args.show_password:
            print(redis.url, flush=True)
        say("Ctrl-C stops everything")
        watch([("redis-server", redis.process), ("worker", worker)])
    except KeyboardInterrupt:
        say("stopping")
    finally:
        for part in (flower, worker, redis):
            if part is not None:
                part.stop()
        if env_file.exists():
            env_file.unlink()
    say("stopped")
    return 0


def watch(parts: list[tuple[str, ManagedProcess]]) -> None:
    """Return never; raise if one of ``parts`` exits on its own."""
    while True:
        for name, process in parts:
            if not process.alive():
                raise BrokerUnavailable(f"{name} (pid {process.pid}) exited with code {process.popen.returncode}")
        time.sleep(0.5)


def say(line: str) -> None:
    print(f"distloop up: {line}", file=sys.stderr, flush=True)
