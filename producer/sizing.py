"""Chunk sizes from the function's measured cost per item.

Celery spends 1-4 ms of CPU per message on a 2-core machine, so a chunk must
hold far more work than that, yet a job needs enough chunks to balance uneven
items. The planner sizes each chunk as it is sent: about
:data:`defaults.TARGET_CHUNK_SECONDS` of work by the latest cost estimate
(a probe first, then the chunks that finished), at most an equal share of what
remains (guided self-scheduling, so the last chunks are small and nothing
straggles), and at least :data:`defaults.MIN_CHUNKS_PER_WORKER` per worker.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from tasks import defaults
from tasks.kernel import ChunkResult, ChunkSpec


def probe_cost(fn: Callable[..., Any], r: range) -> float:
    """Seconds per item of ``fn`` over the first items of ``r``, run in this process.

    Stops after :data:`defaults.PROBE_SECONDS` or :data:`defaults.PROBE_MAX_ITEMS`
    items. An item that raises ends the probe: the loop itself will report it.
    """
    spent = 0.0
    count = 0
    for i in r[: defaults.PROBE_MAX_ITEMS]:
        started = time.perf_counter()
        try:
            fn(i)
        except Exception:
            break
        spent += time.perf_counter() - started
        count += 1
        if spent >= defaults.PROBE_SECONDS:
            break
    return spent / count if count else 0.0


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
        self._measured_items = 0
        self._measured_seconds = 0.0
        self.first_size = fixed or auto_chunk_size(len(r), cost, workers)
        self.sent = 0  # chunks handed out so far
        self.first_index = first_index
        self.offset = 0  # items handed out so far

    def observe(self, result: ChunkResult) -> None:
        """Fold a finished chunk's timing into the cost estimate."""
        if result.items and result.seconds > 0:
            self._measured_items += result.items
            self._measured_seconds += result.seconds
            self.cost = self._measured_seconds / self._measured_items

    def next_size(self, remaining: int) -> int:
        if self.fixed:
            return self.fixed
        size = self.first_size
        if self.cost > 0:
            size = min(size, max(1, int(defaults.TARGET_CHUNK_SECONDS / self.cost)))
            floor = max(1, math.ceil(defaults.MIN_CHUNK_SECONDS / self.cost))
        else:
            floor = 1
        share = math.ceil(remaining / (2 * self.workers))  # guided: shrink toward the end
        return max(1, min(size, max(share, floor), remaining))

    def __iter__(self) -> Iterator[ChunkSpec]:
        total = len(self.range)
        while self.offset < total:
            size = self.next_size(total - self.offset)
            part = self.range[self.offset : self.offset + size]
            yield ChunkSpec(index=self.first_index + self.sent, start=part.start, stop=part.stop, step=part.step)
            self.sent += 1
            self.offset += size

    def estimated_chunks(self) -> int:
        """Chunks the job will have by the current estimate (exact once all are sent)."""
        count, offset, total = self.sent, self.offset, len(self.range)
        while offset < total:
            offset += self.next_size(total - offset)
            count += 1
        return count

    def window(self) -> int:
        """Chunks to keep in flight: a few per worker, many when chunks are tiny."""
        seconds = self.first_size * self.cost
        if seconds and seconds < defaults.MIN_CHUNK_SECONDS:
            return 1024
        return defaults.MIN_CHUNKS_PER_WORKER * self.workers
