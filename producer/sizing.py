"""Chunk sizes from the function's measured cost per item.

Celery spends 1-4 ms of CPU per message on a 2-core machine, so a chunk must
hold far more work than that, yet a job needs enough chunks to balance uneven
items. The planner sizes each chunk as it is sent. Until the first chunk comes
back the cost is unknown, and one small probe per worker process is sent
(:data:`defaults.PROBE_CHUNK_ITEMS` items), run where the loop runs: the function is
never called in the producer's own process. Then each chunk holds about
:data:`defaults.TARGET_CHUNK_SECONDS` of work by the latest cost estimate, at
most an equal share of what remains (guided self-scheduling, so the last chunks
are small and nothing straggles), and the job keeps at least
:data:`defaults.MIN_CHUNKS_PER_WORKER` chunks per worker.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from distloop.ranges import range_length
from distloop.tasks.core import defaults
from distloop.tasks.kernel import ChunkResult, ChunkSpec


def auto_chunk_size(items: int, cost: float, workers: int) -> int:
    """The size of a job's first chunks: the time target, capped for balance."""
    if items <= 0:
        return 1
    by_balance = max(1, items // (defaults.MIN_CHUNKS_PER_WORKER * max(1, workers)))
    by_time = int(defaults.TARGET_CHUNK_SECONDS / cost) if cost > 0 else by_balance
    return max(1, min(by_balance, by_time))


class ChunkPlanner:
    """Splits a range lazily into chunks sized from the running cost estimate.

    With ``fixed`` set (``--chunk-size N``) every chunk has that size.
    """

    def __init__(self, r: range, workers: int, cost: float, fixed: int | None = None, first_index: int = 0) -> None:
        self.range = r
        self.workers = max(1, workers)
        self.fixed = fixed
        self.cost = cost
        self.first_size = fixed or auto_chunk_size(range_length(r), cost, workers)  # the cap on every chunk
        self.largest = 0  # largest chunk handed out
        self.sent = 0  # chunks handed out so far
        self.first_index = first_index
        self.offset = 0  # items handed out so far

    def observe(self, result: ChunkResult) -> None:
        """Fold a finished chunk's timing into the cost estimate (recent chunks weigh most)."""
        if result.items and result.seconds > 0:
            latest = result.seconds / result.items
            self.cost = latest if self.cost <= 0 else 0.5 * self.cost + 0.5 * latest

    def next_size(self, remaining: int) -> int:
        if self.fixed:
            return self.fixed
        if self.cost <= 0:  # nothing measured yet: a small probe chunk
            return max(1, min(defaults.PROBE_CHUNK_ITEMS, self.first_size, remaining))
        size = min(self.first_size, max(1, int(defaults.TARGET_CHUNK_SECONDS / self.cost)))
        # The floor keeps the last chunks worth a message, but stays under a quarter of the
        # balance cap: an early estimate can be far too low (items that grow costlier), and
        # a floor made from it would stop the tail from shrinking at all.
        floor = max(1, min(math.ceil(defaults.MIN_CHUNK_SECONDS / self.cost), self.first_size // 4))
        share = math.ceil(remaining / (2 * self.workers))  # guided: shrink toward the end
        return max(1, min(size, max(share, floor), remaining))

    def __iter__(self) -> Iterator[ChunkSpec]:
        total = range_length(self.range)
        while self.offset < total:
            size = self.next_size(total - self.offset)
            part = self.range[self.offset : self.offset + size]
            yield ChunkSpec(index=self.first_index + self.sent, start=part.start, stop=part.stop, step=part.step)
            self.largest = max(self.largest, size)
            self.sent += 1
            self.offset += size

    def estimated_chunks(self) -> int:
        """Chunks the job will have by the current estimate (exact once all are sent)."""
        count, offset, total = self.sent, self.offset, range_length(self.range)
        if self.fixed or self.cost <= 0:  # a fixed size, or nothing measured yet: the balance cap
            return count + -(-(total - offset) // (self.fixed or self.first_size))
        for _ in range(256):  # the guided tail, chunk by chunk; called per result, so bounded
            if offset >= total:
                return count
            offset += self.next_size(total - offset)
            count += 1
        return count + -(-(total - offset) // self.next_size(total - offset))

    def window(self) -> int:
        """Chunks to keep in flight: a few per worker, many when chunks are tiny."""
        if not self.fixed and self.cost <= 0:
            # Nothing measured yet: one probe per worker process. Chunks sized from
            # its timing follow as soon as the first comes back.
            return self.workers
        size = self.fixed or self.first_size
        if self.cost > 0 and size * self.cost < defaults.MIN_CHUNK_SECONDS:
            return defaults.MAX_WINDOW
        # Refilled at half (see dispatch): at least one running and one queued per process.
        return defaults.MIN_CHUNKS_PER_WORKER * self.workers
