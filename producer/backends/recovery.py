"""Finding chunks a Celery job has lost, so that the producer sends them again.

A chunk is in flight from the moment it is sent until its result is collected.
The producer, which knows every chunk in flight, sends a lost one again (a duplicate
is harmless: one result per index is kept). A chunk is lost when nobody will deliver
it, whatever the cause:

- the ledger says it runs on a host whose heartbeat has expired (the worker died);
- the ledger says it runs on a live host whose heartbeat no longer lists it among
  the tasks it holds (:func:`~distloop.tasks.store.workers.held_by`): its worker let
  go of it without a result, as when the result could not be written while Redis
  restarted (with persistence, the ledger and queue come back, that result does not);
- it has been neither queued (in the shared queue, or in a live worker's own queue,
  where a chunk another worker refused waits), nor held, nor running, nor done for
  ORPHAN_GRACE seconds: its message was taken by a worker that died before starting
  it, or Redis lost the message (restarted from an older snapshot);
- Redis restarted without persistence: the job's ledger is gone, and with it every
  queued message and stored result.

A chunk whose result is stored but that the producer never read (the reply was lost
with the connection) is announced again. And when a job makes no progress for
STALL_SECONDS while workers are alive, the workers themselves are asked (Celery's
``inspect().query_task``) which of its chunks they hold; any other chunk in flight
that is not queued or done goes again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import redis

from distloop.backends.queue import job_queues, queued_messages
from distloop.tasks.core import defaults
from distloop.tasks.store.jobs import JobStore
from distloop.tasks.store.workers import held_by

#: Seconds a chunk may be out of the queue without being held or started before it counts
#: as lost: a busy worker takes a moment between taking a message and starting it.
ORPHAN_GRACE = 10.0
#: Seconds a chunk's stored result may stay unread before it is announced again.
STORED_GRACE = 5.0
#: Seconds past a heartbeat's time a chunk must have started to be missed from it.
HELD_MARGIN = 1.0
#: Seconds without a result, workers alive, before the workers are asked what they hold.
STALL_SECONDS = 30.0

#: Asks the live workers which of these task ids they hold; None if none answered.
AskWorkers = Callable[[list[str]], "set[str] | None"]


class LostChunks:
    """Decides, for one job, which chunks in flight must be sent again."""

    def __init__(
        self, store: JobStore, broker: redis.Redis, job_id: str, meta: dict[str, Any], ask: AskWorkers | None = None
    ) -> None:
        self.store = store
        self.broker = broker
        self.job_id = job_id
        self.meta = meta
        self.ask = ask
        self.queue = str(meta.get("queue") or defaults.QUEUE)  # the shared queue of the job's pool kind
        self._unseen: dict[int, float] = {}  # index -> when first seen nowhere
        self._unread: dict[int, float] = {}  # index -> when first seen stored but not collected
        self._progress_at = time.monotonic()
        #: What the last stall check found: (seconds without progress, chunks sent again).
        self.last_stall: tuple[float, int] | None = None

    def progressed(self) -> None:
        """A result of the job came in."""
        self._progress_at = time.monotonic()

    def task_id(self, index: int) -> str:
        return f"{self.job_id}-{index}"

    def find(self, pending: Collection[int], alive: Mapping[str, dict[str, Any]] | Collection[str]) -> list[int]:
        """Indices among ``pending`` (sent, no result collected) that nobody will deliver.

        ``alive``: the workers alive now, their heartbeats by hostname (or just the
        hostnames, when their heartbeats are not at hand).
        """
        if not pending:
            self._progress_at = time.monotonic()
            return []
        if not self.store.exists(self.job_id):
            # Redis lost the ledger (restart without persistence): queue and results
            # went with it. Write the ledger again, then every pending chunk goes again.
            self.store.create(self.job_id, self.meta)
            self._unseen.clear()
            self._unread.clear()
            return sorted(pending)
        beats = alive if isinstance(alive, Mapping) else {host: {} for host in alive}
        held: set[str] = set()
        for info in beats.values():
            held |= held_by(info) or set()
        running = self.store.running(self.job_id)
        let_go = {i for i, entry in running.items() if not still_held(self.task_id(i), entry, beats)}
        # Entries of chunks no longer pending (collected, or a snapshot's leftovers) just go.
        self.store.forget_running(self.job_id, let_go)
        # A dead worker's own queue is not read: nobody will take a chunk waiting there.
        queues = job_queues(beats.keys(), self.queue)
        queued = {index for _, _, index in queued_messages(self.broker, queues, self.job_id)}
        held_now = {i for i in pending if self.task_id(i) in held}
        # ...unless it waits again in a queue, or another worker holds it (a retry, a redelivery).
        lost = (let_go & set(pending)) - queued - held_now
        candidates = set(pending) - (set(running) - let_go) - queued - lost - held_now
        stored = self.store.has_results(self.job_id, candidates)
        now = time.monotonic()
        self._unread = {i: self._unread.get(i, now) for i in stored}
        unread = {i for i, since in self._unread.items() if now - since >= STORED_GRACE}
        if unread:  # stored, but its announcement never reached us: announce it again
            self.store.announce(self.job_id, unread)
            for index in unread:
                del self._unread[index]
        self._unseen = {i: self._unseen.get(i, now) for i in candidates - stored}
        # Taken off the queue and not started for a while: its worker died holding it.
        orphans = {i for i, since in self._unseen.items() if now - since >= ORPHAN_GRACE}
        for index in orphans:
            del self._unseen[index]
        lost |= orphans
        if not lost and beats and now - self._progress_at >= STALL_SECONDS:
            lost |= self._reconcile(set(pending) - queued - stored, now)
        return sorted(lost)

    def _reconcile(self, unaccounted: set[int], now: float) -> set[int]:
        """No progress for a while: ask the workers; the chunks none holds go again."""
        stalled = now - self._progress_at
        self._progress_at = now  # the next check in STALL_SECONDS, if still no progress
        if not unaccounted:
            self.last_stall = (stalled, 0)
            return set()
        answer = self.ask([self.task_id(i) for i in sorted(unaccounted)]) if self.ask is not None else None
        # No worker answered (or none could be asked): none is known to hold them.
        held = answer or set()
        lost = {i for i in unaccounted if self.task_id(i) not in held}
        self.store.forget_running(self.job_id, lost)
        self.last_stall = (stalled, len(lost))
        return lost


def still_held(task_id: str, entry: dict[str, Any], beats: Mapping[str, dict[str, Any]]) -> bool:
    """Whether the worker that the ledger's running ``entry`` names still holds ``task_id``.

    ``beats``: the live workers' heartbeats by hostname.
    """
    beat = beats.get(entry.get("host", ""))
    if beat is None:
        return False  # its worker died
    held = held_by(beat)
    if held is None or task_id in held:
        return True
    # Not listed: only a heartbeat written after the chunk started can say it let go.
    return float(beat.get("at", 0.0)) < float(entry.get("at", 0.0)) + HELD_MARGIN
