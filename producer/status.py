"""A job's and a cluster's state, read from Redis only: heartbeats, the queue, the job's ledger.

No broadcast to the workers: ``distloop status`` answers at once, whatever the
workers are doing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping
from typing import Any

import redis

from distloop.backends.queue import UNACKED_KEY, job_chunk_indices, job_queues, queue_depth, queue_keys
from distloop.backends.recovery import still_held
from distloop.tasks.core import defaults
from distloop.tasks.core.errors import BrokerUnavailable, UsageError
from distloop.tasks.core.settings import Settings, mask_url
from distloop.tasks.store.connect import connect_store
from distloop.tasks.store.jobs import JobStore, counts_key, ledger_keys
from distloop.tasks.store.lease import Leases
from distloop.tasks.store.workers import live_workers

#: Queued messages read (per priority list) to count one job's chunks; the dispatch
#: window keeps a job's queued chunks to a few per worker process, far below this.
SCAN_LIMIT = 10_000
#: Jobs `distloop status` lists, newest first.
JOBS_LISTED = 50


def job_status(
    store: JobStore, broker: redis.Redis, job_id: str, live: Mapping[str, dict[str, Any]] | Collection[str] = ()
) -> dict[str, Any]:
    """One job's progress from its ledger; :class:`UsageError` when Redis has no such job.

    Done and failed come from the ledger's exact counts (which checkpoints never
    trim). Running counts the chunks a live worker runs; a chunk the ledger says runs
    on a dead worker, or on one that let go of it, is ``lost`` (the producer sends it
    again). Queued counts the job's chunks waiting in the shared queue or in the own
    queue of a worker in ``live`` (heartbeats by hostname: a chunk another worker
    refused waits there), and those a worker has taken (kombu's ``unacked`` hash, with
    late acks) but not started yet. Not sent: the chunks the producer has yet to send.
    The ledger and the broker's messages are read in one transaction when they share
    a Redis, so a chunk moving on is counted once.
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
    beats = live if isinstance(live, Mapping) else {host: {} for host in live}
    running_key = ledger_keys(job_id)[3]
    pipe = store.client.pipeline(transaction=True)
    pipe.hgetall(counts_key(job_id))
    pipe.hgetall(running_key)
    same = broker is store.client
    on_broker = pipe if same else broker.pipeline(transaction=True)
    on_broker.hvals(UNACKED_KEY)
    for queue in job_queues(beats.keys(), str(meta.get("queue") or defaults.QUEUE)):
        for key in queue_keys(queue):
            on_broker.lrange(key, 0, SCAN_LIMIT - 1)
    replies = pipe.execute() if same else pipe.execute() + on_broker.execute()
    raw_counts, raw_running, unacked, *pages = replies
    counts = store.parse_counts(raw_counts)
    entries = {int(k): json.loads(v) for k, v in raw_running.items()}
    running = {i: e for i, e in entries.items() if still_held(f"{job_id}-{i}", e, beats)}
    waiting = set().union(*(job_chunk_indices(page, job_id) for page in pages), job_chunk_indices(unacked, job_id))
    waiting -= set(running)
    # A message may still wait for a chunk already done (a duplicate): done chunks are not queued.
    waiting -= {i for i in waiting if i < counts["collected"]} | store.has_results(job_id, waiting)
    total = int(meta.get("chunks", 0) or 0)
    sent = max(counts["sent"], counts["done"] + len(running) + len(waiting))
    lost = max(sent - counts["done"] - len(running) - len(waiting), 0)
    total = max(total, sent)
    hosts: dict[str, int] = {}
    for entry in running.values():
        host = entry.get("host", "?")
        hosts[host] = hosts.get(host, 0) + 1
    return {
        "job_id": job_id, "state": "running", "target": meta.get("target"), "items": meta.get("items"),
        "chunks": total, "chunk_size": meta.get("chunk_size"), "done": counts["done"], "running": len(running),
        "queued": len(waiting), "unsent": total - sent, "lost": lost, "failed": counts["failed"],
        "running_on": hosts, "created_at": meta.get("created_at"),
    }  # fmt: skip


def list_jobs(store: JobStore, most: int = JOBS_LISTED) -> list[dict[str, Any]]:
    """The jobs in this Redis, newest first: live ledgers and the notes finished jobs left.

    A live job's state says whether its producer still runs it (its lease is held), or
    is gone (``distloop resume JOB`` finishes it).
    """
    leases = Leases(store.client)
    rows: list[dict[str, Any]] = []
    for job_id, live in store.job_ids():
        if live:
            meta = store.meta(job_id)
            if meta is None:
                continue  # ended meanwhile
            counts = store.counts(job_id)
            holder = leases.holder(job_id)
            row = {"job_id": job_id, "target": meta.get("target"), "items": meta.get("items"),
                   "chunks": meta.get("chunks"), "done": counts["done"], "failed": counts["failed"],
                   "created_at": meta.get("created_at"),
                   "state": "running" if holder is not None else "no producer",
                   "producer": f"{holder.host} pid {holder.pid}" if holder is not None else None}  # fmt: skip
        else:
            note = store.outcome(job_id)
            if note is None:
                continue  # expired meanwhile
            row = {"job_id": job_id, **note}
        rows.append(row)
    rows.sort(key=lambda r: -float(r.get("created_at") or r.get("ended_at") or 0.0))
    return rows[:most]


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
            status["job"] = job_status(store, broker, job_id, live)
        else:
            status["jobs"] = list_jobs(store)
        return status
    except redis.RedisError as exc:
        raise BrokerUnavailable(f"lost Redis at {mask_url(settings.effective_broker_url)}: {exc}") from None
    finally:
        store.client.close()
        broker.close()
