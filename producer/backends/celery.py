"""The celery backend: chunks as Celery tasks through Redis to prefork workers.

Publishing uses one producer connection, batched; results stream back through
the job ledger (:mod:`distloop.tasks.store.jobs`): workers push finished chunk indices on
a list that this side pops in bulk, so nothing is polled one task at a time.
A chunk a worker refused (it cannot import the function, or may not run it) is
handed to another live worker (:mod:`distloop.backends.refusals`). In a job's tail,
a chunk still running on a slow host is sent again to an idle one, and the copy that
loses is revoked (:mod:`distloop.backends.stragglers`).
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import redis
from celery import Celery
from celery.utils.nodenames import worker_direct
from kombu import Queue
from kombu.exceptions import OperationalError

from distloop.backends.arguments import ArgumentBlobs, pack
from distloop.backends.base import Backend, JobSpec, StoredJob
from distloop.backends.control import JOB_STAMP, held_by_workers, revoke_stamp, stop_copies
from distloop.backends.events import follow_monitors
from distloop.backends.forwarded import show
from distloop.backends.queue import job_queues, purge_job, purge_unacked
from distloop.backends.recovery import LostChunks
from distloop.backends.refusals import Refusals, is_refusal
from distloop.backends.stragglers import Stragglers
from distloop.backends.watchdog import Watchdog
from distloop.tasks.app import make_app
from distloop.tasks.core import defaults
from distloop.tasks.core.errors import BrokerUnavailable, JobBusy, UsageError
from distloop.tasks.core.settings import Settings, mask_url
from distloop.tasks.kernel import ChunkResult, ChunkSpec
from distloop.tasks.output import OutputStore
from distloop.tasks.store.connect import connect_store
from distloop.tasks.store.jobs import JobStore
from distloop.tasks.store.lease import Leases, busy_message
from distloop.tasks.store.workers import live_workers
from distloop.tasks.targets import allow_entries
from distloop.worker.discover import find_standing
from distloop.worker.early import adopt
from distloop.worker.embedded import EmbeddedCluster


def describe_chunk(job: JobSpec, chunk: ChunkSpec) -> str:
    """How a chunk reads in Flower's args column: its items first (Flower cuts long args), then target and job."""
    if not chunk.is_range:
        items = f"{len(chunk)} calls"
    else:
        step = f", {chunk.step}" if chunk.step != 1 else ""
        items = f"range({chunk.start}, {chunk.stop}{step})"
    reduce = f", reduce {job.reduce}" if job.reduce else ""
    return f"{items} of {job.target}, chunk {chunk.index} of job {job.job_id}{reduce}"


class CeleryBackend(Backend):
    """Chunks run on Celery workers: the embedded cluster, or the ones at ``--broker``."""

    name = "celery"
    supports_timeout = True
    out_of_band = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cluster: EmbeddedCluster | None = None
        self.app: Celery | None = None
        self.store: JobStore | None = None
        self._producer: Any = None
        self._workers = 0
        self._broker: redis.Redis | None = None
        # Per open job: the facades keep several open.
        self._lost: dict[str, LostChunks] = {}
        self._refusals: dict[str, Refusals] = {}
        self._sent: dict[str, int] = {}  # job id -> chunks sent (highest index + 1)
        self._chunks: dict[str, Any] = {}  # job id -> the total chunks last written to its ledger
        self.leases: Leases | None = None
        self._run = uuid.uuid4().hex[:8]  # this producer, in its messages' job stamp
        self._stragglers: dict[str, Stragglers] = {}
        self._watchdog = Watchdog()
        self._output: OutputStore | None = None  # the workers' forwarded output, when asked for
        self._output_shown = 0.0
        self._arguments = ArgumentBlobs()  # large array arguments, beside their messages
        self.standing = False  # on the standing cluster of `distloop up`, found by its environment file

    @classmethod
    def worker_cap(cls, settings: Settings) -> int:
        # With --broker, --workers starts nothing: it only sizes the chunks in flight.
        return super().worker_cap(settings) if settings.broker_url is None else defaults.MAX_WORKERS

    @property
    def workers(self) -> int:
        return self._workers or self.requested_workers or 1

    @property
    def threaded(self) -> bool:
        """Workers of a threads or gevent pool: their slots are threads."""
        return self.settings.pool != "prefork"

    @property
    def cores(self) -> int:
        """This machine's for the embedded cluster; else the workers' processes (prefork: one per core)."""
        return (os.cpu_count() or 1) if self.embedded else self.workers

    @property
    def embedded(self) -> bool:
        return self.settings.broker_url is None

    def start(self, allow: Sequence[str] = ()) -> None:
        if self.app is not None:
            return
        started = time.perf_counter()
        standing = find_standing(self.settings) if self.embedded else None
        if standing is not None:  # no start-up: its workers are there already
            self.settings = self.settings.replace(broker_url=standing)
            self.standing = True
        settings = self.settings
        try:
            if self.embedded:
                # Returns once Redis answers: the first chunks wait there while the worker starts.
                self.cluster = adopt(self.requested_workers, allow, settings) or EmbeddedCluster(
                    self.requested_workers, allow, settings
                ).start(wait=False)
                assert self.cluster.settings is not None
                settings = self.cluster.settings
                self._workers = self.cluster.workers
            self.store = connect_store(settings)
            self.leases = Leases(self.store.client)
            self.app = make_app(settings)
            self._broker = self._broker_client(settings)
            if self.settings.forward_output:
                self._output = OutputStore(self.store.client, self.settings.result_expires)
            if not self.embedded:
                self._workers = self._count_remote_workers()
        except BaseException:
            self.close()
            raise
        self.startup_s = time.perf_counter() - started

    def _cluster_ready(self) -> bool:
        """Whether the embedded worker (if any) consumes tasks; :class:`BrokerUnavailable` if it died starting."""
        if self.cluster is None:
            return True
        if not self.cluster.check():
            return False
        self.startup_s = self.cluster.startup_s  # to the worker's ready, not to the first chunk's send
        return True

    def _count_remote_workers(self) -> int:
        """Worker processes serving the queue (from their heartbeats); fail clearly when none."""
        assert self.store is not None
        pool = self.settings.pool  # only the workers that serve this pool kind's queue
        workers = live_workers(self.store.client).values()
        total = sum(int(w.get("concurrency", 1)) for w in workers if w.get("pool", "prefork") == pool)
        if total == 0:
            start = "distloop worker" if pool == "prefork" else f"distloop worker --pool {pool}"
            raise BrokerUnavailable(
                f"no distloop {pool} worker answers on {mask_url(self.settings.broker_url)}: start one with `{start}`"
            )
        return self.requested_workers or total

    def _broker_client(self, settings: Settings) -> redis.Redis:
        """A plain Redis client on the broker, to read and purge the queue."""
        assert self.store is not None
        if settings.effective_broker_url == settings.effective_result_url:
            return self.store.client
        return redis.Redis.from_url(settings.effective_broker_url, **settings.redis_options())

    def open_job(self, job: JobSpec) -> None:
        visibility = self.settings.visibility_timeout
        if job.timeout is not None and job.timeout + defaults.TIMEOUT_GRACE_SECONDS >= visibility:
            # Redis would hand a chunk still running to a second worker, and again every hour.
            raise UsageError(
                f"--timeout {job.timeout:g} s does not fit the broker's visibility timeout ({visibility} s): "
                "set DISTLOOP_VISIBILITY_TIMEOUT above it, on the workers too"
            )
        module = job.target.rpartition(":")[0]
        self.start((module,))
        assert self.app is not None and self.store is not None and self._broker is not None
        self._take_lease(job.job_id)
        if self.cluster is not None or self.standing:  # our private workers: allow this job's module too
            self.store.allow(allow_entries(job.target))
        meta = {
            "target": job.target, "reduce": job.reduce, "on_error": job.on_error,
            "timeout": job.timeout, "state": "running", "created_at": time.time(), **job.meta,
        }  # fmt: skip
        if self.settings.pool != "prefork":  # a pool kind's own queue: recovery and status read it
            meta["queue"] = self.settings.queue
        self.store.create(job.job_id, meta)
        follow_monitors(self.app, self.settings, live_workers(self.store.client))
        ask = functools.partial(held_by_workers, self.app)  # when the job makes no progress
        self._lost[job.job_id] = LostChunks(self.store, self._broker, job.job_id, meta, ask)
        self._refusals[job.job_id] = Refusals(job.target)
        self._chunks[job.job_id] = meta.get("chunks")
        self._sent[job.job_id] = self.store.counts(job.job_id)["sent"]  # a resumed job has sent some already
        if self.settings.stragglers:
            self._stragglers[job.job_id] = Stragglers()
        if self._producer is None:
            self._producer = self.app.producer_pool.acquire(block=True)

    def _take_lease(self, job_id: str) -> None:
        """Make this producer the job's one producer, or refuse: another live producer runs it."""
        assert self.leases is not None
        holder = self.leases.take(job_id)
        if holder is not None:
            raise JobBusy(busy_message(job_id, holder))

    def submit(self, job: JobSpec, chunks: Sequence[ChunkSpec]) -> None:
        assert self.store is not None
        store = self.store
        # Resume places a range job's chunks by this plan; a facade's job cannot resume (keep_results).
        plan = [c.to_wire() for c in chunks if c.is_range] if job.keep_results else []
        self._refusals[job.job_id].sent(chunks)
        sent = self._sent[job.job_id] = max([self._sent.get(job.job_id, 0), *(c.index + 1 for c in chunks)])
        # The plan first: a producer that dies mid-send leaves no chunk resume cannot place.
        self._publish(job, chunks, self.settings.queue, lambda: store.record_plan(job.job_id, plan, sent))

    def _publish(
        self, job: JobSpec, chunks: Sequence[ChunkSpec], queue: str | Queue, first: Callable[[], object]
    ) -> None:
        """Send ``chunks`` to ``queue`` (a name, or a worker's own queue), after ``first`` (a ledger write)."""
        assert self.app is not None
        limits = time_limits(job.timeout)
        # Sent only when the job sets it: otherwise each worker's own DISTLOOP_IO_CONCURRENCY.
        extra = {"io_concurrency": job.io_concurrency, "fan_out": job.fan_out}
        kwargs = {k: v for k, v in extra.items() if v} or None  # none: what workers of any version take
        chunks = [pack(chunk) for chunk in chunks]  # a long list of calls beside its message
        while True:
            try:
                first()
                self._arguments.put(self.store, job.job_id, chunks)  # type: ignore[arg-type]
                # One producer connection; kombu's batch pipelines the publishes to Redis.
                with self._producer.batch(max_size=max(1, len(chunks))):
                    for chunk in chunks:
                        spec = chunk.to_wire()
                        if self._output is not None:
                            spec["forward_output"] = True  # the worker forwards what f prints
                        self.app.send_task(
                            defaults.CHUNK_TASK,
                            args=(job.job_id, job.target, spec, job.reduce, job.on_error),
                            kwargs=kwargs,
                            argsrepr=describe_chunk(job, chunk),
                            task_id=f"{job.job_id}-{chunk.index}",
                            queue=queue,
                            producer=self._producer,
                            # Results travel through the ledger: without this Celery subscribes
                            # to a result channel per chunk, and the producer grows with the job.
                            ignore_result=True,
                            # Stamped with its job: cancelling revokes the stamp, which leaves no
                            # REVOKED result behind (a revoke by task id stores one per chunk).
                            stamped_headers=[JOB_STAMP],
                            **{JOB_STAMP: self._stamp(job)},
                            **limits,
                        )
                self._watchdog.reached()
                return
            except (OperationalError, redis.RedisError, OSError) as exc:
                # The batch is sent again whole: a chunk delivered twice is harmless.
                self._watchdog.unreachable(f"lost the broker while sending chunks: {exc}")
                time.sleep(1.0)

    def collected(self, job: JobSpec, checkpoint: dict[str, Any]) -> None:
        """Record the checkpoint in the ledger, then drop the results it covers (Redis stays small)."""
        assert self.store is not None
        try:
            self.store.checkpoint(job.job_id, checkpoint)
        except (redis.RedisError, OSError) as exc:
            self._watchdog.unreachable(f"lost the result store: {exc}")

    def stored_job(self, job_id: str) -> StoredJob | None:
        self.start()
        assert self.store is not None
        if not self.store.exists(job_id):
            return None
        # Before anything is read or written: one producer per job.
        self._take_lease(job_id)
        meta = self.store.meta(job_id)
        if meta is None:
            return None
        done = sorted(self.store.finished_indices(job_id))
        results = [ChunkResult.from_wire(r) for r in self.store.results(job_id, done) if r is not None]
        # A refusal is no result: its chunk runs again, on a worker that can run it.
        refused = [r.index for r in results if is_refusal(r)]
        self.store.drop_refusals(job_id, refused)
        plan = {i: ChunkSpec(i, start, stop, step) for i, (start, stop, step) in self.store.plan(job_id).items()}
        return StoredJob(meta, [r for r in results if not is_refusal(r)], plan)

    def lost(self, job: JobSpec, pending: Collection[int]) -> list[int]:
        """Chunks lost with a dead worker or a restarted Redis (see :mod:`distloop.backends.recovery`)."""
        assert self.store is not None and self.leases is not None
        try:
            holder = self.leases.take(job.job_id)  # renewed on every check, every few seconds
            if holder is not None:
                self._lost.pop(job.job_id, None)  # ours no more: _end leaves the ledger alone
                raise JobBusy(f"job {job.job_id} was taken over by another producer ({holder.host}, pid {holder.pid})")
            if job.meta.get("chunks") != self._chunks.get(job.job_id):  # the planner's estimate moved
                self._chunks[job.job_id] = job.meta.get("chunks")
                self.store.update(job.job_id, chunks=job.meta.get("chunks"))
            workers = live_workers(self.store.client)
            lost = self._lost[job.job_id].find(pending, workers)
        except (redis.RedisError, OSError) as exc:
            self._watchdog.unreachable(f"lost the result store: {exc}")
            return []
        self._watchdog.reached()
        self._watchdog.workers_alive(bool(workers))
        follow_monitors(self.app, self.settings, workers)
        return lost

    def wait(self, job: JobSpec, timeout: float) -> list[ChunkResult]:
        """Results finished since the last call; a refused chunk goes to another worker instead."""
        assert self.store is not None
        refusals = self._refusals[job.job_id]
        if not self._cluster_ready():
            timeout = min(timeout, 0.05)  # look again soon: a worker that dies starting fails the job
        try:
            # With refusals still to hand over (Redis was away), do not block on new results.
            indices = self.store.pop_done(job.job_id, 0.01 if refusals.backlog else timeout)
            raw = self.store.results(job.job_id, indices, consume=not job.keep_results)
        except (redis.RedisError, OSError) as exc:
            self._watchdog.unreachable(f"lost the result store: {exc}")
            time.sleep(min(timeout, 1.0))
            return []
        self._watchdog.reached()
        if indices and job.job_id in self._lost:
            self._lost[job.job_id].progressed()
        results = refusals.sort(ChunkResult.from_wire(r) for r in raw if r is not None)
        if results:
            try:
                self._arguments.answered(self.store, job.job_id, results)
            except (redis.RedisError, OSError):
                pass  # they go with the job's ledger
        self._revoke_copies(job, results)
        # Output is pushed before its chunk's result: show it when a result says there is
        # some, when idle (a long chunk pushes as it runs), and at least every second.
        if not results or any(r.output for r in results) or time.monotonic() - self._output_shown > 1.0:
            self._show_output(job)
        if refusals.backlog:
            results += self._hand_over(job, refusals)
        return results

    def stragglers(self, job: JobSpec, in_flight: Mapping[int, ChunkSpec]) -> None:
        """Send the job's longest-running chunks again, each to an idle worker's own queue."""
        tail = self._stragglers.get(job.job_id)
        if tail is None or self.store is None:
            return
        try:
            picks = tail.pick(in_flight, self.store.running(job.job_id), live_workers(self.store.client))
        except (redis.RedisError, OSError) as exc:
            self._watchdog.unreachable(f"lost the result store: {exc}")
            return
        for chunk, host in picks:
            # Same task id as the first copy: one revoke later reaches whichever still runs.
            self._publish(job, [chunk], worker_direct(host), lambda: None)

    def _revoke_copies(self, job: JobSpec, results: Sequence[ChunkResult]) -> None:
        """A chunk sent twice has its (first) result: stop the other copy (see :func:`stop_copies`)."""
        tail = self._stragglers.get(job.job_id)
        if tail is None or self.app is None or self._broker is None:
            return
        losers = {r.index: (r.host, *tail.copies[r.index]) for r in results if tail.observe(r)}
        if losers:
            stop_copies(self.app, self._broker, job.job_id, losers)

    def _hand_over(self, job: JobSpec, refusals: Refusals) -> list[ChunkResult]:
        """Send each refused chunk to a live worker that has not refused it; the chunks none can run.

        The refusal leaves the ledger before the chunk goes again, so that until the
        next worker answers the chunk reads as not done (to the lost-chunk finder, to
        status, to resume).
        """
        assert self.store is not None
        store = self.store
        try:
            live = live_workers(store.client).keys()
        except (redis.RedisError, OSError) as exc:
            self._watchdog.unreachable(f"lost the result store: {exc}")
            return []  # the backlog stays for the next call
        failed, resend = refusals.hand_over(live)
        for host, chunks in resend.items():
            indices = [c.index for c in chunks]
            queue = self.settings.queue if host is None else worker_direct(host)
            self._publish(job, chunks, queue, functools.partial(store.drop_refusals, job.job_id, indices))
        return failed

    def cancel(self, job: JobSpec, why: str = "stopped") -> None:
        """Stop the job before its end; ``why`` ("failed", "interrupted"...) is what status will say."""
        self._end(job, why)

    def _end(self, job: JobSpec, state: str) -> None:
        """Revoke the job: its ledger and queued messages go, and its running chunks are stopped.

        The ledger goes first, so a worker that still gets one of its chunks skips it.
        Chunks already running are revoked with ``terminate``: the worker stops the pool
        process running each (and starts another), instead of finishing work nobody
        will collect.
        """
        if self.store is None or self.leases is None:
            return
        self._show_output(job)  # what is left, before the ledger (and the output list) goes
        outcome: dict[str, Any] = {"state": state, "target": job.target, "items": job.meta.get("items")}
        if state == "done" and job.job_id in self._sent:
            # Every chunk sent came back: exact even if Redis came back from an older snapshot.
            outcome["done"] = outcome["chunks"] = self._sent[job.job_id]
        tail = self._stragglers.get(job.job_id)
        if tail is not None and tail.copies:
            outcome["copies"] = sorted(tail.copies)  # the chunks sent twice (straggling)
        try:
            if self.leases.taken(job.job_id) is not None:
                return  # another producer took the job over: the ledger is its own now
            running = self.store.delete(job.job_id, outcome)
            refusals = self._refusals.get(job.job_id)
            hosts = (refusals.hosts if refusals else set()) | (tail.hosts if tail else set())
            if self._broker is not None:
                purge_job(self._broker, job_queues(hosts, self.settings.queue), job.job_id)
                # Messages taken by workers that died: kombu would restore them in an hour.
                purge_unacked(self._broker, job.job_id)
            if running and self.app is not None:
                revoke_stamp(self.app, self._stamp(job))
        except (redis.RedisError, OSError, OperationalError):
            pass

    def _stamp(self, job: JobSpec) -> str:
        return f"{job.job_id}/{self._run}"

    def _show_output(self, job: JobSpec) -> None:
        """Print the lines ``f`` wrote on the workers that have arrived (see :mod:`distloop.tasks.output`)."""
        if self._output is None:
            return
        self._output_shown = time.monotonic()
        try:
            lines = self._output.pop(job.job_id)
        except (redis.RedisError, OSError):
            return  # best effort: the results' own reads notice an outage
        show(lines)

    def close_job(self, job: JobSpec) -> None:
        # After a cancel the ledger is gone already, and the outcome it wrote stays.
        self._end(job, "done")
        self._lost.pop(job.job_id, None)
        self._refusals.pop(job.job_id, None)
        self._sent.pop(job.job_id, None)
        self._chunks.pop(job.job_id, None)
        self._stragglers.pop(job.job_id, None)
        self._arguments.forget(job.job_id)

    def close(self) -> None:
        try:
            if self._producer is not None:
                self._producer.release()
                self._producer = None
            if self.app is not None:
                self.app.close()
                self.app = None
            if self._broker is not None:
                self._broker.close()
                self._broker = None
            self._output = None
            if self.store is not None:
                self.store.client.close()
                self.store = None
        finally:  # whatever closing a connection raised, the processes we started are stopped
            if self.cluster is not None:
                self.cluster.stop()
                self.cluster = None


def time_limits(timeout: float | None) -> dict[str, float]:
    """Celery's per-task limits for ``--timeout``: soft at the timeout, hard a grace later."""
    if timeout is None:
        return {}
    return {"soft_time_limit": timeout, "time_limit": timeout + defaults.TIMEOUT_GRACE_SECONDS}
