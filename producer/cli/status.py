"""Show the workers online, the queue depth and, for a JOB, its chunks done, running, queued and failed.

Without JOB, it lists the live and recent jobs (newest first): id, state, chunks done of
all, age, target. Reads Redis only: the workers' heartbeats, the broker's queue and the
jobs' ledgers.
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
    parser.add_argument("job", metavar="JOB", nargs="?",
                        help="a job id (`distloop run` prints it as it starts); else list the jobs")  # fmt: skip
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
            + (f", {job['lost']} lost (being sent again)" if job.get("lost") else "")
        )
        lines += [f"  running on {host}: {n}" for host, n in sorted(job["running_on"].items())]
    if "jobs" in status:
        lines += render_jobs(status["jobs"])
    return "\n".join(lines)


def render_jobs(jobs: list[dict[str, Any]], now: float | None = None) -> list[str]:
    """The jobs table: one line per job, newest first."""
    if not jobs:
        return ["jobs     none in this Redis (a finished job is listed for a day)"]
    now = time.time() if now is None else now
    lines = [
        f"jobs     {len(jobs)}, newest first",
        f"  {'JOB':<14} {'STATE':<12} {'DONE/CHUNKS':>11}  {'AGE':>7}  TARGET",
    ]
    for job in jobs:
        created = job.get("created_at") or job.get("ended_at")
        age = age_text(now - float(created)) if created else "?"
        done = f"{job.get('done', '?')}/{job.get('chunks', '?')}"
        state = str(job.get("state"))
        lines.append(f"  {job['job_id']:<14} {state:<12} {done:>11}  {age:>7}  {job.get('target')}")
    return lines


def age_text(seconds: float) -> str:
    """``42 s``, ``7 min``, ``3 h``, ``2 d``."""
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def main(args: argparse.Namespace) -> int:
    status = collect(Settings.from_env(broker_url=check_url(args.broker)), args.job)
    print(json.dumps(status) if args.json else render(status))
    return 0
