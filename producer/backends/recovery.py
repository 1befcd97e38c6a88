"""Finding chunks a Celery job has lost, so that the producer sends them again.

A chunk is in flight from the moment it is sent until its result is collected.
It can be lost three ways, and the producer, which knows every chunk in flight,
sends it again (a duplicate is harmless: one result per index is kept):

- its worker died as a whole (SIGKILL, machine gone): the ledger says the chunk
  runs on a host whose heartbeat has expired;
- its message was taken by a worker that died before it started the chunk: the
  chunk has been neither queued (in the shared queue, or in a live worker's own
  queue, where a chunk another worker refused waits), nor running, nor done for
  ORPHAN_GRACE seconds;
- Redis restarted without persistence: the job's ledger is gone, and with it
  every queued message and stored result.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

import redis

from distloop.backends.queue import job_queues, queued_messages
from distloop.tasks.core import defaults
from distloop.tasks.store.jobs import JobStore

#: Seconds a chunk may be out of the queue without being started before it counts
#: as lost: a busy worker takes a moment between taking a message and starting it.
ORPHAN_GRACE = 10.0


class LostChunks:
    """Decides, for one job, which chunks in flight must be sent again."""

    def __init__(self, store: JobStore, broker: redis.Redis, job_id: str, meta: dict[str, Any]) -> None:
        self.store = store
        self.broker = broker
        self.job_id = job_id
        self.meta = meta
        self.queue = str(meta.get("queue") or defaults.QUEUE)  # the shared queue of the job's pool kind
        self._unseen: dict[int, float] = {}  # index -> when first seen nowhere

    def find(self, pending: Collection[int], alive: Collection[str]) -> list[int]:
        """Indices among ``pending`` (sent, no result collected) that nobody will deliver.

        ``alive``: the hostnames of the workers alive now (their heartbeats).
        """
        if not pending:
            return []
        if not self.store.exists(self.job_id):
            # Redis lost the ledger (restart without persistence): queue and results
            # went with it. Write the ledger again, then every pending chunk goes again.
            self.store.create(self.job_id, self.meta)
            self._unseen.clear()
            return sorted(pending)
        running = self.store.running(self.job_id)
        lost = {i for i in pending if i in running and running[i].get("host") not in alive}
        # A dead worker's own queue is not read: nobody will take a chunk waiting there.
        queued = {index for _, _, index in queued_messages(self.broker, job_queues(alive, self.queue), self.job_id)}
        candidates = set(pending) - set(running) - queued
        done = self.store.has_results(self.job_id, candidates)
        now = time.monotonic()
        self._unseen = {i: self._unseen.get(i, now) for i in candidates - done - lost}
        # Taken off the queue and not started for a while: its worker died holding it.
        orphans = {i for i, since in self._unseen.items() if now - since >= ORPHAN_GRACE}
        for index in orphans:
            del self._unseen[index]
        return sorted(lost | orphans)
