"""Explicit calls ``f(*args, **kwargs)`` on a backend: the one engine under the facades.

The Executor, Pool and joblib facades use the same
:class:`~distloop.backends.base.Backend` interface and the same chunk kernel as
``distloop run``: a chunk carries explicit calls instead of a range::

    any thread                                  collector thread (the only one touching the backend)
    ----------                                  --------------------------------------------------
    submit(f, x): name f, encode x, a Future;
      appended to f's open batch  ---+
    map(f, xs): encode xs at once,   |-- queue -->  cut chunks within the window:
      chunks sized by sizing.py,     |              submits of a function whose calls are short
      one CallBatch                --+              coalesce into one message; backend.submit
                                                    backend.wait -> ChunkResult
    Future.result() / CallBatch.wait()  <-------   the chunk's receiver: a Future per call, or
                                                    the batch's values kept per chunk

Chunks wait locally until fewer than ``window`` are in flight, so a call that
has not been sent can still be cancelled, as in ``concurrent.futures``.
Submitted calls of a function join one message only once that function's
measured cost per call says they are short; until then (and for long calls)
each is its own message, run in parallel as the standard library's pools run them.
"""

from __future__ import annotations

import atexit
import math
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from distloop.backends.base import Backend, JobSpec
from distloop.dispatch import resend_lost
from distloop.facades.batch import CallBatch, Chunk, FutureCalls, encode_call, encode_calls, encode_each
from distloop.facades.call_errors import name_of
from distloop.ranges import as_range
from distloop.sizing import call_chunk_size
from distloop.tasks.core import blobs, defaults
from distloop.tasks.core.errors import BrokerUnavailable, DistloopError, InitializerFailed
from distloop.tasks.kernel import ChunkResult

#: Seconds the collector waits for results before looking at new submissions again;
#: submissions arriving meanwhile coalesce.
POLL_SECONDS = 0.05

Call = tuple[Sequence[Any], dict[str, Any]]


@dataclass(eq=False)
class _Pending:
    """Submitted calls of one function not sent yet, in order, each with its Future."""

    job: JobSpec
    calls: list[Any] = field(default_factory=list)
    futures: list[Future[Any]] = field(default_factory=list)
    blobs: list[dict[str, Any]] = field(default_factory=list)  # each call's large arrays, beside it


@dataclass
class _Jobs:
    """One job per function: its spec, whether the backend opened it, its next chunk index."""

    by_target: dict[str, JobSpec] = field(default_factory=dict)
    opened: set[str] = field(default_factory=set)
    next_index: dict[str, int] = field(default_factory=dict)


class CallDispatcher:
    """Runs calls on ``backend`` from a collector thread.

    ``init``: the initializer's wire form (``distloop.tasks.initializer``), sent with every chunk.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        own_backend: bool = True,
        window: int | None = None,
        init: dict[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.own_backend = own_backend
        self.window = window or 2 * backend.workers
        self.init = init
        self.pool_id = init["pool"] if init else uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[_Pending | Chunk] = deque()
        self._open: dict[str, _Pending] = {}
        self._in_flight: dict[tuple[str, int], Chunk] = {}
        self._unsent: list[Chunk] = []  # in flight (counted, not cancellable), for the collector to send
        self._jobs = _Jobs()
        self._names: dict[Callable[..., Any], str] = {}
        self._cost: dict[str, float] = {}  # seconds per call, by target, from finished chunks
        self._trimmed: dict[str, int] = {}  # job id -> every chunk below it came back (see _trim)
        self._closing = False
        self._terminating = False
        self._broken: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="distloop-collector", daemon=True)
        self._thread.start()
        _live.add(self)

    # -- any thread ---------------------------------------------------------

    def job_for(self, fn: Callable[..., Any]) -> JobSpec:
        """The job that runs ``fn``'s calls (one per function)."""
        try:
            target = self._names.get(fn)
        except TypeError:  # an unhashable callable: name_of says why it cannot travel
            target = name_of(fn)
        if target is None:
            target = name_of(fn)
            self._names[fn] = target
        with self._lock:
            return self._job_locked(target)

    def _job_locked(self, target: str) -> JobSpec:
        job = self._jobs.by_target.get(target)
        if job is None:
            # No resume for calls: each result leaves Redis once read (keep_results).
            job = JobSpec(uuid.uuid4().hex[:12], target, None, "collect", meta={"facade": "calls"}, keep_results=False)
            self._jobs.by_target[target] = job
        return job

    @property
    def closed(self) -> bool:
        """Shut down or broken: no new calls are accepted."""
        return self._closing or self._broken is not None

    def cost(self, target: str) -> float:
        """Measured seconds per call of ``target`` (0.0: not measured yet)."""
        return self._cost.get(target, 0.0)

    def submit(self, fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Future[Any]:
        """Queue one call; its Future. Calls of one function wait together until the collector cuts chunks."""
        job = self.job_for(fn)
        with self.out_of_band() as buffers:
            call = encode_call(job.target, args, kwargs, 0)
        future: Future[Any] = Future()
        with self._lock:
            self._check_open()
            if not self._queue and len(self._in_flight) < self.window:
                # A free slot and nothing waiting: this call is sent as it is, as the standard
                # library's pools move a call to their workers' queue while it has room.
                future.set_running_or_notify_cancel()
                self._start_locked(Chunk(job, FutureCalls([future]), calls=[call], blobs=buffers))
                self._wake.notify_all()
                return future
            pending = self._open.get(job.target)
            if pending is None:
                pending = self._open[job.target] = _Pending(job)
                self._queue.append(pending)
                self._wake.notify_all()
            pending.calls.append(call)
            pending.futures.append(future)
            pending.blobs.append(buffers)
        return future

    def out_of_band(self) -> AbstractContextManager[dict[str, Any]]:
        """Encoding inside it puts large arrays beside the message, where the backend can carry them."""
        return blobs.out_of_band(self.backend.out_of_band)

    def submit_calls(self, fn: Callable[..., Any], calls: Iterable[Call], chunksize: int = 1) -> list[Future[Any]]:
        """Queue ``fn``'s calls in chunks of exactly ``chunksize``; one Future per call, in order."""
        if chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, not {chunksize}")
        job = self.job_for(fn)
        every = list(calls)
        chunks: list[Chunk] = []
        futures: list[Future[Any]] = []
        for start in range(0, len(every), chunksize):
            with self.out_of_band() as buffers:  # each chunk carries its own arguments' arrays
                part = encode_calls(job.target, every[start : start + chunksize], start)
            own: list[Future[Any]] = [Future() for _ in part]
            chunks.append(Chunk(job, FutureCalls(own), calls=part, blobs=buffers))
            futures.extend(own)
        self.add_chunks(chunks)
        return futures

    def map_calls(
        self,
        fn: Callable[..., Any],
        values: Sequence[Any],
        *,
        star: bool = False,
        explicit: bool = False,
        chunksize: int | None = None,
        batch: CallBatch | None = None,
        seal: bool = True,
    ) -> CallBatch:
        """Queue ``fn(x)`` (``fn(*x)`` with ``star``, ``fn(*args, **kwargs)`` for ``(args, kwargs)``
        pairs with ``explicit``) for each of ``values``: chunks of one CallBatch.

        Encoded in one go; ``chunksize`` calls per message, by default sized by
        :func:`distloop.sizing.call_chunk_size` from the function's measured cost (before
        any is measured: about four chunks per worker process, ``multiprocessing``'s rule).
        """
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, not {chunksize}")
        job = self.job_for(fn)
        batch = batch if batch is not None else CallBatch()
        size = chunksize or call_chunk_size(len(values), self.cost(job.target), self.backend.workers)
        if star:  # fn(*x): explicit calls without keywords
            values, explicit = [(tuple(args), {}) for args in values], True
        span = None if explicit else as_range(values)
        if span is not None:  # fn(i) over a range: each chunk sends its bounds, as distloop run's do
            chunks = [batch.add(job, span=span[s : s + size]) for s in range(0, len(span), size)]
        else:
            chunks = self._encoded_chunks(job, batch, values, size, explicit)
        self.add_chunks(chunks)
        if seal:
            batch.seal()
        return batch

    def _encoded_chunks(
        self, job: JobSpec, batch: CallBatch, values: Sequence[Any], size: int, explicit: bool
    ) -> list[Chunk]:
        """``values`` cut into chunks of ``size`` calls, each encoded with its own large arrays beside it."""
        chunks = []
        for s in range(0, len(values), size):
            with self.out_of_band() as buffers:
                if explicit:
                    part = encode_calls(job.target, values[s : s + size], s)
                    chunks.append(batch.add(job, calls=part, blobs=buffers))
                else:
                    chunks.append(batch.add(job, each=encode_each(job.target, values[s : s + size], s), blobs=buffers))
        return chunks

    def map_delayed(self, calls: Iterable[Any], batch: CallBatch, chunksize: int | None = None) -> int:
        """Queue joblib-style ``(f, args, kwargs)`` calls as chunks of ``batch`` (not sealed); how many.

        Consecutive calls of one function share chunks; ``f(x)`` calls keep only ``x``
        (no tuple or dict per call is held: a list of 10**5 of them costs more in
        garbage collection than the calls cost to send). ``chunksize``: calls per chunk
        (default: sized from the function's measured cost, as ``map``).
        """
        count = 0
        func: Any = None
        values: list[Any] = []  # the run's single arguments, or its (args, kwargs) pairs
        append = values.append
        explicit = False

        def flush() -> int:
            if values:
                self.map_calls(func, values, explicit=explicit, chunksize=chunksize, batch=batch, seal=False)
            return len(values)

        for call in calls:
            try:
                fn, args, kwargs = call
            except (TypeError, ValueError):
                raise TypeError(f"expected delayed(f)(...) calls, (f, args, kwargs), not {call!r}") from None
            if fn is func and not explicit and not kwargs and len(args) == 1:  # the common case, first
                append(args[0])
                continue
            single = len(args) == 1 and not kwargs
            if fn is not func or not (explicit or single):  # a new function, or f(x) calls meet others
                count += flush()
                func, values, explicit = fn, [], not single
                append = values.append
            append((args, kwargs) if explicit else args[0])
        return count + flush()

    def add_chunks(self, chunks: list[Chunk]) -> None:
        """Queue ready-made chunks (in order)."""
        with self._lock:
            self._check_open()
            self._queue.extend(chunks)
            self._wake.notify_all()

    def withdraw(self, batch: CallBatch) -> None:
        """Drop ``batch``'s chunks not sent yet (an abandoned ``map``), as cancelled Futures are."""
        batch.cancelled = True
        with self._lock:
            dropped = [e for e in self._queue if isinstance(e, Chunk) and e.receiver is batch]
            if dropped:
                self._queue = deque(e for e in self._queue if not (isinstance(e, Chunk) and e.receiver is batch))
        for chunk in dropped:
            chunk.receiver.cancel(chunk)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """No new calls; with ``cancel_futures`` drop those not sent yet; with ``wait`` block until done."""
        with self._lock:
            self._closing = True
            dropped = self._take_queue() if cancel_futures else []
            self._wake.notify_all()
        _cancel(dropped)
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def terminate(self) -> None:
        """Stop now: cancel what was not sent, drop the jobs on the workers, fail what was in flight."""
        with self._lock:
            self._closing = self._terminating = True
            dropped = self._take_queue()
            self._wake.notify_all()
        _cancel(dropped)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _take_queue(self) -> list[_Pending | Chunk]:
        # Cancelled outside the lock: done callbacks may submit again (imap).
        entries = list(self._queue)
        self._queue.clear()
        self._open.clear()
        return entries

    def _check_open(self) -> None:
        if self._broken is not None:
            if isinstance(self._broken, InitializerFailed):
                raise self._broken
            raise BrokerUnavailable(f"the executor is broken: {self._broken}")
        if self._closing:
            raise RuntimeError("cannot schedule new futures after shutdown")

    # -- the collector thread -------------------------------------------------

    def _run(self) -> None:
        next_check = time.monotonic() + defaults.RECOVERY_INTERVAL
        try:
            while True:
                with self._lock:
                    while not (self._queue or self._in_flight or self._unsent or self._closing):
                        self._wake.wait()
                    if self._terminating or (self._closing and not self._queue and not self._in_flight):
                        break
                    batch, dropped = self._take_sendable()
                _cancel(dropped)
                self._send(batch)
                self._collect()
                if time.monotonic() >= next_check:
                    self._resend_lost()
                    self._trim()
                    next_check = time.monotonic() + defaults.RECOVERY_INTERVAL
        except BaseException as exc:
            self._fail_everything(exc)
        finally:
            self._release()

    def _coalesce(self, target: str, waiting: int) -> int:
        """How many submitted calls of ``target`` go in the next message.

        One until a call of it has been timed; then what runs in about
        ``TARGET_CHUNK_SECONDS``, spread over the worker processes.
        """
        cost = self._cost.get(target, 0.0)
        if cost <= 0:
            return 1
        by_time = max(1, int(defaults.TARGET_CHUNK_SECONDS / cost))
        return max(1, min(by_time, math.ceil(waiting / max(1, self.backend.workers))))

    def _start_locked(self, chunk: Chunk) -> None:
        """Give ``chunk`` its index and count it in flight; the collector sends it next."""
        target = chunk.job.target
        index = self._jobs.next_index.get(target, 0)
        self._jobs.next_index[target] = index + 1
        chunk.to_spec(index, self.init)
        self._in_flight[(chunk.job.job_id, index)] = chunk
        self._unsent.append(chunk)

    def _take_sendable(self) -> tuple[list[Chunk], list[Chunk]]:
        """Chunks to send now (within the window), and those all of whose calls were cancelled."""
        dropped: list[Chunk] = []
        while self._queue and len(self._in_flight) < self.window:
            entry = self._queue[0]
            if isinstance(entry, _Pending):
                n = self._coalesce(entry.job.target, len(entry.calls))
                buffers = {name: data for own in entry.blobs[:n] for name, data in own.items()}
                chunk = Chunk(entry.job, FutureCalls(entry.futures[:n]), calls=entry.calls[:n], blobs=buffers)
                del entry.calls[:n], entry.futures[:n], entry.blobs[:n]
                if not entry.calls:
                    self._queue.popleft()
                    if self._open.get(entry.job.target) is entry:
                        del self._open[entry.job.target]
            else:
                self._queue.popleft()
                chunk = entry
            if chunk.receiver.start(chunk) is None:
                dropped.append(chunk)
                continue
            self._start_locked(chunk)
        batch, self._unsent = self._unsent, []
        return batch, dropped

    def _send(self, batch: list[Chunk]) -> None:
        by_job: dict[str, list[Chunk]] = {}
        for chunk in batch:
            by_job.setdefault(chunk.job.job_id, []).append(chunk)
        for chunks in by_job.values():
            job = chunks[0].job
            if job.job_id not in self._jobs.opened:
                self.backend.open_job(job)
                self._jobs.opened.add(job.job_id)
            self.backend.submit(job, [c.spec for c in chunks if c.spec is not None])

    def _collect(self) -> None:
        with self._lock:
            # (Only jobs opened: a chunk submitted meanwhile is counted in flight before it is sent.)
            jobs = {c.job.job_id: c.job for c in self._in_flight.values() if c.job.job_id in self._jobs.opened}
            room = bool(self._unsent) or (bool(self._queue) and len(self._in_flight) < self.window)
        if not jobs:
            return
        # New work arrived while sending and there is room: only glance at the results.
        timeout = 0.005 if room else max(0.01, POLL_SECONDS / len(jobs))
        for job in jobs.values():
            for result in self.backend.wait(job, timeout):
                with self._lock:
                    chunk = self._in_flight.pop((job.job_id, result.index), None)
                    if chunk is not None:
                        self._observe(job.target, result)
                if chunk is None:  # a duplicate delivery, already counted
                    continue
                chunk.receiver.finish(chunk, result)
                if result.fatal and result.fatal.get("kind") == "initializer":
                    self._break(InitializerFailed(result.fatal["message"]))

    def _observe(self, target: str, result: ChunkResult) -> None:
        """Fold a chunk's timing into the function's cost per call (recent chunks weigh most)."""
        if result.items and result.seconds > 0:
            latest = result.seconds / result.items
            old = self._cost.get(target, 0.0)
            self._cost[target] = latest if old <= 0 else 0.5 * old + 0.5 * latest

    def _break(self, exc: BaseException) -> None:
        """The pool is broken (its initializer failed): what waits fails with ``exc``, new calls are refused."""
        with self._lock:
            self._broken = exc
            entries = self._take_queue()
            in_flight = list(self._in_flight.values())
            self._in_flight.clear()  # their results, if any come, are ignored
            self._unsent.clear()
        for entry in entries:
            _fail(entry, exc)
        for chunk in in_flight:
            chunk.receiver.fail(chunk, exc)

    def _resend_lost(self) -> None:
        """Send again the chunks a dead worker, a restarted Redis or an expired ledger lost (as run_chunks does)."""
        with self._lock:
            by_job: dict[str, list[Chunk]] = {}
            for chunk in self._in_flight.values():
                by_job.setdefault(chunk.job.job_id, []).append(chunk)
        for chunks in by_job.values():
            resend_lost(self.backend, chunks[0].job, {c.index: c.spec for c in chunks if c.spec is not None})

    def _trim(self) -> None:
        """Tell each job's backend which chunks all came back: below the lowest one in flight
        (the tombstones of their read results then go too, and a late copy of one is dropped)."""
        with self._lock:
            lowest = dict(self._jobs.next_index)
            for (_, index), chunk in self._in_flight.items():
                target = chunk.job.target
                lowest[target] = min(lowest.get(target, index), index)
            jobs = [(job, lowest.get(target, 0)) for target, job in self._jobs.by_target.items()
                    if job.job_id in self._jobs.opened]  # fmt: skip
        for job, below in jobs:
            if below > self._trimmed.get(job.job_id, 0):
                self.backend.collected(job, {"next": below})
                self._trimmed[job.job_id] = below

    def _fail_everything(self, exc: BaseException) -> None:
        with self._lock:
            self._broken = exc
            entries: list[_Pending | Chunk] = [*self._take_queue(), *self._in_flight.values()]
            self._in_flight.clear()
            self._unsent.clear()
        error = exc if isinstance(exc, DistloopError) else BrokerUnavailable(f"the executor failed: {exc!r}")
        for entry in entries:
            _fail(entry, error)

    def _release(self) -> None:
        """Close the jobs (and the backend if ours); calls still in flight fail (terminate)."""
        with self._lock:
            in_flight = list(self._in_flight.values())
            self._in_flight.clear()
            self._closing = True
        for chunk in in_flight:
            chunk.receiver.fail(chunk, DistloopError(f"{chunk.job.target}: terminated before it finished"))
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


def _cancel(entries: Sequence[_Pending | Chunk]) -> None:
    for entry in entries:
        if isinstance(entry, _Pending):
            for future in entry.futures:
                future.cancel()
        else:
            entry.receiver.cancel(entry)


def _fail(entry: _Pending | Chunk, exc: BaseException) -> None:
    if isinstance(entry, _Pending):
        for future in entry.futures:
            if future.set_running_or_notify_cancel():
                future.set_exception(exc)
    else:
        entry.receiver.fail(entry, exc)


_live: weakref.WeakSet[CallDispatcher] = weakref.WeakSet()


@atexit.register
def _shutdown_at_exit() -> None:
    """Finish queued work and stop what we started (an embedded cluster) when Python exits."""
    for dispatcher in list(_live):
        dispatcher.shutdown(wait=True)
