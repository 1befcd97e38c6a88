"""Show the workers online, the queue depth and, for a JOB, its chunks done, running, queued and failed.

Reads Redis only: the workers' heartbeats, the broker's queue and the job's ledger.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from distloop.cli.options import check_url
from distloop.status import collect
from distloop.tasks.core.settings import Settings

NAME = "status"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB", nargs="?", help="a job id (printed by `distloop run`)")
    parser.add_argument("--broker", help="Redis URL of the workers (default: DISTLOOP_BROKER_URL or local Redis)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def render(status: dict[str, Any]) -> str:
    """The text form of :func:`collect`'s data."""
    lines = [f"broker   {status['broker']}"]
    workers = status["workers"]
    lines.append(f"workers  {len(workers)} online, {status['processes']} processes")
    lines += [
        f"  {w['host']}  concurrency {w['concurrency']}  pid {w['pid']}"
        f"  task events {'on' if w['task_events'] else 'off'}"
        for w in workers
    ]
    lines.append(f"queue    {status['queue']['name']}: {status['queue']['depth']} chunks waiting")
    job = status.get("job")
    if job and job["state"] != "running":
        ended = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["ended_at"]))
        how = "finished" if job["state"] == "done" else f"stopped before its end ({job['state']})"
        lines.append(f"job      {job['job_id']}  {job['target']}  {job['items']} items: {how} at {ended}")
    elif job:
        lines.append(
            f"job      {job['job_id']}  {job['target']}  {job['items']} items in {job['chunks']} chunks"
            f" of {job['chunk_size']}"
        )
        pct = 100.0 * job["done"] / job["chunks"] if job["chunks"] else 100.0
        lines.append(
            f"  chunks {job['done']}/{job['chunks']} done ({pct:.0f}%), {job['running']} running,"
            f" {job['queued']} queued, {job['unsent']} not yet sent, {job['failed']} failed"
        )
        lines += [f"  running on {host}: {n}" for host, n in sorted(job["running_on"].items())]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    status = collect(Settings.from_env(broker_url=check_url(args.broker)), args.job)
    print(json.dumps(status) if args.json else render(status))
    return 0
