"""A job's tail: re-send its slowest last chunks to idle workers (speculative copies).

Once every chunk of a job is sent and some worker processes have nothing left to
take, the last chunks still running decide the job's wall time: one on a host that is
slower, or busy with something else, keeps everyone waiting. A chunk is a pure
function of its range, so a second copy is harmless: the longest-running chunk whose
copy would be expected to finish first (by each host's measured seconds per item)
goes again, straight to an idle worker's own queue (Celery's ``worker_direct``,
``<hostname>.dq2``), at most once. The ledger keeps the first result and ignores the
second (:mod:`distloop.tasks.store.jobs`); when the first arrives, the other copy is
revoked with Celery's ``revoke(terminate=True)`` (both copies share the task id, so
one revoke reaches whichever still runs or waits, on any worker).

The copy is an ordinary chunk message: late acks, redelivery of a dead worker's chunks
and its row in Flower stay as they are.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from distloop.sizing import HostSpeeds
from distloop.tasks.kernel import ChunkResult, ChunkSpec

#: What a copy costs besides its items: a message, a worker picking it up (seconds).
COPY_OVERHEAD_S = 0.05


class Stragglers:
    """For one job: which chunks were sent twice, and where a next copy should go."""

    def __init__(self) -> None:
        self.speeds = HostSpeeds()
        #: chunk index -> (host that ran it first, host its copy went to)
        self.copies: dict[int, tuple[str, str]] = {}

    @property
    def hosts(self) -> set[str]:
        """Hosts whose own queue may hold a copy."""
        return {target for _, target in self.copies.values()}

    def observe(self, result: ChunkResult) -> bool:
        """Learn from a result; True if the chunk had a copy (the other one is to be revoked)."""
        self.speeds.observe(result)
        return result.index in self.copies

    def pick(
        self,
        in_flight: Mapping[int, ChunkSpec],
        running: Mapping[int, Mapping[str, Any]],
        workers: Mapping[str, Mapping[str, Any]],
        now: float | None = None,
    ) -> list[tuple[ChunkSpec, str]]:
        """The chunks to send again now, each with the live worker (hostname) to send it to.

        ``running`` is the ledger's chunk index -> {"host", "at"}; ``workers`` the live
        workers' heartbeats (with ``concurrency``).
        """
        pending = [i for i in in_flight if i not in self.copies]
        if any(i not in running for i in pending):
            return []  # chunks still wait in the queue: idle workers will take those first
        now = time.time() if now is None else now
        busy: Counter[str] = Counter()
        for i in in_flight:
            if i in self.copies:
                busy.update(self.copies[i])
            elif i in running:
                busy[str(running[i].get("host", ""))] += 1
        idle = {h: int(w.get("concurrency", 1)) - busy[h] for h, w in workers.items()}
        # Only hosts that returned a result of this job (they can run its function), the
        # fastest first; among equals the one with the most idle processes.
        served = [h for h, n in idle.items() if n > 0 and self.speeds.cost(h) is not None]
        hosts = sorted(served, key=lambda h: (self.speeds.cost(h) or 0.0, -idle[h]))
        # Longest-running first.
        candidates = sorted(pending, key=lambda i: float(running[i].get("at", now)))
        chosen: list[tuple[ChunkSpec, str]] = []
        for index in candidates:
            origin = str(running[index].get("host", ""))
            elapsed = max(0.0, now - float(running[index].get("at", now)))
            target = next((h for h in hosts if h != origin and idle[h] > 0), None)
            if target is None:
                break
            if not self._worth_it(len(in_flight[index]), origin, target, elapsed):
                continue
            idle[target] -= 1
            self.copies[index] = (origin, target)
            chosen.append((in_flight[index], target))
        return chosen

    def _worth_it(self, items: int, origin: str, target: str, elapsed: float) -> bool:
        """Whether a copy on ``target`` is expected to finish before the run on ``origin``."""
        mean = self.speeds.mean_cost()
        if mean is None:
            return False  # nothing measured yet: no basis to call anything slow
        expected = items * (self.speeds.cost(origin) or mean)
        # A chunk overrunning its expected time is as far from done as it has run.
        left = expected - elapsed if elapsed < expected else elapsed
        return items * (self.speeds.cost(target) or mean) + COPY_OVERHEAD_S < left
