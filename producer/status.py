"""A job's and a cluster's state, read from Redis only: heartbeats, the queue, the job's ledger.

No broadcast to the workers: ``distloop status`` answers at once, whatever the
workers are doing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from typing import Any

import redis

from distloop.backends.queue import UNACKED_KEY, job_chunk_indices, job_queues, queue_depth, queue_keys
from distloop.tasks.core import defaults
from distloop.tasks.core.errors import BrokerUnavailable, UsageError
from distloop.tasks.core.settings import Settings, mask_url
from distloop.tasks.store.connect import connect_store
from distloop.tasks.store.jobs import JobStore, ledger_keys
from distloop.tasks.store.workers import live_workers

#: Queued messages read (per priority list) to count one job's chunks; the dispatch
#: window keeps a job's queued chunks to a few per worker process, far below this.
SCAN_LIMIT = 10_000


def job_status(store: JobStore, broker: redis.Redis, job_id: str, live: Collection[str] = ()) -> dict[str, Any]:
    """One job's progress from its ledger; :class:`UsageError` when Redis has no such job.

    Done and running chunks and the broker's messages are read in one transaction
    when the ledger and the queue share a Redis, so a chunk moving on is counted
    once. Queued counts the job's chunks waiting in the shared queue or in the own
    queue of a worker in ``live`` (hostnames, from heartbeats: a chunk another worker
    refused waits there), and those a worker has taken (kombu's ``unacked`` hash,
    with late acks) but not started yet.
    """
    meta = store.meta(job_id)
    if meta is None:
        outcome = store.outcome(job_id)
        if outcome is None:
            raise UsageError(
                f"unknown job {job_id!r}: no such job in Redis (a finished job is remembered for "
                f"{store.expires // 3600} h after its producer collected it)"
            )
        return {"job_id": job_id, **outcome}
    _, failed = store.chunk_counts(job_id)
    _, results_key, _, running_key = ledger_keys(job_id)
    pipe = store.client.pipeline(transaction=True)
    pipe.hkeys(results_key)
    pipe.hgetall(running_key)
    same = broker is store.client
    on_broker = pipe if same else broker.pipeline(transaction=True)
    on_broker.hvals(UNACKED_KEY)
    for queue in job_queues(live, str(meta.get("queue") or defaults.QUEUE)):
        for key in queue_keys(queue):
            on_broker.lrange(key, 0, SCAN_LIMIT - 1)
    replies = pipe.execute() if same else pipe.execute() + on_broker.execute()
    done_keys, running, unacked, *pages = replies
    done = {int(k) for k in done_keys}
    waiting = set().union(*(job_chunk_indices(page, job_id) for page in pages), job_chunk_indices(unacked, job_id))
    queued = len(waiting - done - {int(k) for k in running})
    total = int(meta.get("chunks", 0) or 0)
    hosts: dict[str, int] = {}
    for raw in running.values():
        host = json.loads(raw).get("host", "?")
        hosts[host] = hosts.get(host, 0) + 1
    return {
        "job_id": job_id, "state": "running", "target": meta.get("target"), "items": meta.get("items"), "chunks": total,
        "chunk_size": meta.get("chunk_size"), "done": len(done), "running": len(running), "queued": queued,
        "unsent": max(total - len(done) - len(running) - queued, 0), "failed": failed, "running_on": hosts,
    }  # fmt: skip


def collect(settings: Settings, job_id: str | None) -> dict[str, Any]:
    """Everything ``distloop status`` shows, as JSON-ready data."""
    store = connect_store(settings)
    broker = store.client
    if settings.effective_broker_url != settings.effective_result_url:
        broker = connect_store(settings.replace(result_url=None)).client
    try:
        now = time.time()
        live = live_workers(store.client)
        workers = [
            {"host": host, "concurrency": int(info.get("concurrency", 0)), "pid": info.get("pid"),
             "seen_s_ago": round(max(now - float(info.get("at", now)), 0.0), 1),
             "task_events": bool(info.get("events"))}
            for host, info in sorted(live.items())
        ]  # fmt: skip
        status: dict[str, Any] = {
            "broker": mask_url(settings.effective_broker_url),
            "workers": workers,
            "processes": sum(w["concurrency"] for w in workers),
            "queue": {"name": defaults.QUEUE, "depth": queue_depth(broker)},
        }
        if job_id:
            status["job"] = job_status(store, broker, job_id, live.keys())
        return status
    except redis.RedisError as exc:
        raise BrokerUnavailable(f"lost Redis at {mask_url(settings.effective_broker_url)}: {exc}") from None
    finally:
        store.client.close()
        broker.close()
