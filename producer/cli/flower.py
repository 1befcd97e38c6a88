"""Start Flower, the web monitor, for distloop's workers and chunks (Ctrl-C stops it).

Bound to 127.0.0.1 with basic auth: given with --basic-auth, or generated and printed once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from distloop.cli.options import check_url, port_number
from distloop.tasks.core import defaults
from distloop.tasks.core.errors import UsageError
from distloop.tasks.core.settings import Settings, mask_url
from distloop.tasks.store.connect import connect_store
from distloop.worker.flower import ENV_FLOWER_AUTH, parse_basic_auth, require_flower, start_flower

NAME = "flower"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", help="Redis URL the workers use (default: DISTLOOP_BROKER_URL or local Redis)")
    parser.add_argument("--port", type=port_number, help=f"port (default {defaults.FLOWER_PORT}; 0 picks a free one)")
    parser.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--basic-auth", metavar="USER:PASS", default=os.environ.get(ENV_FLOWER_AUTH) or None,
        help=f"credentials (default: ${ENV_FLOWER_AUTH}, else generated and printed once)",
    )  # fmt: skip
    parser.add_argument("--max-tasks", type=int, default=defaults.FLOWER_MAX_TASKS,
                        help=f"tasks Flower keeps in memory (default {defaults.FLOWER_MAX_TASKS})")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    require_flower()
    if not args.address.strip():  # Flower would take "" for every interface
        raise UsageError("--address must not be empty: give one such as 127.0.0.1")
    if args.basic_auth is not None:
        parse_basic_auth(args.basic_auth)  # a malformed value is a usage error before anything starts
    settings = Settings.from_env(broker_url=check_url(args.broker))
    # Flower starts even when Redis is down; say so now rather than show an empty page.
    connect_store(settings.replace(result_url=None)).client.close()
    flower = start_flower(
        settings, port=args.port, basic_auth=args.basic_auth, address=args.address, max_tasks=args.max_tasks
    )
    try:
        print(f"Flower: {flower.url}  (broker {mask_url(settings.effective_broker_url)})", flush=True)
        if args.basic_auth is None:
            print(f"  user: {flower.username}  password: {flower.password}", flush=True)
        print("  Ctrl-C stops it.", file=sys.stderr, flush=True)
        while flower.process.alive():
            time.sleep(0.5)
        print(f"distloop flower: Flower exited with code {flower.process.popen.returncode}", file=sys.stderr)
        print(flower.log().strip()[-2000:], file=sys.stderr)
        return 3
    except KeyboardInterrupt:  # Ctrl-C is how this command is meant to end: no error
        print("distloop flower: stopped", file=sys.stderr, flush=True)
        return 0
    finally:
        flower.stop()
