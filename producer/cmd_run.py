"""Run f(i) for every i of a range, in parallel, and print or write the results.

TARGET is package.module:function or path/to/script.py:function.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import IO, Any

from producer.api import JobReport, run_job
from producer.progress import progress_for
from producer.ranges import parse_range
from tasks import defaults
from tasks.errors import ChunkFailed, UsageError
from tasks.kernel import ON_ERROR, REDUCERS
from tasks.settings import Settings

NAME = "run"
BACKEND_NAMES = ("celery", "process", "thread", "serial")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET", help="module:function or path/to/script.py:function")
    parser.add_argument("--range", required=True, metavar="START:STOP[:STEP]", dest="range_text")
    parser.add_argument("--backend", default="celery", help=f"one of {', '.join(BACKEND_NAMES)} (default celery)")
    parser.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    parser.add_argument("--chunk-size", default="auto", help="items per chunk, or 'auto' (default)")
    parser.add_argument("--reduce", help=f"combine results on the workers: {', '.join(REDUCERS)}")
    parser.add_argument("--output", metavar="FILE", help="write results as JSON Lines, in loop order")
    parser.add_argument("--broker", help="Redis URL of running workers (default: an embedded cluster)")
    parser.add_argument("--on-error", default="raise", help=f"{' or '.join(ON_ERROR)} (default raise)")
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="per chunk: an item still running after SECONDS is reported failed (celery backend)",
    )
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress on stderr: a bar on a terminal, else plain lines (default on)")  # fmt: skip
    parser.add_argument("--progress-every", type=float, default=defaults.PROGRESS_INTERVAL, metavar="SECONDS",
                        help=f"seconds between plain progress lines ({defaults.PROGRESS_INTERVAL:g})")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def open_output(path: str) -> IO[str]:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--output {path}: directory {folder} does not exist")
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--output {path}: {exc.strerror}") from None


def main(args: argparse.Namespace) -> int:
    items = parse_range(args.range_text)
    settings = Settings.from_env(broker_url=args.broker)
    output = open_output(args.output) if args.output else None
    progress = progress_for(args.progress, total_items=len(items), every=args.progress_every)
    try:
        report = run_job(
            args.target, items, backend=args.backend, reduce=args.reduce, chunk_size=args.chunk_size,
            workers=args.workers, on_error=args.on_error, settings=settings, output=output,
            progress=progress, timeout=args.timeout,
        )  # fmt: skip
    except ChunkFailed as exc:
        if exc.remote_traceback:
            print(exc.remote_traceback.rstrip(), file=sys.stderr)
        raise
    finally:
        if output is not None:
            output.close()
        if progress is not None:
            progress.close()
    emit(args, report)
    return 1 if report.errors else 0


def emit(args: argparse.Namespace, report: JobReport) -> None:
    """Print the result: one JSON object (--json), or results on stdout and a summary on stderr."""
    if args.json:
        payload: dict[str, Any] = {
            "job_id": report.job_id, "backend": report.backend, "items": report.items,
            "chunks": report.chunks, "chunk_size": report.chunk_size, "wall_s": round(report.wall_s, 6),
            "startup_s": round(report.startup_s, 6), "errors": report.errors, "hosts": report.hosts,
        }  # fmt: skip
        if args.output:
            payload["output"] = args.output
        else:
            payload["result"] = report.result
        print(json.dumps(payload))
        return
    if args.output:
        pass
    elif args.reduce:
        print(json.dumps(report.result))
    else:
        for value in report.result:
            print(json.dumps(value))
    where = f", written to {args.output}" if args.output else ""
    failed = f", {len(report.errors)} failed" if report.errors else ""
    print(
        f"distloop: {report.items} items in {report.chunks} chunks on {report.backend}"
        f" in {report.wall_s:.3f} s{failed}{where} (job {report.job_id})",
        file=sys.stderr,
    )
