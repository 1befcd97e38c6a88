"""Finishing a job whose producer died: only the chunks without a result run again.

The job's ledger in Redis holds its description (target, range, chunk size,
reduce op, on-error mode, timeout, output file) and every finished chunk's
result, until the job completes. Resuming replays the stored results through a
fresh assembler, in loop order, and dispatches the missing chunks as usual, so
the output is the same as that of an uninterrupted run.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from distloop.api import JobReport
from distloop.assemble import Assembler, JsonLinesSink, ListSink
from distloop.backends import get_backend
from distloop.backends.base import JobSpec
from distloop.dispatch import Progress, run_chunks
from distloop.ranges import range_length
from distloop.sizing import ChunkPlanner
from distloop.tasks.core.errors import UsageError
from distloop.tasks.core.settings import Settings, mask_url

#: Ledger fields that are the JobSpec's own, not free-form meta.
SPEC_FIELDS = ("target", "reduce", "on_error", "timeout", "state", "checkpoint", "io_concurrency", "fan_out")


@dataclass
class Resumed:
    """A resumed job: its report, its stored description, how many chunks ran again."""

    report: JobReport
    meta: dict[str, Any]
    rerun_chunks: int


def resume_job(
    job_id: str,
    settings: Settings,
    *,
    open_output: Callable[[str], IO[str]] | None = None,
    progress: Progress | None = None,
    backend: str = "celery",
) -> Resumed:
    """Finish job ``job_id`` from its ledger.

    When the original run wrote a file, ``open_output(path)`` opens it again and
    the whole result is written anew (closed before returning).
    """
    if settings.broker_url is None:
        raise UsageError(
            "resume needs --broker URL (or DISTLOOP_BROKER_URL): an embedded cluster's Redis ends with its run"
        )
    engine = get_backend(backend, settings)
    output: IO[str] | None = None
    try:
        stored = engine.stored_job(job_id)
        if stored is None:
            raise UsageError(
                f"no job {job_id!r} in Redis at {mask_url(settings.broker_url)}:"
                " it finished, was cancelled, expired, or never existed"
            )
        meta, done = stored.meta, stored.done
        if "range" not in meta or "chunk_size" not in meta:
            raise UsageError(f"job {job_id!r} was not started by `distloop run` over a range: it cannot be resumed")
        items = range(*meta["range"])
        size = int(meta["chunk_size"])
        checkpoint = meta.get("checkpoint") or {}
        if meta.get("output") and "output_offset" in checkpoint:
            output = reopen_at(meta["output"], int(checkpoint["output_offset"]))
        elif meta.get("output") and open_output is not None:
            output = open_output(meta["output"])
        sink = JsonLinesSink(output) if output is not None else ListSink()
        assembler = Assembler(meta.get("reduce"), meta.get("on_error", "raise"), sink)
        if checkpoint:
            assembler.restore(checkpoint)  # chunks below checkpoint["next"] are already emitted
        for stored_result in sorted(done, key=lambda r: r.index):
            assembler.add(stored_result)
        # Below the checkpoint every chunk is done: compared, not listed (a long job has millions).
        emitted, finished = int(checkpoint.get("next", 0)), {r.index for r in done}
        job = JobSpec(
            job_id, meta["target"], meta.get("reduce"), meta.get("on_error", "raise"), meta.get("timeout"),
            {k: v for k, v in meta.items() if k not in SPEC_FIELDS}, meta.get("io_concurrency"), meta.get("fan_out"),
        )  # fmt: skip
        started = time.perf_counter()
        planned = [c for i, c in sorted(stored.plan.items()) if i >= emitted and i not in finished]
        # Chunks never sent: the rest of the range after the last chunk sent, in chunks of the job's size.
        last = max(stored.plan, default=-1)
        rest = range(stored.plan[last].stop, items.stop, items.step) if last >= 0 else items
        planner = ChunkPlanner(rest, engine.workers, 0.0, fixed=size, first_index=last + 1)
        run_chunks(engine, job, itertools.chain(planned, planner), assembler, progress=progress)
        wall = time.perf_counter() - started
    finally:
        engine.close()
        if output is not None:
            output.close()
    result = assembler.value if job.reduce else (sink.values if isinstance(sink, ListSink) else None)
    report = JobReport(
        job_id, engine.name, range_length(items), last + 1 + planner.sent, size, wall, result,
        assembler.errors, assembler.hosts, engine.startup_s,
    )  # fmt: skip
    return Resumed(report, meta, len(planned) + planner.sent)


def reopen_at(path: str, offset: int) -> IO[str]:
    """The job's output file, cut back to the length it had at the checkpoint."""
    try:
        stream = open(path, "r+", encoding="utf-8")  # noqa: SIM115 - closed by resume_job
    except OSError as exc:
        raise UsageError(f"cannot resume: the job's output file {path}: {exc.strerror}") from None
    stream.truncate(offset)
    stream.seek(offset)
    return stream
