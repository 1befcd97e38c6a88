"""The one dispatch path: feed chunks to a backend within a window, assemble results."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

from distloop.assemble import Assembler
from distloop.backends.base import Backend, JobSpec
from distloop.tasks.core import defaults
from distloop.tasks.kernel import ChunkResult, ChunkSpec

#: Called after each chunk result with the assembler (progress display).
Progress = Callable[[Assembler], None]
#: Called with each chunk result as it arrives (the planner learns the cost).
Observer = Callable[[ChunkResult], None]


def window_for(backend: Backend) -> int:
    """Chunks in flight at once: enough to keep every worker busy, bounded for memory."""
    return max(8 * backend.workers, 64)


def run_chunks(
    backend: Backend,
    job: JobSpec,
    chunks: Iterator[ChunkSpec],
    assembler: Assembler,
    *,
    window: int | Callable[[], int] | None = None,
    progress: Progress | None = None,
    observe: Observer | None = None,
    poll: float = 0.5,
    recovery_interval: float = defaults.RECOVERY_INTERVAL,
) -> None:
    """Run every chunk of ``chunks`` on ``backend`` and feed the results to ``assembler``.

    On any error or interruption the job's unstarted chunks are cancelled before
    the exception propagates.
    """
    fixed_window = window if isinstance(window, int) else window_for(backend)
    window_now = window if callable(window) else (lambda: fixed_window)
    in_flight: dict[int, ChunkSpec] = {}
    next_check = time.monotonic() + recovery_interval
    next_tail = 0.0
    backend.open_job(job)
    if progress is not None:
        progress(assembler)  # the job has started: its id and totals, before the first result
    try:
        exhausted = False
        while True:
            size = window_now()
            room = size - len(in_flight)
            # After a failure (on_error "raise") only the chunks before it still matter:
            # the error reported is the lowest-index one, as in a serial loop.
            if assembler.failure is not None:
                exhausted = True
                in_flight = {i: c for i, c in in_flight.items() if i < assembler.failure.index}
            # Refill only once half the window has drained: publishing is batched, so a
            # few large batches cost far less than a message at a time.
            if not exhausted and len(in_flight) <= size // 2:
                batch = list(itertools.islice(chunks, room))
                exhausted = len(batch) < room
                if batch:
                    backend.submit(job, batch)
                    in_flight.update((c.index, c) for c in batch)
            if not in_flight:
                assembler.raise_failure()  # none pending once every chunk is in; this is a safeguard
                break
            if time.monotonic() >= next_check:
                resend_lost(backend, job, in_flight)
                checkpoint = assembler.checkpoint()
                if checkpoint is not None:
                    backend.collected(job, checkpoint)
                next_check = time.monotonic() + recovery_interval
            # The tail: every chunk is sent and fewer remain than there are workers.
            tail = exhausted and len(in_flight) < backend.workers
            if tail and time.monotonic() >= next_tail:
                backend.stragglers(job, in_flight)
                next_tail = time.monotonic() + defaults.STRAGGLER_INTERVAL
            for result in backend.wait(job, min(poll, defaults.STRAGGLER_INTERVAL) if tail else poll):
                if result.index in in_flight:
                    del in_flight[result.index]
                    if observe is not None:
                        observe(result)
                    assembler.add(result)
                    if progress is not None:
                        progress(assembler)
    except BaseException as exc:
        backend.cancel(job, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
        raise
    finally:
        backend.close_job(job)


def resend_lost(backend: Backend, job: JobSpec, in_flight: dict[int, ChunkSpec]) -> None:
    """Send again the chunks in flight that the backend says are lost (a dead worker, a restarted Redis)."""
    lost = backend.lost(job, in_flight.keys())
    if lost:
        backend.submit(job, [in_flight[i] for i in lost])
