"""What ``run`` and ``resume`` print or write: the output file, the results, the summary line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import IO, Any

from distloop.api import JobReport
from distloop.tasks.core import codec
from distloop.tasks.core.errors import UsageError


def open_output(path: str) -> IO[str]:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--output {path}: directory {folder} does not exist")
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--output {path}: {exc.strerror}") from None


@contextlib.contextmanager
def stdout_to_stderr(active: bool) -> Iterator[None]:
    """With ``--json``, stdout carries the one JSON object only: while the job runs, anything
    written to it (``f`` printing on a local backend, forwarded worker output, a process
    pool's children) goes to stderr instead, at the file-descriptor level.
    """
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


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
        print(codec.to_json(payload))
        return
    if args.output:
        pass
    elif args.reduce:
        print(codec.to_json(report.result))
    else:
        for value in report.result:
            print(codec.to_json(value))
    where = f", written to {args.output}" if args.output else ""
    failed = f", {len(report.errors)} failed" if report.errors else ""
    print(
        f"distloop: {report.items} items in {report.chunks} chunks on {report.backend}"
        f" in {report.wall_s:.3f} s{failed}{where} (job {report.job_id})",
        file=sys.stderr,
    )
