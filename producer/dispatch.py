"""The one dispatch path: feed chunks to a backend within a window, assemble results."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

from producer.assemble import Assembler
from producer.backend import Backend, JobSpec
from tasks.kernel import ChunkResult, ChunkSpec

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
    window: int | None = None,
    progress: Progress | None = None,
    observe: Observer | None = None,
    poll: float = 0.5,
) -> None:
    """Run every chunk of ``chunks`` on ``backend`` and feed the results to ``assembler``.

    On any error or interruption the job's unstarted chunks are cancelled before
    the exception propagates.
    """
    window = window or window_for(backend)
    in_flight: set[int] = set()
    backend.open_job(job)
    try:
        exhausted = False
        while True:
            if not exhausted and len(in_flight) < window:
                batch = list(itertools.islice(chunks, window - len(in_flight)))
                exhausted = len(batch) < window - len(in_flight)
                if batch:
                    backend.submit(job, batch)
                    in_flight.update(c.index for c in batch)
            if not in_flight:
                break
            for result in backend.wait(job, poll):
                if result.index in in_flight:
                    in_flight.discard(result.index)
                    if observe is not None:
                        observe(result)
                    assembler.add(result)
                    if progress is not None:
                        progress(assembler)
    except BaseException:
        backend.cancel(job)
        raise
    finally:
        backend.close_job(job)
