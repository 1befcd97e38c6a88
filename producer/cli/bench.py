"""Run the same loop on several backends side by side: wall time, speedup, efficiency.

Backends are started (and warmed up) before timing; the cluster's start-up is
reported separately.
"""

from __future__ import annotations

import argparse
import json
import sys

from distloop.api import validate_io_concurrency
from distloop.backends import BACKEND_NAMES
from distloop.bench import format_table, plot, require_matplotlib, run_bench
from distloop.cli.options import check_url, pool_choices
from distloop.cli.output import stdout_to_stderr
from distloop.ranges import parse_range
from distloop.tasks.core import defaults
from distloop.tasks.core.limits import check_positive
from distloop.tasks.core.settings import Settings
from distloop.tasks.kernel import REDUCERS

NAME = "bench"


def backend_list(text: str) -> list[str]:
    """``--backends``: comma-separated backend names, each one of :data:`BACKEND_NAMES`."""
    names = [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in names if b not in BACKEND_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(BACKEND_NAMES)} (comma-separated)")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET", help="module:function or path/to/script.py:function")
    parser.add_argument("--range", required=True, metavar="START:STOP[:STEP]", dest="range_text")
    parser.add_argument("--backends", default="serial,thread,process,celery", type=backend_list,
                        help=f"comma-separated, from {{{','.join(BACKEND_NAMES)}}} (default: all)")  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds, every backend once per round; the medians count (default 1)"
    )
    parser.add_argument("--workers", type=int, help="worker processes (default: one per core; at most 16 per CPU)")
    parser.add_argument("--chunk-size", default="auto", help="items per chunk, or 'auto' (default)")
    parser.add_argument("--reduce", choices=tuple(REDUCERS), help="combine results on the workers")
    parser.add_argument("--broker", help="Redis URL of running workers (default: an embedded cluster)")
    parser.add_argument("--io-concurrency", type=int, metavar="N",
                        help="async def targets: items awaited at once per worker process")  # fmt: skip
    parser.add_argument("--pool", choices=pool_choices(),
                        help="celery backend: the workers' pool kind (threads/gevent for blocking I/O)")  # fmt: skip
    parser.add_argument("--plot", metavar="FILE.png", help="draw speedup per backend against the ideal")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def main(args: argparse.Namespace) -> int:
    items = parse_range(args.range_text)
    check_positive(args.repeat, "--repeat", defaults.MAX_REPEAT)
    if args.plot:
        require_matplotlib()  # before the benchmark runs, not after
    backends = args.backends
    validate_io_concurrency(args.io_concurrency)
    settings = Settings.from_env(broker_url=check_url(args.broker), pool=args.pool)
    with stdout_to_stderr(args.json):  # what f prints must not break the JSON object
        report = run_bench(
            args.target, items, backends, settings=settings, workers=args.workers,
            chunk_size=args.chunk_size, reduce=args.reduce, repeat=args.repeat,
            io_concurrency=args.io_concurrency,
        )  # fmt: skip
    if args.plot:
        plot(report, args.plot)
    if args.json:
        payload = {
            "target": report.target, "items": report.items, "identical": report.identical,
            "startup_s": round(report.startup_s, 4), "plot": args.plot,
            "backends": {name: run.figures() for name, run in report.runs.items()},
        }  # fmt: skip
        print(json.dumps(payload))
    else:
        print(format_table(report))
        if args.plot:
            print(f"plot written to {args.plot}")
    if not report.identical:
        print("distloop bench: warning: backends gave different results", file=sys.stderr)
    return 0
