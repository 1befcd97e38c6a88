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

Waiting from computing: every chunk reports its wall time (``seconds``) and the CPU
time of the thread that ran it (``cpu_seconds``, :func:`time.thread_time`). An item
whose CPU share is under :data:`defaults.WAITING_CPU_SHARE` waits (network, disk,
sleep): the planner says so (:attr:`ChunkPlanner.waiting`), and the job's report and
``distloop bench`` show the CPU used against the wall time. For waiting items the
slots that keep a job busy are not cores but threads (the thread backend, a
``--pool threads`` worker: ``workers`` counts them) or awaited items:

- an ``async def`` target (``io_concurrency`` set) gets chunks of at least
  ``io_concurrency`` items, probes included (at most an equal share per worker), so
  that each process's event loop has its bound's worth of items to await; its
  per-item cost is measured over chunks that ran concurrently, so it is already the
  amortised cost;
- blocking waits need one chunk in flight per thread: ``workers`` is the thread count.
  On threads (``threaded``: the thread backend, a threads or gevent pool) the probes, one
  per thread, share the range (at most :data:`defaults.PROBE_CHUNK_ITEMS` items each): 400
  items on 64 threads go out as 58 chunks of 7 at once, no probe round first; once the
  chunks say the items wait, what remains is cut once into the same number of chunks per
  slot (thread, or process awaiting many): one, or as many as the time target asks for.
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


def call_chunk_size(items: int, cost: float, workers: int) -> int:
    """The chunk size of a facade's ``map`` over ``items`` calls, whose ``cost`` was measured.

    As :func:`auto_chunk_size`, except that calls so cheap that a balanced chunk holds less
    than :data:`defaults.MIN_CHUNK_SECONDS` of work get fewer, larger chunks, up to one equal
    share per worker: balance gains less than the 3-4 ms each message costs (``Pool.map`` of
    100,000 squares on 2 processes, 40 interleaved rounds: 8 chunks 94 ms, 2 chunks 84 ms).
    The cost is measured over whole earlier calls, not one probe, and a chunk stays under
    the time target.
    (A range job's planner does not do this: its first estimate comes from one small probe.)
    """
    size = auto_chunk_size(items, cost, workers)
    if cost > 0 and items > 0:
        worth = math.ceil(defaults.MIN_CHUNK_SECONDS / cost)  # (under TARGET_CHUNK_SECONDS' size)
        size = max(size, min(worth, math.ceil(items / max(1, workers))))
    return size


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

    def __init__(
        self,
        r: range,
        workers: int,
        cost: float,
        fixed: int | None = None,
        first_index: int = 0,
        io_concurrency: int | None = None,
        threaded: bool = False,
    ) -> None:
        self.range = r
        self.workers = max(1, workers)
        self.fixed = fixed
        self.cost = cost
        self.io_concurrency = io_concurrency  # set for an async target: items awaited at once per chunk
        self.threaded = threaded  # the slots are threads (made for waiting): probes fill them
        self.first_size = fixed or auto_chunk_size(range_length(r), cost, workers)  # the cap on every chunk
        if io_concurrency and not fixed:
            self.first_size = max(self.first_size, self.loop_share(range_length(r)))
        self.cpu_share: float | None = None  # CPU time / wall time of the chunks so far
        self.wait_size: int | None = None  # chunk size for blocking waits, set once they are seen
        self.largest = 0  # largest chunk handed out
        self.sent = 0  # chunks handed out so far
        self.first_index = first_index
        self.offset = 0  # items handed out so far
        self.by_host = False  # shrink the tail for the slowest host measured
        self.fan_out = 1  # items of a chunk run at once (a threads pool's blocking chunks)
        self.speeds = HostSpeeds()

    def loop_share(self, remaining: int) -> int:
        """An async target's least chunk: its bound's worth of items, at most an equal share per worker."""
        return max(1, min(self.io_concurrency or 1, math.ceil(remaining / self.workers)))

    def observe(self, result: ChunkResult) -> None:
        """Fold a finished chunk's timing into the cost estimate (recent chunks weigh most)."""
        if result.items and result.seconds > 0:
            latest = result.seconds / result.items
            self.cost = latest if self.cost <= 0 else 0.5 * self.cost + 0.5 * latest
            share = min(1.0, result.cpu_seconds / result.seconds)
            self.cpu_share = share if self.cpu_share is None else 0.5 * self.cpu_share + 0.5 * share

        self.speeds.observe(result)

    @property
    def waiting(self) -> bool:
        """Whether the items mostly wait (CPU share under :data:`defaults.WAITING_CPU_SHARE`), by what came back."""
        return self.cpu_share is not None and self.cpu_share < defaults.WAITING_CPU_SHARE

    def next_size(self, remaining: int) -> int:
        if self.fixed:
            return self.fixed
        if self.io_concurrency:
            # An event loop per chunk: never fewer items than it awaits at once (nor than a share).
            # The probes take their share of the whole range (one per worker), later chunks of what remains.
            share = self.loop_share(range_length(self.range) if self.cost <= 0 else remaining)
            size = max(self._next_size(remaining), min(share, remaining))
            # Whole rounds of the bound: 250 items awaited 100 at a time wait three times, as 300
            # would. Up, not down: 450 as 400 would leave a ninth chunk for 8 slots to wait on.
            if size < self.io_concurrency:
                return size
            return min(math.ceil(size / self.io_concurrency) * self.io_concurrency, remaining)
        return self._next_size(remaining)

    def _next_size(self, remaining: int) -> int:
        if self.cost <= 0:  # nothing measured yet: a small probe chunk
            if self.threaded:  # threads are there for waits: the probes share the range among them
                most = defaults.PROBE_CHUNK_ITEMS * self.fan_out
                return max(1, min(most, -(-range_length(self.range) // self.workers), remaining))
            return max(1, min(defaults.PROBE_CHUNK_ITEMS, self.first_size, remaining))
        by_time = max(1, int(defaults.TARGET_CHUNK_SECONDS / self.cost))
        if self.waiting and (self.threaded or self.io_concurrency):
            # Waits: one chunk per slot (thread, or process awaiting many) for what remains
            # once the probes said so keeps every slot busy with the fewest messages and
            # gaps between chunks (a slot waits, it does not compute, so there is little
            # to balance); the time target still bounds a chunk. Only where slots wait well:
            # a process that waits on one item at a time gains nothing from it, and on a
            # loaded machine a starved computing chunk can look like a waiting one.
            # The same number of chunks for every slot, as many as the time target asks for
            # (rounded to the nearest: a chunk a little over it beats a slot that waits on an
            # extra chunk while the others are done, 0.7 s against 1.1 s for 8 awaited slots).
            if self.wait_size is None:
                per_slot = math.ceil(remaining / self.workers)
                self.wait_size = math.ceil(per_slot / max(1, round(per_slot / by_time)))
            return max(1, min(self.wait_size, remaining))
        size = min(self.first_size, by_time)
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
        total = range_length(self.range)
        while self.offset < total:
            size = self.next_size(total - self.offset)
            part = self.range[self.offset : self.offset + size]
            chunk = ChunkSpec(index=self.first_index + self.sent, start=part.start, stop=part.stop, step=part.step)
            # Counted before it is handed out: what remains is right for estimates made meanwhile.
            self.largest = max(self.largest, size)
            self.sent += 1
            self.offset += size
            yield chunk

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
