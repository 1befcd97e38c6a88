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

Hosts differ in speed. Results say which host ran them and how long it took, so the
planner knows each host's seconds per item (:class:`HostSpeeds`). A shared queue
cannot choose the host a chunk lands on, so the tail is shrunk for all: the guided
share is scaled by the slowest host's speed against the mean, so the last chunk the
slowest host takes ends about when the others run dry (``by_host``; the straggler
copies of :mod:`distloop.backends.stragglers` cover what is left).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from distloop.tasks.core import defaults
from distloop.tasks.kernel import ChunkResult, ChunkSpec


def auto_chunk_size(items: int, cost: float, workers: int) -> int:
    """The size of a job's first chunks: the time target, capped for balance."""
    if items <= 0:
        return 1
    by_balance = max(1, items // (defaults.MIN_CHUNKS_PER_WORKER * max(1, workers)))
    by_time = int(defaults.TARGET_CHUNK_SECONDS / cost) if cost > 0 else by_balance
    return max(1, min(by_balance, by_time))


class HostSpeeds:
    """Each host's measured seconds per item (one worker process), from its chunk results."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._items: dict[str, int] = {}

    def observe(self, result: ChunkResult) -> None:
        if result.host and result.items and result.seconds > 0 and not result.fatal:
            self._seconds[result.host] = self._seconds.get(result.host, 0.0) + result.seconds
            self._items[result.host] = self._items.get(result.host, 0) + result.items

    def cost(self, host: str) -> float | None:
        """Seconds per item on ``host``, None until one of its chunks came back."""
        items = self._items.get(host)
        return self._seconds[host] / items if items else None

    def mean_cost(self) -> float | None:
        """Seconds per item of the mean host speed (items per second averaged over hosts)."""
        costs = [c for c in map(self.cost, self._items) if c]
        return len(costs) / sum(1 / c for c in costs) if costs else None

    def slowest_share(self) -> float:
        """The slowest host's speed over the mean host's (1.0 with fewer than two hosts measured)."""
        costs = [c for c in map(self.cost, self._items) if c]
        if len(costs) < 2:
            return 1.0
        return (1 / max(costs)) / (sum(1 / c for c in costs) / len(costs))


class ChunkPlanner:
    """Splits a range lazily into chunks sized from the running cost estimate.

    With ``fixed`` set (``--chunk-size N``) every chunk has that size.
    """

    def __init__(self, r: range, workers: int, cost: float, fixed: int | None = None, first_index: int = 0) -> None:
        self.range = r
        self.workers = max(1, workers)
        self.fixed = fixed
        self.cost = cost
        self.first_size = fixed or auto_chunk_size(len(r), cost, workers)  # the cap on every chunk
        self.largest = 0  # largest chunk handed out
        self.sent = 0  # chunks handed out so far
        self.first_index = first_index
        self.offset = 0  # items handed out so far
        self.by_host = False  # shrink the tail for the slowest host measured
        self.speeds = HostSpeeds()

    def observe(self, result: ChunkResult) -> None:
        """Fold a finished chunk's timing into the cost estimate (recent chunks weigh most)."""
        if result.items and result.seconds > 0:
            latest = result.seconds / result.items
            self.cost = latest if self.cost <= 0 else 0.5 * self.cost + 0.5 * latest
        self.speeds.observe(result)

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
        share = remaining / (2 * self.workers)  # guided: shrink toward the end
        if self.by_host:  # the slowest host's last chunk ends about with the others'
            share *= self.speeds.slowest_share()
        share = math.ceil(share)
        return max(1, min(size, max(share, floor), remaining))

    def __iter__(self) -> Iterator[ChunkSpec]:
        total = len(self.range)
        while self.offset < total:
            size = self.next_size(total - self.offset)
            part = self.range[self.offset : self.offset + size]
            yield ChunkSpec(index=self.first_index + self.sent, start=part.start, stop=part.stop, step=part.step)
            self.largest = max(self.largest, size)
            self.sent += 1
            self.offset += size

    def estimated_chunks(self) -> int:
        """Chunks the job will have by the current estimate (exact once all are sent)."""
        count, offset, total = self.sent, self.offset, len(self.range)
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
