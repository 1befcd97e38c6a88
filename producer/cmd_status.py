"""Show the workers online, the queue depth and, for a JOB, its chunks done, running, queued and failed.

Reads Redis only: the workers' heartbeats, the broker's queue and the job's ledger.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import redis
from kombu.transport.redis import Channel

from producer.celery_backend import connect_store
from producer.recovery import chunk_index, queue_keys
from tasks import defaults
from tasks.errors import BrokerUnavailable, UsageError
from tasks.heartbeat import live_workers
from tasks.jobstore import JobStore, ledger_keys
from tasks.settings import Settings, mask_url

NAME = "status"

#: Queued messages read (per priority list) to count one job's chunks; the dispatch
#: window keeps a job's queued chunks to a few per worker process, far below this.
SCAN_LIMIT = 10_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB", nargs="?", help="a job id (printed by `distloop run`)")
    parser.add_argument("--broker", help="Redis URL of the workers (default: DISTLOOP_BROKER_URL or local Redis)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def queue_depth(client: redis.Redis, queue: str = defaults.QUEUE) -> int:
    """Messages waiting in ``queue`` (not yet taken by a worker)."""
    pipe = client.pipeline(transaction=False)
    for key in queue_keys(queue):
        pipe.llen(key)
    return sum(int(n) for n in pipe.execute())


def job_chunk_indices(messages: list[bytes], job_id: str) -> set[int]:
    """Chunk indices of ``job_id`` among kombu messages: queue entries, or ``unacked`` values."""
    return {i for i in (chunk_index(raw, job_id) for raw in messages) if i is not None}


def job_status(store: JobStore, broker: redis.Redis, job_id: str) -> dict[str, Any]:
    """One job's progress from its ledger; :class:`UsageError` when Redis has no such job.

    Done and running chunks and the broker's messages are read in one transaction
    when the ledger and the queue share a Redis, so a chunk moving on is counted
    once. Queued counts the job's chunks waiting in the queue, and those a worker
    has taken (kombu's ``unacked`` hash, with late acks) but not started yet.
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
    on_broker.hvals(Channel.unacked_key)
    for key in queue_keys():
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
        workers = [
            {"host": host, "concurrency": int(info.get("concurrency", 0)), "pid": info.get("pid"),
             "seen_s_ago": round(max(now - float(info.get("at", now)), 0.0), 1),
             "task_events": bool(info.get("events"))}
            for host, info in sorted(live_workers(store.client).items())
        ]  # fmt: skip
        status: dict[str, Any] = {
            "broker": mask_url(settings.effective_broker_url),
            "workers": workers,
            "processes": sum(w["concurrency"] for w in workers),
            "queue": {"name": defaults.QUEUE, "depth": queue_depth(broker)},
        }
        if job_id:
            status["job"] = job_status(store, broker, job_id)
        return status
    except redis.RedisError as exc:
        raise BrokerUnavailable(f"lost Redis at {mask_url(settings.effective_broker_url)}: {exc}") from None
    finally:
        store.client.close()
        broker.close()


def render(status: dict[str, Any]) -> str:
    """The text form of :func:`collect`'s data."""
    lines = [f"broker   {status['broker']}"]
    workers = status["workers"]
    lines.append(f"workers  {len(workers)} online, {status['processes']} processes")
    lines += [
        f"  {w['host']}  concurrency {w['concurrency']}  pid {w['pid']}"
        f"  task events {'on' if w['task_events'] else 'off'}"
        for w in workers
    ]
    lines.append(f"queue    {status['queue']['name']}: {status['queue']['depth']} chunks waiting")
    job = status.get("job")
    if job and job["state"] != "running":
        ended = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["ended_at"]))
        how = "finished" if job["state"] == "done" else f"stopped before its end ({job['state']})"
        lines.append(f"job      {job['job_id']}  {job['target']}  {job['items']} items: {how} at {ended}")
    elif job:
        lines.append(
            f"job      {job['job_id']}  {job['target']}  {job['items']} items in {job['chunks']} chunks"
            f" of {job['chunk_size']}"
        )
        pct = 100.0 * job["done"] / job["chunks"] if job["chunks"] else 100.0
        lines.append(
            f"  chunks {job['done']}/{job['chunks']} done ({pct:.0f}%), {job['running']} running,"
            f" {job['queued']} queued, {job['unsent']} not yet sent, {job['failed']} failed"
        )
        lines += [f"  running on {host}: {n}" for host, n in sorted(job["running_on"].items())]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    status = collect(Settings.from_env(broker_url=args.broker), args.job)
    print(json.dumps(status) if args.json else render(status))
    return 0
