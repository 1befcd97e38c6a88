"""What ``Pool``'s asynchronous methods return: ``AsyncResult`` and the ``imap`` iterator.

Both behave as their ``multiprocessing.pool`` namesakes: callbacks run once the
whole call is done, the first failing item in input order decides the error, and
timeouts raise ``multiprocessing.TimeoutError``. An ``AsyncResult`` sits on one
Future (a call's, or a map's :class:`~distloop.facades.batch.CallBatch` future);
the ``imap`` iterator reads a CallBatch chunk by chunk, with no Future per item.
"""

from __future__ import annotations

import itertools
import multiprocessing
import operator
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from distloop.facades.batch import CallBatch, Outcome, item_exception
from distloop.facades.calls import CallDispatcher
from distloop.sizing import call_chunk_size
from distloop.tasks.core import defaults

Callback = Callable[[Any], object] | None


class AsyncResult:
    """The result of an ``apply_async``/``map_async`` call (``multiprocessing.pool.AsyncResult``)."""

    def __init__(
        self, future: Future[Any], single: bool, callback: Callback = None, error_callback: Callback = None
    ) -> None:
        self._future = future
        self._single = single
        self._callback = callback
        self._error_callback = error_callback
        self._event = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        future.add_done_callback(self._finish)

    def _finish(self, future: Future[Any]) -> None:
        self._error = _exception_of(future)
        if self._error is None:
            self._value = future.result()
        try:
            if self._error is None and self._callback is not None:
                self._callback(self._value)
            elif self._error is not None and self._error_callback is not None:
                self._error_callback(self._error)
        finally:
            self._event.set()

    def ready(self) -> bool:
        """Whether the call has finished."""
        return self._event.is_set()

    def successful(self) -> bool:
        """Whether it finished without raising; ``ValueError`` if it has not finished."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._error is None

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is available or ``timeout`` seconds pass."""
        self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        """The result; raises the call's error, or ``multiprocessing.TimeoutError`` after ``timeout``."""
        if not self._event.wait(timeout):
            raise multiprocessing.TimeoutError
        if self._error is not None:
            raise self._error
        return self._value


def _exception_of(future: Future[Any]) -> BaseException | None:
    if future.cancelled():
        return multiprocessing.ProcessError("the pool was terminated before this call ran")
    return future.exception()


class IMapIterator:
    """What ``imap``/``imap_unordered`` return: an iterator with ``next(timeout)``.

    The input is read lazily, a chunk at a time, keeping enough chunks in flight
    to keep every worker busy, so an endless generator works as with
    ``multiprocessing``. Without ``chunksize``, chunks are sized from the input's
    length (when it has one) and the function's measured cost.
    """

    def __init__(
        self,
        dispatcher: CallDispatcher,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        ordered: bool,
        owner: object = None,
    ) -> None:
        self._owner = owner  # the Pool: kept alive while its results are read, as in multiprocessing
        self._dispatcher = dispatcher
        self._func = func
        self._job = dispatcher.job_for(func)
        self._input = iter(iterable)
        self._length = operator.length_hint(iterable, 0)
        self._chunksize = chunksize
        self._ordered = ordered
        self._ahead = 2 * dispatcher.window  # chunks sent and not finished yet
        self._batch = CallBatch()
        self._batch.watch(self._chunk_done)
        self._lock = threading.RLock()
        self._exhausted = False
        self._source_error: BaseException | None = None
        self._slot = 0  # ordered: the chunk being read; unordered: unused
        self._current: tuple[int, Outcome] | None = None  # the chunk being read and its outcome
        self._clean: Iterator[Any] | None = None  # the values left of a chunk with no error (the fast path)
        self._position = 0
        self._fill()

    def _size(self) -> int:
        if self._chunksize is not None:
            return self._chunksize
        cost = self._dispatcher.cost(self._job.target)
        if self._length:
            return call_chunk_size(self._length, cost, self._dispatcher.backend.workers)
        if cost <= 0:
            return defaults.PROBE_CHUNK_ITEMS
        return max(1, min(int(defaults.TARGET_CHUNK_SECONDS / cost), defaults.MAX_STREAM_CHUNK))

    def _fill(self) -> None:
        """Send more chunks (on creation, on each ``next`` and when a chunk finishes)."""
        with self._lock:
            while not self._exhausted and self._batch.outstanding() < self._ahead:
                size = self._size()
                try:
                    values = list(itertools.islice(self._input, size))
                except Exception as exc:  # the input itself failed: raise it where it happened
                    self._source_error, values = exc, []
                if len(values) < size:
                    self._exhausted = True
                if values:
                    self._dispatcher.map_calls(self._func, values, chunksize=len(values), batch=self._batch, seal=False)
            if self._exhausted and not self._batch.sealed:
                self._batch.seal()

    def submit_rest(self) -> None:
        """Send all the input that is left (the pool is closing: no later chance)."""
        self._ahead = sys.maxsize
        self._fill()

    def _chunk_done(self, _: int) -> None:
        try:
            self._fill()
        except RuntimeError:
            pass  # the pool closed or terminated meanwhile: nothing more to send

    def __iter__(self) -> Iterator[Any]:
        # A for loop (or list()) reads a chunk with no failed item at C speed, not a next() per
        # item; it reads the same chunk iterator as next() does, so the two can take turns.
        return self._values()

    def _values(self) -> Iterator[Any]:
        while True:
            clean = self._clean
            if clean is not None:
                yield from clean
                if self._clean is clean:  # (not a chunk a next() call meanwhile went on to)
                    self._clean = None
                continue
            try:
                value = self.next()
            except StopIteration:
                return
            yield value

    def next(self, timeout: float | None = None) -> Any:
        """The next result; ``multiprocessing.TimeoutError`` if none comes within ``timeout``."""
        while True:
            # A chunk with no failed item is read off a plain iterator: a list(imap(...)) over
            # 100,000 small items spends most of its producer time here.
            if self._clean is not None:
                for value in self._clean:
                    return value
                self._clean = None
            if self._current is not None:
                slot, outcome = self._current
                if outcome.error is not None:
                    self._current = None
                    raise outcome.error
                if self._position < len(outcome.values):
                    position = self._position
                    self._position += 1
                    if position in outcome.errors:
                        raise item_exception(self._batch.chunks[slot], position, outcome.errors[position])
                    return outcome.values[position]
                self._current = None
            self._fill()
            slot_or_none = self._next_slot(timeout)
            if slot_or_none is None:
                if self._source_error is not None:
                    source_error, self._source_error = self._source_error, None
                    raise source_error
                raise StopIteration
            outcome = self._batch.wait(slot_or_none)
            if outcome.error is None and not outcome.errors:
                self._clean = iter(outcome.values)
                continue
            self._current = (slot_or_none, outcome)
            self._position = 0

    def _next_slot(self, timeout: float | None) -> int | None:
        """The next chunk to read (waiting for it), None when there are no more."""
        try:
            if not self._ordered:
                return self._batch.next_finished(timeout)
            with self._lock:
                known = self._batch.size
            if self._slot >= known:
                return None  # the input is exhausted (_fill ran just before) and every chunk read
            self._batch.wait(self._slot, timeout)
        except TimeoutError:
            raise multiprocessing.TimeoutError from None
        self._slot += 1
        return self._slot - 1

    __next__ = next
