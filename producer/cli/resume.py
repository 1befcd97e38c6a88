"""Finish a job whose producer was killed: re-run only the chunks without a result.

JOB is the job id that `distloop run` printed. The job's Redis and workers must
still be there: resume works with --broker, not with the embedded cluster, whose
Redis ends with the run that started it.
"""

from __future__ import annotations

import argparse
import sys

from distloop.cli.options import check_url, pool_choices
from distloop.cli.output import emit, open_output, stdout_to_stderr
from distloop.progress import progress_for
from distloop.resume import resume_job
from distloop.tasks.core.settings import Settings

NAME = "resume"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB", help="the job id printed by `distloop run`")
    parser.add_argument("--broker", help="Redis URL of the job's broker (default: DISTLOOP_BROKER_URL)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress on stderr (default: when stderr is a terminal)")  # fmt: skip
    parser.add_argument("--forward-output", action=argparse.BooleanOptionalAction, default=None,
                        help="show what f prints or logs on the workers (default on)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--pool", choices=pool_choices(),
                        help="the pool kind of the job's workers, as given to `run` (default prefork)")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    settings = Settings.from_env(broker_url=check_url(args.broker), forward_output=args.forward_output, pool=args.pool)
    announce = f"distloop: resuming job {args.job}"
    progress = progress_for(args.progress, total_items=0, announce=announce)
    try:
        with stdout_to_stderr(args.json):
            resumed = resume_job(args.job, settings, open_output=open_output, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    args.output = resumed.meta.get("output")
    args.reduce = resumed.meta.get("reduce")
    emit(args, resumed.report)
    if not args.json:
        print(f"distloop: resumed job {args.job}: re-ran {resumed.rerun_chunks} of {resumed.report.chunks} chunks",
              file=sys.stderr)  # fmt: skip
    return 1 if resumed.report.errors else 0
