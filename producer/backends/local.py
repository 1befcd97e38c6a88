"""Local backends: the same chunk kernel in this process, in threads, in processes."""

from __future__ import annotations

import functools
import os
import queue
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor

from distloop.backends.base import Backend, JobSpec
from distloop.tasks.core import defaults
from distloop.tasks.core.settings import Settings
from distloop.tasks.kernel import ChunkResult, ChunkSpec, item_error, run_named_chunk


class SerialBackend(Backend):
    """One chunk after another in the calling thread: the baseline."""

    name = "serial"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._pending: deque[ChunkSpec] = deque()

    @property
    def workers(self) -> int:
        return 1

    def open_job(self, job: JobSpec) -> None:
        self._pending.clear()

    def submit(self, job: JobSpec, chunks: Sequence[ChunkSpec]) -> None:
        self._pending.extend(chunks)

    def wait(self, job: JobSpec, timeout: float) -> list[ChunkResult]:
        if not self._pending:
            return []
        chunk = self._pending.popleft()
        return [run_named_chunk(job.target, chunk, job.reduce, job.on_error, io_concurrency=job.io_concurrency)]

    def cancel(self, job: JobSpec, why: str = "stopped") -> None:
        self._pending.clear()


class PoolBackend(Backend):
    """Chunks on a ``concurrent.futures`` pool; results queue up as they finish."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._pool: Executor | None = None
        self._done: queue.SimpleQueue[ChunkResult] = queue.SimpleQueue()
        self._futures: set[Future[ChunkResult]] = set()

    @property
    def workers(self) -> int:
        return self.requested_workers or os.cpu_count() or 1

    def make_pool(self) -> Executor:
        raise NotImplementedError

    def start(self, allow: Sequence[str] = ()) -> None:
        if self._pool is None:
            self._pool = self.make_pool()

    def open_job(self, job: JobSpec) -> None:
        self.start()

    def submit(self, job: JobSpec, chunks: Sequence[ChunkSpec]) -> None:
        assert self._pool is not None
        for chunk in chunks:
            future = self._pool.submit(
                run_named_chunk, job.target, chunk, job.reduce, job.on_error, io_concurrency=job.io_concurrency
            )
            self._futures.add(future)
            future.add_done_callback(functools.partial(self._finished, chunk))

    def _finished(self, chunk: ChunkSpec, future: Future[ChunkResult]) -> None:
        self._futures.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            self._done.put(future.result())
        else:  # the pool itself failed (a killed child process): report it as data
            self._done.put(ChunkResult(index=chunk.index, fatal={"kind": "worker", **item_error(None, exc)}))

    def wait(self, job: JobSpec, timeout: float) -> list[ChunkResult]:
        try:
            results = [self._done.get(timeout=timeout)]
        except queue.Empty:
            return []
        while not self._done.empty():
            results.append(self._done.get_nowait())
        return results

    def cancel(self, job: JobSpec, why: str = "stopped") -> None:
        for future in list(self._futures):
            future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class ThreadBackend(PoolBackend):
    """Threads: concurrent, but one core at a time for Python code (the GIL).

    Sized for waiting work: :data:`defaults.THREAD_WORKERS` threads unless ``--workers``
    says otherwise. ``ThreadPoolExecutor`` starts a thread only when none is idle, so
    a computing loop, whose chunks the planner keeps few (:mod:`distloop.sizing`), runs
    on about as many threads as it has chunks in flight.
    """

    name = "thread"

    @classmethod
    def worker_cap(cls, settings: Settings) -> int:
        return defaults.MAX_POOL_CONCURRENCY  # threads, not processes: waiting work wants many

    @property
    def threaded(self) -> bool:
        return True

    @property
    def workers(self) -> int:
        return self.requested_workers or defaults.THREAD_WORKERS

    def make_pool(self) -> Executor:
        return ThreadPoolExecutor(self.workers, thread_name_prefix="distloop")


class ProcessBackend(PoolBackend):
    """A local process pool: what ``multiprocessing.Pool`` gives, with the same kernel."""

    name = "process"

    def make_pool(self) -> Executor:
        return ProcessPoolExecutor(self.workers)
