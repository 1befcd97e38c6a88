"""Reading and clearing a job's messages in the broker's queue (kombu's Redis transport).

kombu keeps a queue as one Redis list per priority step: the queue's name for
priority 0 and ``name + "\\x06\\x16" + step`` for the others. Each entry is a JSON
message whose ``headers.id`` is the task id (``<job id>-<chunk index>``). A message a
worker has taken but not acknowledged yet (late acks) waits in the ``unacked`` hash.

Besides the shared queue, each worker consumes its own (Celery's ``worker_direct``,
``<hostname>.dq2``), where the producer puts a chunk another worker refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from celery.utils.nodenames import worker_direct
from kombu.transport.redis import PRIORITY_STEPS, Channel

from distloop.tasks.core import defaults

#: kombu's hash of messages taken by a worker and not yet acknowledged.
UNACKED_KEY = Channel.unacked_key


def queue_keys(queue: str = defaults.QUEUE) -> list[str]:
    """The Redis lists that hold ``queue``'s messages, one per priority step."""
    return [f"{queue}{Channel.sep}{step}" if step else queue for step in PRIORITY_STEPS]


def job_queues(hosts: Iterable[str] = (), queue: str = defaults.QUEUE) -> list[str]:
    """The queues that may hold a job's messages: the shared one of its pool kind, and ``hosts``' own."""
    return [queue, *(worker_direct(h).name for h in sorted(hosts))]


def chunk_index(raw: Any, job_id: str) -> int | None:
    """The chunk index of a kombu message of ``job_id`` (task id ``<job>-<index>``), else None.

    ``raw`` is a queue entry, or an ``unacked`` hash value (``[message, exchange, routing key]``).
    """
    try:
        message = json.loads(raw)
        task_id = str((message[0] if isinstance(message, list) else message)["headers"]["id"])
    except (ValueError, KeyError, TypeError, IndexError):
        return None
    job, _, index = task_id.rpartition("-")
    return int(index) if job == job_id and index.isdigit() else None


def job_chunk_indices(messages: Iterable[Any], job_id: str) -> set[int]:
    """Chunk indices of ``job_id`` among kombu messages: queue entries, or ``unacked`` values."""
    return {i for i in (chunk_index(raw, job_id) for raw in messages) if i is not None}


def queued_messages(client: redis.Redis, queues: Iterable[str], job_id: str) -> Iterator[tuple[str, Any, int]]:
    """(list key, raw message, chunk index) for each of ``job_id``'s messages still in ``queues``.

    One round trip for every list of every queue: a worker's own queue is almost always
    empty, and there is one per live worker.
    """
    keys = [key for queue in queues for key in queue_keys(queue)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.lrange(key, 0, -1)
    for key, page in zip(keys, pipe.execute(), strict=True):
        for raw in page:
            index = chunk_index(raw, job_id)
            if index is not None:
                yield key, raw, index


def purge_job(client: redis.Redis, queues: Iterable[str], job_id: str) -> int:
    """Remove ``job_id``'s messages from ``queues``; how many were removed."""
    removed = 0
    for key, raw, _ in list(queued_messages(client, queues, job_id)):
        removed += int(client.lrem(key, 0, raw))
    return removed


def queue_depth(client: redis.Redis, queue: str = defaults.QUEUE) -> int:
    """Messages waiting in ``queue`` (not yet taken by a worker)."""
    pipe = client.pipeline(transaction=False)
    for key in queue_keys(queue):
        pipe.llen(key)
    return sum(int(n) for n in pipe.execute())
