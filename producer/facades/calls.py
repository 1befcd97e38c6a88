"""Explicit calls ``f(*args, **kwargs)`` on a backend, each with its own Future.

The one engine under the Executor, Pool and joblib facades. It uses the same
:class:`~distloop.backends.base.Backend` interface and the same chunk kernel as
``distloop run``: a chunk carries explicit calls instead of a range::

    submit_calls (any thread)              collector thread (the only one touching the backend)
    -------------------------              --------------------------------------------------
    name f (distloop.tasks.targets.target_of)
    encode args (distloop.tasks.core.codec)
    chunk: calls + one Future per call
           |
           v
    pending (cancellable)  --- window --->  backend.open_job(job)   (one job per function)
                                            backend.submit(job, [ChunkSpec(calls=...)])
                                            Futures marked running
                                            backend.wait(job) -> ChunkResult
    Future.result()        <--------------  each item's value, or its error (position in chunk)

Chunks wait locally until fewer than ``window`` are in flight, so a Future that
has not been sent can still be cancelled, as in ``concurrent.futures``.
"""

from __future__ import annotations

import atexit
import itertools
import math
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from distloop.assemble import fatal_error
from distloop.backends.base import Backend, JobSpec
from distloop.dispatch import resend_lost
from distloop.facades.call_errors import call_error, describe, encode_call, name_of
from distloop.tasks.core import codec, defaults
from distloop.tasks.core.errors import (
    BrokerUnavailable,
    DistloopError,
)
from distloop.tasks.kernel import ChunkResult, ChunkSpec

#: Seconds the collector waits for results before looking at new submissions again.
POLL_SECONDS = 0.05

Call = tuple[Sequence[Any], dict[str, Any]]


def pool_chunksize(items: int, workers: int) -> int:
    """``multiprocessing.Pool``'s rule: about four chunks per worker process."""
    return max(1, math.ceil(items / (defaults.MIN_CHUNKS_PER_WORKER * max(1, workers))))


@dataclass
class _Chunk:
    job: JobSpec
    calls: list[Any]  # encoded [args, kwargs] per call
    futures: list[Future[Any]]
    index: int = -1


@dataclass
class _Jobs:
    """One job per function: its spec, whether the backend opened it, its next chunk index."""

    by_target: dict[str, JobSpec] = field(default_factory=dict)
    opened: set[str] = field(default_factory=set)
    next_index: dict[str, int] = field(default_factory=dict)


class CallDispatcher:
    """Runs calls on ``backend`` from a collector thread; completes a Future per call."""

    def __init__(self, backend: Backend, *, own_backend: bool = True, window: int | None = None) -> None:
        self.backend = backend
        self.own_backend = own_backend
        self.window = window or 2 * backend.workers
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: deque[_Chunk] = deque()
        self._in_flight: dict[tuple[str, int], _Chunk] = {}
        self._jobs = _Jobs()
        self._closing = False
        self._terminating = False
        self._broken: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="distloop-collector", daemon=True)
        self._thread.start()
        _live.add(self)

    # -- any thread ---------------------------------------------------------

    def submit_calls(self, fn: Callable[..., Any], calls: Iterable[Call], chunksize: int = 1) -> list[Future[Any]]:
        """Queue ``fn``'s calls in chunks of ``chunksize``; one Future per call, in order."""
        if chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, not {chunksize}")
        target = name_of(fn)
        chunks: list[_Chunk] = []
        futures: list[Future[Any]] = []
        calls = iter(calls)
        position = 0
        while batch := list(itertools.islice(calls, chunksize)):
            encoded = []
            for args, kwargs in batch:
                encoded.append(encode_call(target, args, kwargs, position))
                position += 1
            chunk = _Chunk(self._job_for(target), encoded, [Future() for _ in batch])
            chunks.append(chunk)
            futures.extend(chunk.futures)
        with self._lock:
            self._check_open()
            self._pending.extend(chunks)
            self._wake.notify_all()
        return futures

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """No new calls; with ``cancel_futures`` drop those not sent yet; with ``wait`` block until done."""
        with self._lock:
            self._closing = True
            dropped = self._take_pending() if cancel_futures else []
            self._wake.notify_all()
        _cancel(dropped)
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def terminate(self) -> None:
        """Stop now: cancel what was not sent, drop the jobs on the workers, fail what was in flight."""
        with self._lock:
            self._closing = self._terminating = True
            dropped = self._take_pending()
            self._wake.notify_all()
        _cancel(dropped)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _take_pending(self) -> list[_Chunk]:
        # Cancelled outside the lock: done callbacks may submit again (imap).
        chunks = list(self._pending)
        self._pending.clear()
        return chunks

    def _check_open(self) -> None:
        if self._broken is not None:
            raise BrokerUnavailable(f"the executor is broken: {self._broken}")
        if self._closing:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _job_for(self, target: str) -> JobSpec:
        with self._lock:
            job = self._jobs.by_target.get(target)
            if job is None:
                job = JobSpec(uuid.uuid4().hex[:12], target, None, "collect", meta={"facade": "calls"})
                self._jobs.by_target[target] = job
            return job

    # -- the collector thread -------------------------------------------------

    def _run(self) -> None:
        next_check = time.monotonic() + defaults.RECOVERY_INTERVAL
        try:
            while True:
                with self._lock:
                    while not (self._pending or self._in_flight or self._closing):
                        self._wake.wait()
                    if self._terminating or (self._closing and not self._pending and not self._in_flight):
                        break
                    batch = self._take_sendable()
                self._send(batch)
                self._collect()
                if time.monotonic() >= next_check:
                    self._resend_lost()
                    next_check = time.monotonic() + defaults.RECOVERY_INTERVAL
        except BaseException as exc:
            self._fail_everything(exc)
        finally:
            self._release()

    def _take_sendable(self) -> list[_Chunk]:
        """Chunks to send now (within the window), their Futures marked running; cancelled calls dropped."""
        batch: list[_Chunk] = []
        while self._pending and len(self._in_flight) + len(batch) < self.window:
            chunk = self._pending.popleft()
            keep = [n for n, f in enumerate(chunk.futures) if f.set_running_or_notify_cancel()]
            if not keep:
                continue
            if len(keep) < len(chunk.futures):
                chunk = _Chunk(chunk.job, [chunk.calls[n] for n in keep], [chunk.futures[n] for n in keep])
            target = chunk.job.target
            chunk.index = self._jobs.next_index.get(target, 0)
            self._jobs.next_index[target] = chunk.index + 1
            self._in_flight[(chunk.job.job_id, chunk.index)] = chunk
            batch.append(chunk)
        return batch

    def _send(self, batch: list[_Chunk]) -> None:
        for chunk in batch:
            if chunk.job.job_id not in self._jobs.opened:
                self.backend.open_job(chunk.job)
                self._jobs.opened.add(chunk.job.job_id)
            self.backend.submit(chunk.job, [ChunkSpec(index=chunk.index, calls=chunk.calls)])

    def _collect(self) -> None:
        with self._lock:
            jobs = {c.job.job_id: c.job for c in self._in_flight.values()}
        if not jobs:
            return
        timeout = max(0.01, POLL_SECONDS / len(jobs))
        for job in jobs.values():
            for result in self.backend.wait(job, timeout):
                with self._lock:
                    chunk = self._in_flight.pop((job.job_id, result.index), None)
                if chunk is not None:  # None: a duplicate delivery, already counted
                    _complete(chunk, result)

    def _resend_lost(self) -> None:
        """Send again the chunks a dead worker, a restarted Redis or an expired ledger lost (as run_chunks does)."""
        with self._lock:
            by_job: dict[str, list[_Chunk]] = {}
            for chunk in self._in_flight.values():
                by_job.setdefault(chunk.job.job_id, []).append(chunk)
        for chunks in by_job.values():
            resend_lost(self.backend, chunks[0].job, {c.index: ChunkSpec(index=c.index, calls=c.calls) for c in chunks})

    def _fail_everything(self, exc: BaseException) -> None:
        with self._lock:
            self._broken = exc
            chunks = list(self._pending) + list(self._in_flight.values())
            self._pending.clear()
            self._in_flight.clear()
        error = exc if isinstance(exc, DistloopError) else BrokerUnavailable(f"the executor failed: {exc!r}")
        for chunk in chunks:
            for future in chunk.futures:
                if not future.done():
                    future.set_exception(error)

    def _release(self) -> None:
        """Close the jobs (and the backend if ours); calls still in flight fail (terminate)."""
        with self._lock:
            in_flight = list(self._in_flight.values())
            self._in_flight.clear()
            self._closing = True
        for chunk in in_flight:
            for future in chunk.futures:
                if not future.done():
                    future.set_exception(DistloopError(f"{chunk.job.target}: terminated before it finished"))
        try:
            for job in self._jobs.by_target.values():
                if job.job_id in self._jobs.opened:
                    if in_flight:  # terminated: workers skip the job's chunks still queued
                        self.backend.cancel(job, "terminated")
                    self.backend.close_job(job)
        finally:
            if self.own_backend:
                self.backend.close()
            _live.discard(self)


def _cancel(chunks: list[_Chunk]) -> None:
    for chunk in chunks:
        for future in chunk.futures:
            future.cancel()


def _complete(chunk: _Chunk, result: ChunkResult) -> None:
    """Settle each call's Future from its chunk's result."""
    if result.fatal:
        error = fatal_error(result.fatal)
        for future in chunk.futures:
            future.set_exception(error)
        return
    errors = {e["index"]: e for e in result.errors}
    values = result.values or []
    for position, future in enumerate(chunk.futures):
        if position in errors:
            args, kwargs = chunk.calls[position]
            call = describe(chunk.job.target, codec.decode(args), codec.decode(kwargs))
            future.set_exception(call_error(errors[position], call, chunk.job.target))
        elif position < len(values):
            future.set_result(codec.decode(values[position]))
        else:
            future.set_exception(DistloopError(f"{chunk.job.target}: the worker returned no result for this call"))


_live: weakref.WeakSet[CallDispatcher] = weakref.WeakSet()


@atexit.register
def _shutdown_at_exit() -> None:
    """Finish queued work and stop what we started (an embedded cluster) when Python exits."""
    for dispatcher in list(_live):
        dispatcher.shutdown(wait=True)
