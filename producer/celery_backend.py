"""The celery backend: chunks as Celery tasks through Redis to prefork workers.

Publishing uses one producer connection, batched; results stream back through
the job ledger (:mod:`tasks.jobstore`): workers push finished chunk indices on
a list that this side pops in bulk, so nothing is polled one task at a time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from producer.backend import Backend, JobSpec, register
from tasks import defaults
from tasks.application import make_app
from tasks.errors import BrokerUnavailable
from tasks.heartbeat import live_workers
from tasks.jobstore import JobStore
from tasks.kernel import ChunkResult, ChunkSpec
from tasks.settings import Settings, mask_url
from worker.embedded import EmbeddedCluster


def connect_store(settings: Settings) -> JobStore:
    """A job store on the result Redis, checked with PING; one clear error if unusable."""
    url = settings.effective_result_url
    settings.check_tls()
    try:
        client = settings.redis_client(url)
        client.ping()
    except redis.AuthenticationError:
        raise BrokerUnavailable(f"Redis at {mask_url(url)} refused the credentials") from None
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise BrokerUnavailable(f"Redis at {mask_url(url)} refused the credentials") from None
        raise BrokerUnavailable(f"Redis at {mask_url(url)}: {exc}") from None
    except (redis.RedisError, OSError) as exc:
        raise BrokerUnavailable(f"cannot reach Redis at {mask_url(url)}: {exc}") from None
    except ValueError as exc:
        raise BrokerUnavailable(f"bad broker URL {mask_url(url)}: {exc}") from None
    return JobStore(client, settings.result_expires)


def describe_chunk(job: JobSpec, chunk: ChunkSpec) -> str:
    """How a chunk reads in Flower's args column: its items first (Flower cuts long args), then target and job."""
    if chunk.calls is not None:
        items = f"{len(chunk.calls)} calls"
    else:
        step = f", {chunk.step}" if chunk.step != 1 else ""
        items = f"range({chunk.start}, {chunk.stop}{step})"
    reduce = f", reduce {job.reduce}" if job.reduce else ""
    return f"{items} of {job.target}, chunk {chunk.index} of job {job.job_id}{reduce}"


@register
class CeleryBackend(Backend):
    """Chunks run on Celery workers: the embedded cluster, or the ones at ``--broker``."""

    name = "celery"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cluster: EmbeddedCluster | None = None
        self.app: Celery | None = None
        self.store: JobStore | None = None
        self._producer: Any = None
        self._workers = 0

    @property
    def workers(self) -> int:
        return self._workers or self.requested_workers or 1

    @property
    def embedded(self) -> bool:
        return self.settings.broker_url is None

    def start(self, allow: Sequence[str] = ()) -> None:
        if self.app is not None:
            return
        started = time.perf_counter()
        settings = self.settings
        try:
            if self.embedded:
                self.cluster = EmbeddedCluster(self.requested_workers, allow, settings).start()
                assert self.cluster.settings is not None
                settings = self.cluster.settings
                self._workers = self.cluster.workers
            self.store = connect_store(settings)
            self.app = make_app(settings)
            if not self.embedded:
                self._workers = self._count_remote_workers()
        except BaseException:
            self.close()
            raise
        self.startup_s = time.perf_counter() - started

    def _count_remote_workers(self) -> int:
        """Worker processes serving the queue (from their heartbeats); fail clearly when none."""
        assert self.store is not None
        total = sum(int(w.get("concurrency", 1)) for w in live_workers(self.store.client).values())
        if total == 0:
            raise BrokerUnavailable(
                f"no distloop worker answers on {mask_url(self.settings.broker_url)}: start one with `distloop worker`"
            )
        return self.requested_workers or total

    def open_job(self, job: JobSpec) -> None:
        module = job.target.rpartition(":")[0]
        self.start((module,))
        assert self.app is not None and self.store is not None
        if self.cluster is not None:  # our private workers: allow this job's module too
            self.store.allow([module])
        self.store.create(
            job.job_id, {"target": job.target, "reduce": job.reduce, "on_error": job.on_error, **job.meta}
        )
        if self._producer is None:
            self._producer = self.app.producer_pool.acquire(block=True)

    def submit(self, job: JobSpec, chunks: Sequence[ChunkSpec]) -> None:
        assert self.app is not None
        try:
            # One producer connection; kombu's batch pipelines the publishes to Redis.
            with self._producer.batch(max_size=max(1, len(chunks))):
                for chunk in chunks:
                    self.app.send_task(
                        defaults.CHUNK_TASK,
                        args=(job.job_id, job.target, chunk.to_wire(), job.reduce, job.on_error),
                        argsrepr=describe_chunk(job, chunk),
                        task_id=f"{job.job_id}-{chunk.index}",
                        queue=defaults.QUEUE,
                        producer=self._producer,
                    )
        except OperationalError as exc:
            raise BrokerUnavailable(f"lost the broker while sending chunks: {exc}") from None

    def wait(self, job: JobSpec, timeout: float) -> list[ChunkResult]:
        assert self.store is not None
        try:
            indices = self.store.pop_done(job.job_id, timeout)
            if not indices:
                return []
            raw = self.store.results(job.job_id, indices)
        except (redis.RedisError, OSError) as exc:
            raise BrokerUnavailable(f"lost the result store: {exc}") from None
        return [ChunkResult.from_wire(r) for r in raw if r is not None]

    def cancel(self, job: JobSpec) -> None:
        """Revoke the job: its ledger goes, so workers skip any chunk still queued."""
        if self.store is not None:
            try:
                self.store.delete(job.job_id)
            except redis.RedisError:
                pass

    def close_job(self, job: JobSpec) -> None:
        self.cancel(job)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.release()
            self._producer = None
        if self.app is not None:
            self.app.close()
            self.app = None
        if self.store is not None:
            self.store.client.close()
            self.store = None
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
