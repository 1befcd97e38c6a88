"""Serve chunks on this host: a Celery worker with distloop's settings.

Equivalent to `celery -A distloop.tasks worker -P prefork -Q distloop` with the same
DISTLOOP_* environment (`--pool threads`: `-P threads -Q distloop.threads`, for blocking
I/O); this command checks the broker first, prints what it serves (password masked),
then becomes that worker (same process id).
"""

from __future__ import annotations

import argparse
import os
import sys

from celery.utils.nodenames import host_format

from distloop.cli.options import allow_option, check_url, pool_choices
from distloop.tasks.core import defaults
from distloop.tasks.core.errors import UsageError
from distloop.tasks.core.limits import check_workers, pool_cap
from distloop.tasks.core.settings import Settings, mask_url
from distloop.tasks.store.connect import connect_store
from distloop.worker.celery_worker import available_cpus, worker_argv, worker_env

NAME = "worker"
#: Celery's log levels (celery worker -l).
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", help="Redis URL (default: DISTLOOP_BROKER_URL, else redis://127.0.0.1:6379/0)")
    parser.add_argument(
        "--concurrency", type=int, help="worker processes (default: CPUs available to this host; at most 16 per CPU)"
    )
    parser.add_argument("--hostname", help="worker name, as Celery's -n (default: distloop@<host name>)")
    parser.add_argument("--allow", help="comma-separated modules whose functions may run (adds to DISTLOOP_ALLOW)")
    parser.add_argument("--loglevel", default="warning", choices=LOG_LEVELS, help="Celery log level (default warning)")
    parser.add_argument(
        "--pool", choices=pool_choices(),
        help="prefork: processes for CPU-bound work (default); threads/gevent: many waiting items for"
        f" blocking I/O (--concurrency default {defaults.THREAD_WORKERS}), served on queue distloop.<pool>",
    )  # fmt: skip


def worker_settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env(broker_url=check_url(args.broker), pool=args.pool)
    if args.allow is not None:
        settings = settings.replace(allow=settings.allow + allow_option(args.allow))
    return settings


def main(args: argparse.Namespace) -> int:
    if args.hostname is not None and not args.hostname.strip():
        raise UsageError("--hostname must not be empty")
    settings = worker_settings(args)
    waiting = settings.pool != "prefork"
    # 0 is refused, not taken for "the default"; threads are capped higher than processes.
    check_workers(args.concurrency, "--concurrency", pool_cap(settings.pool))
    concurrency = args.concurrency or (defaults.THREAD_WORKERS if waiting else available_cpus())
    hostname = args.hostname or "distloop@%h"
    shown = host_format(hostname)  # the name Celery will use, as in `hosts` of run --json
    # One clear line (exit 3) for a wrong password or an unreachable Redis, instead
    # of Celery's endless reconnect loop.
    connect_store(settings).client.close()
    print(f"distloop worker {shown}: broker {mask_url(settings.effective_broker_url)}", file=sys.stderr)
    if settings.result_url:
        print(f"distloop worker {shown}: results {mask_url(settings.result_url)}", file=sys.stderr)
    print(
        f"distloop worker {shown}: {concurrency} {'threads' if waiting else 'processes'} ({settings.pool}, queue"
        f" {settings.queue}), may run {', '.join(settings.allowed_patterns)}",
        file=sys.stderr,
    )
    sys.stderr.flush()
    argv = worker_argv(concurrency, hostname, args.loglevel, settings.pool)
    # Become the worker: Ctrl-C and SIGTERM reach Celery directly, and whoever
    # started us stops the worker by the process id it already knows.
    os.execve(argv[0], argv, worker_env(settings))
    return 0  # not reached
