"""What ``Pool``'s asynchronous methods return: ``AsyncResult`` and the ``imap`` iterator.

Both sit on the per-call Futures of :mod:`distloop.facades.calls` and behave as their
``multiprocessing.pool`` namesakes: callbacks run once the whole call is done,
the first failing item in input order decides the error, and timeouts raise
``multiprocessing.TimeoutError``.
"""

from __future__ import annotations

import itertools
import multiprocessing
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_futures
from typing import Any

from distloop.facades.calls import CallDispatcher

Callback = Callable[[Any], object] | None


class AsyncResult:
    """The result of an ``apply_async``/``map_async`` call (``multiprocessing.pool.AsyncResult``)."""

    def __init__(
        self, futures: list[Future[Any]], single: bool, callback: Callback = None, error_callback: Callback = None
    ) -> None:
        self._futures = futures
        self._single = single
        self._callback = callback
        self._error_callback = error_callback
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._left = len(futures)
        self._value: Any = None
        self._error: BaseException | None = None
        if not futures:
            self._finish()
        for future in futures:
            future.add_done_callback(self._one_done)

    def _one_done(self, _: Future[Any]) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._finish()

    def _finish(self) -> None:
        # The first failing item in input order decides, so the error does not depend on timing.
        for future in self._futures:
            error = _exception_of(future)
            if error is not None:
                self._error = error
                break
        else:
            values = [f.result() for f in self._futures]
            self._value = values[0] if self._single else values
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

    The input is read lazily, in chunks, keeping enough of them in flight to
    keep every worker busy, so an endless generator works as with ``multiprocessing``.
    """

    def __init__(
        self, dispatcher: CallDispatcher, func: Callable[..., Any], calls: Iterator[Any], chunksize: int, ordered: bool
    ) -> None:
        self._dispatcher = dispatcher
        self._func = func
        self._calls = calls
        self._chunksize = chunksize
        self._ordered = ordered
        self._ahead = 2 * dispatcher.window  # chunks submitted and not finished yet
        self._submitted: deque[list[Future[Any]]] = deque()
        self._outstanding: list[Future[Any]] = []
        self._lock = threading.Lock()
        self._exhausted = False
        self._source_error: BaseException | None = None
        self._fill()

    def _fill(self, _: object = None) -> None:
        """Submit more chunks (called on creation, on each ``next`` and when a chunk finishes)."""
        with self._lock:
            while not self._exhausted and len(self._submitted) < self._ahead:
                try:
                    batch = list(itertools.islice(self._calls, self._chunksize))
                except Exception as exc:  # the input itself failed: raise it where it happened
                    self._source_error, batch = exc, []
                if len(batch) < self._chunksize:
                    self._exhausted = True
                if not batch:
                    break
                futures = self._dispatcher.submit_calls(self._func, batch, len(batch))
                self._submitted.append(futures)
                self._outstanding.extend(futures)
                futures[-1].add_done_callback(self._chunk_done)

    def submit_rest(self) -> None:
        """Submit all the input that is left (the pool is closing: no later chance)."""
        self._ahead = sys.maxsize
        self._fill()

    def _chunk_done(self, _: Future[Any]) -> None:
        with self._lock:
            while self._submitted and all(f.done() for f in self._submitted[0]):
                self._submitted.popleft()
        try:
            self._fill()
        except RuntimeError:
            pass  # the pool closed or terminated meanwhile: nothing more to submit

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: float | None = None) -> Any:
        """The next result; ``multiprocessing.TimeoutError`` if none comes within ``timeout``."""
        self._fill()
        with self._lock:
            outstanding = list(self._outstanding)
        if not outstanding:
            if self._source_error is not None:
                source_error, self._source_error = self._source_error, None
                raise source_error
            raise StopIteration
        if self._ordered:
            future = outstanding[0]
            try:
                future.result(timeout)
            except FutureTimeout:
                raise multiprocessing.TimeoutError from None
            except BaseException:
                pass  # raised below, once the future is taken off the list
        else:
            done, _ = wait_futures(outstanding, timeout, return_when=FIRST_COMPLETED)
            if not done:
                raise multiprocessing.TimeoutError
            future = next(f for f in outstanding if f in done)
        with self._lock:
            self._outstanding.remove(future)
        error = _exception_of(future)
        if error is not None:
            raise error
        return future.result()

    __next__ = next
