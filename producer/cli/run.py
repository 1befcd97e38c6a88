"""Run f(i) for every i of a range, in parallel, and print or write the results.

TARGET is package.module:function or path/to/script.py:function.
"""

from __future__ import annotations

import argparse
import sys

# Light imports only: the embedded cluster starts before the rest loads (see main).
from distloop.backends import BACKEND_NAMES
from distloop.cli.options import check_url, pool_choices, positive_seconds
from distloop.ranges import parse_range, range_length
from distloop.tasks.core import defaults
from distloop.tasks.core.errors import ChunkFailed, UsageError
from distloop.tasks.core.settings import Settings
from distloop.worker.early import started_early

NAME = "run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET", help="module:function or path/to/script.py:function")
    parser.add_argument("--range", required=True, metavar="START:STOP[:STEP]", dest="range_text",
                        help="as Python's range; a negative START may follow a space: --range -5:5:2")  # fmt: skip
    parser.add_argument(
        "--backend", default="celery", choices=BACKEND_NAMES, help="where the loop runs (default celery)"
    )
    parser.add_argument("--workers", type=int, help="worker processes (default: one per core; at most 16 per CPU)")
    parser.add_argument("--chunk-size", default="auto", help="items per chunk, or 'auto' (default)")
    parser.add_argument("--reduce", choices=defaults.REDUCE_OPS, help="combine results on the workers")
    parser.add_argument("--output", metavar="FILE", help="write results as JSON Lines, in loop order")
    parser.add_argument("--broker", help="Redis URL of running workers (default: an embedded cluster)")
    parser.add_argument("--embedded", action="store_true",
                        help="an embedded cluster even if `distloop up` runs (as DISTLOOP_STANDING=0)")  # fmt: skip
    parser.add_argument("--on-error", default="raise", choices=defaults.ON_ERROR,
                        help="stop at the first failing item, or run them all (default raise)")  # fmt: skip
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="per chunk: an item still running after SECONDS is reported failed (celery backend)",
    )
    parser.add_argument("--io-concurrency", type=int, metavar="N",
                        help="async def targets: items awaited at once per worker process (default "
                        f"DISTLOOP_IO_CONCURRENCY, else {defaults.IO_CONCURRENCY}; "
                        f"at most {defaults.MAX_IO_CONCURRENCY})")  # fmt: skip
    parser.add_argument("--pool", choices=pool_choices(),
                        help="celery backend: the workers' pool kind; threads/gevent for blocking I/O"
                        " (queue distloop.<pool>; embedded cluster: a threads worker)")  # fmt: skip
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress on stderr: a bar on a terminal, else plain lines (default on)")  # fmt: skip
    parser.add_argument("--progress-every", type=positive_seconds, default=defaults.PROGRESS_INTERVAL,
                        metavar="SECONDS",
                        help=f"seconds between plain progress lines ({defaults.PROGRESS_INTERVAL:g})")  # fmt: skip
    parser.add_argument("--forward-output", action=argparse.BooleanOptionalAction, default=None,
                        help="show what f prints or logs on Celery workers, as [host:pid] line "
                             "(default on; DISTLOOP_FORWARD_OUTPUT=0 turns it off)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def main(args: argparse.Namespace) -> int:
    items = parse_range(args.range_text)
    if args.reduce and args.output is not None:  # the file would stay empty, and the value be lost
        raise UsageError("--reduce gives one value, printed on stdout: leave out --output (or --reduce)")
    settings = Settings.from_env(broker_url=check_url(args.broker), forward_output=args.forward_output)
    if args.embedded:
        settings = settings.replace(standing=False)
    if args.backend != "celery":
        return _run(args, items, settings)
    # The embedded cluster (if the job uses one) starts now, and imports Celery while this
    # process imports what sends the job; the backend adopts it (distloop.worker.early).
    embedded = settings.replace(pool=args.pool) if args.pool in defaults.POOLS else settings
    with started_early(args.workers, (args.target.rpartition(":")[0],), embedded):
        return _run(args, items, settings)


def _run(args: argparse.Namespace, items: range, settings: Settings) -> int:
    from distloop.api import new_job_id, run_job
    from distloop.cli.output import close_output, emit, open_output, stdout_to_stderr
    from distloop.progress import job_line, progress_for

    output = open_output(args.output) if args.output is not None else None
    job_id = new_job_id()  # announced on stderr as the job starts, before any result
    findable = args.backend == "celery" and settings.broker_url is not None
    announce = job_line(job_id, args.target, range_length(items), findable=findable)
    progress = progress_for(
        args.progress, total_items=range_length(items), every=args.progress_every, announce=announce
    )
    try:
        with stdout_to_stderr(args.json):
            report = run_job(
                args.target, items, backend=args.backend, reduce=args.reduce, chunk_size=args.chunk_size,
                workers=args.workers, on_error=args.on_error, settings=settings, output=output,
                progress=progress, timeout=args.timeout, io_concurrency=args.io_concurrency, pool=args.pool,
                job_id=job_id,
            )  # fmt: skip
    except ChunkFailed as exc:
        if exc.remote_traceback:
            print(exc.remote_traceback.rstrip(), file=sys.stderr)
        raise
    finally:
        if output is not None:
            close_output(output)
        if progress is not None:
            progress.close()
    emit(args, report)
    return 1 if report.errors else 0
