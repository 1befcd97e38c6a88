"""Chunks of explicit calls, and who waits for their results.

A chunk (:class:`Chunk`) holds encoded calls of one function and its
:class:`Receiver`, which the collector hands the chunk's result to:

- :class:`FutureCalls`: one ``concurrent.futures.Future`` per call, for ``submit`` and
  ``apply_async``, whose callers hold the Futures;
- :class:`CallBatch`: the results of a ``map``-like call, kept chunk by chunk. ``map``,
  ``imap`` and joblib's batches read them in order (or as chunks finish) without a
  Future, a lock or a callback per call: producer work per call is a list append.

Turning an item's error into the exception the caller sees happens in one place,
:func:`item_exception` (through :func:`distloop.facades.call_errors.call_error`).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any

from distloop.assemble import fatal_error
from distloop.backends.base import JobSpec
from distloop.facades.call_errors import TYPES_HINT, call_error, describe, encode_call
from distloop.tasks.core import blobs, codec
from distloop.tasks.core.errors import DistloopError, InitializerFailed, RemoteTraceback, ResultNotSerializable
from distloop.tasks.kernel import ChunkResult, ChunkSpec


@dataclass(eq=False)
class Chunk:
    """Calls of ``job``'s function sent as one message: ``each`` (``f(x)``), ``calls`` (``[args, kwargs]``),
    or ``span``: ``f(i)`` for each ``i`` of a range, sent as a range chunk (its bounds, not its items)."""

    job: JobSpec
    receiver: Receiver
    slot: int = 0  # the receiver's number for this chunk
    each: list[Any] | None = None
    calls: list[Any] | None = None
    index: int = -1  # the chunk's index in its job, once sent
    spec: ChunkSpec | None = None
    blobs: dict[str, Any] | None = None  # large arrays among the arguments, beside the message
    span: range | None = None

    def __post_init__(self) -> None:
        self.blobs = self.blobs or None  # an empty sink: none

    def _decoded(self, value: Any) -> Any:
        return codec.decode(blobs.attach(value, self.blobs) if self.blobs else value)

    def __len__(self) -> int:
        if self.span is not None:
            return len(self.span)
        return len(self.each if self.each is not None else self.calls or ())

    def position(self, index: int) -> int:
        """The position in this chunk of a worker's item ``index`` (a range chunk's items are numbered by value)."""
        return index if self.span is None else (index - self.span.start) // self.span.step

    def call_text(self, position: int) -> str:
        """The call at ``position`` as error messages show it."""
        if self.span is not None:
            return describe(self.job.target, [self.span[position]], {})
        if self.each is not None:
            return describe(self.job.target, [self._decoded(self.each[position])], {})
        args, kwargs = (self.calls or [])[position]
        return describe(self.job.target, self._decoded(args), self._decoded(kwargs))

    def to_spec(self, index: int, init: dict[str, Any] | None) -> ChunkSpec:
        self.index = index
        if self.span is not None:
            span = self.span
            self.spec = ChunkSpec(index=index, start=span.start, stop=span.stop, step=span.step, init=init)
        else:
            self.spec = ChunkSpec(index=index, calls=self.calls, each=self.each, init=init, blobs=self.blobs)
        return self.spec


def item_exception(chunk: Chunk, position: int, error: dict[str, Any]) -> Exception:
    """The exception the caller sees for the call at ``position`` that failed on a worker."""
    return call_error(error, chunk.call_text(position), chunk.job.target)


def fatal_exception(fatal: dict[str, Any]) -> Exception:
    """The error for a chunk that could not run at all (refused target, failing initializer...)."""
    if fatal.get("kind") == "initializer":
        exc = InitializerFailed(fatal["message"])
        if fatal.get("traceback"):
            exc.__cause__ = RemoteTraceback(fatal["traceback"])
        return exc
    return fatal_error(fatal)


def encode_each(target: str, values: Sequence[Any], first: int = 0) -> list[Any]:
    """``values`` as single arguments on the wire, at C speed; the item that cannot travel named
    (``first``: the position of ``values[0]`` among the caller's)."""
    try:
        return codec.encode_all(values)
    except codec.NotJSONable:
        for position, value in enumerate(values):
            try:
                codec.encode(value)
            except codec.NotJSONable as exc:
                raise ResultNotSerializable(
                    f"cannot send {describe(target, [value], {})} (item {first + position}): {exc}; {TYPES_HINT}"
                ) from None
        raise


def encode_calls(target: str, calls: Sequence[tuple[Sequence[Any], dict[str, Any]]], first: int = 0) -> list[Any]:
    return [encode_call(target, args, kwargs, n) for n, (args, kwargs) in enumerate(calls, first)]


class Receiver(ABC):
    """Who gets a chunk's result. Called from the collector thread, never under its lock,
    except :meth:`start`, which must not run callbacks."""

    def start(self, chunk: Chunk) -> Chunk | None:
        """The chunk is about to be sent: the chunk to send (calls cancelled meanwhile dropped), or None."""
        return chunk

    @abstractmethod
    def finish(self, chunk: Chunk, result: ChunkResult) -> None:
        """The chunk's result came back."""

    @abstractmethod
    def fail(self, chunk: Chunk, exc: BaseException) -> None:
        """The chunk will never have a result (terminated, broken executor)."""

    @abstractmethod
    def cancel(self, chunk: Chunk) -> None:
        """The chunk was never sent and never will be."""


class FutureCalls(Receiver):
    """A Future per call (``submit``, ``apply_async``); a call cancelled before it is sent is dropped."""

    def __init__(self, futures: list[Future[Any]]) -> None:
        self.futures = futures

    def start(self, chunk: Chunk) -> Chunk | None:
        keep = [n for n, f in enumerate(self.futures) if f.set_running_or_notify_cancel()]
        if len(keep) < len(self.futures):
            self.futures = [self.futures[n] for n in keep]
            chunk.calls = [chunk.calls[n] for n in keep] if chunk.calls is not None else None
            chunk.each = [chunk.each[n] for n in keep] if chunk.each is not None else None
        return chunk if keep else None

    def finish(self, chunk: Chunk, result: ChunkResult) -> None:
        if result.fatal:
            self.fail(chunk, fatal_exception(result.fatal))
            return
        errors = {chunk.position(e["index"]): e for e in result.errors}
        values = result.values or []
        for position, future in enumerate(self.futures):
            if position in errors:
                future.set_exception(item_exception(chunk, position, errors[position]))
            elif position < len(values):
                future.set_result(codec.decode(values[position]))
            else:
                future.set_exception(DistloopError(f"{chunk.job.target}: the worker returned no result for this call"))

    def fail(self, chunk: Chunk, exc: BaseException) -> None:
        for future in self.futures:
            if not future.done():
                future.set_exception(exc)

    def cancel(self, chunk: Chunk) -> None:
        for future in self.futures:
            future.cancel()


@dataclass
class Outcome:
    """One chunk's decoded values, its failed positions, or the error that stands for all its calls."""

    values: list[Any]
    errors: dict[int, dict[str, Any]]
    error: BaseException | None = None


class CallBatch(Receiver):
    """The results of one ``map``-like call, chunk by chunk (no Future per call).

    Chunks are added (all at once by ``map``, lazily by ``imap``) until :meth:`seal`.
    Readers wait for a chunk in order (:meth:`wait`) or for the next one to finish
    (:meth:`next_finished`); :meth:`future` is one Future for the whole list.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.chunks: list[Chunk] = []
        self._outcomes: list[Outcome | None] = []
        self._finished: deque[int] = deque()  # slots in the order they finished, not taken yet
        self._left = 0
        self._sealed = False
        self.cancelled = False
        self._watchers: list[Callable[[int], None]] = []
        self._future: Future[list[Any]] | None = None
        self._future_settled = False

    # -- building ------------------------------------------------------------

    def add(
        self, job: JobSpec, each: list[Any] | None = None, calls: list[Any] | None = None,
        blobs: dict[str, Any] | None = None, span: range | None = None,
    ) -> Chunk:  # fmt: skip
        with self._cond:
            chunk = Chunk(job, self, len(self.chunks), each, calls, blobs=blobs, span=span)
            self.chunks.append(chunk)
            self._outcomes.append(None)
            self._left += 1
        return chunk

    def seal(self) -> None:
        """No more chunks."""
        with self._cond:
            self._sealed = True
            done = self._left == 0
            self._cond.notify_all()
        if done:
            self._complete_future()

    def watch(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(slot)`` (from the collector thread) each time a chunk finishes."""
        self._watchers.append(callback)

    # -- the receiver side ------------------------------------------------------

    def start(self, chunk: Chunk) -> Chunk | None:
        return None if self.cancelled else chunk

    def finish(self, chunk: Chunk, result: ChunkResult) -> None:
        if result.fatal:
            self._settle(chunk.slot, Outcome([], {}, fatal_exception(result.fatal)))
        else:
            values = codec.decode_all(result.values or ())
            outcome = Outcome(values, {chunk.position(e["index"]): e for e in result.errors})
            if len(values) < len(chunk):  # never from this kernel: say so rather than lose calls
                outcome.error = DistloopError(f"{chunk.job.target}: the worker returned no result for some calls")
            self._settle(chunk.slot, outcome)

    def fail(self, chunk: Chunk, exc: BaseException) -> None:
        self._settle(chunk.slot, Outcome([], {}, exc))

    def cancel(self, chunk: Chunk) -> None:
        self._settle(chunk.slot, Outcome([], {}, CancelledError()))

    def _settle(self, slot: int, outcome: Outcome) -> None:
        with self._cond:
            if self._outcomes[slot] is not None:
                return
            self._outcomes[slot] = outcome
            self._left -= 1
            self._finished.append(slot)
            done = self._sealed and self._left == 0
            self._cond.notify_all()
        for watcher in self._watchers:
            watcher(slot)
        if done:
            self._complete_future()

    # -- the reading side -------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.chunks)

    @property
    def sealed(self) -> bool:
        return self._sealed

    def outstanding(self) -> int:
        """Chunks added that have no result yet."""
        return self._left

    def wait(self, slot: int, timeout: float | None = None) -> Outcome:
        """Chunk ``slot``'s outcome; ``TimeoutError`` if it is not there within ``timeout`` seconds."""
        with self._cond:
            outcome = self._outcomes[slot]
            if outcome is None:
                end = None if timeout is None else time.monotonic() + timeout
                while outcome is None:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError
                    self._cond.wait(left)
                    outcome = self._outcomes[slot]
            return outcome

    def next_finished(self, timeout: float | None = None) -> int | None:
        """The next chunk to finish (each slot once); None once the sealed batch has none left."""
        with self._cond:
            end = None if timeout is None else time.monotonic() + timeout
            while not self._finished:
                if self._sealed and self._left == 0:
                    return None
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError
                self._cond.wait(left)
            return self._finished.popleft()

    def values(self, slot: int) -> Iterable[Any]:
        """Chunk ``slot``'s values in order, raising a failed call's exception at its position.

        A chunk with no failed call gives its list itself (read it, do not change it): a
        generator step per value would cost the caller more than the values' whole trip.
        """
        outcome = self._outcomes[slot]
        assert outcome is not None
        if outcome.error is not None:
            raise outcome.error
        if not outcome.errors:
            return outcome.values
        return self._values_up_to_error(slot, outcome)

    def _values_up_to_error(self, slot: int, outcome: Outcome) -> Iterator[Any]:
        chunk = self.chunks[slot]
        for position, value in enumerate(outcome.values):
            if position in outcome.errors:
                raise item_exception(chunk, position, outcome.errors[position])
            yield value

    def first_error(self) -> BaseException | None:
        """The error of the first failing call in input order, or None (all done)."""
        for chunk, outcome in zip(self.chunks, self._outcomes, strict=True):
            assert outcome is not None
            if outcome.error is not None:
                return outcome.error
            if outcome.errors:
                position = min(outcome.errors)
                return item_exception(chunk, position, outcome.errors[position])
        return None

    def future(self) -> Future[list[Any]]:
        """One Future for every value in order; the first failing call's error; cancelled if a chunk was."""
        with self._cond:
            if self._future is None:
                self._future = Future()
            done = self._sealed and self._left == 0
        if done:
            self._complete_future()
        return self._future

    def _complete_future(self) -> None:
        with self._cond:  # claimed once: seal, the last result and future() may race here
            future = self._future
            if future is None or self._future_settled:
                return
            self._future_settled = True
        error = self.first_error()
        if isinstance(error, CancelledError):
            future.cancel()
        elif error is not None:
            future.set_exception(error)
        else:
            values: list[Any] = []
            for outcome in self._outcomes:
                values.extend(outcome.values)  # type: ignore[union-attr]
            future.set_result(values)
