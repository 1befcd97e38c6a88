"""What ``run`` and ``resume`` print or write: the output file, the results, the summary line."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import stat
import sys
from collections.abc import Iterator
from typing import IO, Any

from distloop.api import JobReport
from distloop.cli.options import kernel_devices
from distloop.tasks.core import codec
from distloop.tasks.core.errors import UsageError


def open_output(path: str) -> IO[str]:
    """Open ``--output`` for writing, or refuse it in one line before any work runs.

    Refused: a missing folder, a directory, a file of the kernel's (``/proc``, ``/sys``:
    writing results there would change the system, or fail), a FIFO nobody reads
    (opening it would hang), and whatever refuses an empty write (``/dev/full``).
    """
    if not path.strip():
        raise UsageError("--output must not be empty: give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--output {path}: directory {folder} does not exist")
    try:
        found = os.stat(path)
    except FileNotFoundError:
        found = None
    except OSError as exc:
        raise UsageError(f"--output {path}: {exc.strerror}") from None
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    if found is not None:
        if stat.S_ISDIR(found.st_mode):
            raise UsageError(f"--output {path}: is a directory")
        if found.st_dev in kernel_devices():
            raise UsageError(f"--output {path}: is a kernel interface, not a file for results")
        if stat.S_ISFIFO(found.st_mode):
            flags |= os.O_NONBLOCK  # fails at once (ENXIO) when no process reads it
    try:
        probe = os.open(path, flags, 0o666)
        try:
            os.write(probe, b"")  # an empty write: what cannot take results fails here, not mid-job
            return open(path, "w", encoding="utf-8")  # opened while the probe holds a FIFO's reader
        finally:
            os.close(probe)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise UsageError(f"--output {path}: a FIFO that no process reads") from None
        raise UsageError(f"--output {path}: {exc.strerror}") from None


def close_output(stream: IO[str]) -> None:
    """Close ``--output``; what the last write could not flush is one line, not a traceback."""
    try:
        stream.close()
    except OSError as exc:
        raise UsageError(f"--output {stream.name}: {exc.strerror}") from None


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
