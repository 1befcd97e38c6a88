"""``Pool``: ``multiprocessing.Pool``'s methods and semantics, on Celery workers.

Switching is one line::

    with multiprocessing.Pool(4) as p:     # before
    with distloop.Pool(4) as p:            # after

As in ``multiprocessing``: ``map``/``starmap`` block and return a list in
order, raising the error of the first failing item (in input order); ``imap``
yields in order and raises at the failing item, after which it can go on;
``imap_unordered`` yields as results arrive; ``*_async`` return an
:class:`AsyncResult` whose callbacks run when the whole call is done;
``get(timeout)`` raises ``multiprocessing.TimeoutError``; ``close()`` then
``join()`` waits for outstanding work; ``terminate()`` (and leaving a ``with``
block) stops at once. ``chunksize`` items travel per message and run in the
same worker process; by default ``map`` uses ``multiprocessing``'s rule (about
four chunks per process).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from distloop.facades.calls import Call, CallDispatcher, pool_chunksize
from distloop.facades.executor import make_backend
from distloop.facades.pool_results import AsyncResult, Callback, IMapIterator
from distloop.tasks.core.settings import Settings


class Pool:
    """``multiprocessing.Pool`` on distloop's workers (the embedded cluster, or those at ``broker``).

    ``processes``: with no broker, how many worker processes the embedded
    cluster starts; with a broker, how many calls may run at once (default:
    every worker process serving it). ``forward_output=False``: what the calls print
    or log on the workers is not shown here.
    """

    def __init__(
        self,
        processes: int | None = None,
        *,
        broker: str | None = None,
        settings: Settings | None = None,
        backend: str = "celery",
        forward_output: bool | None = None,
    ) -> None:
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        engine, owned = make_backend(processes, broker, settings, backend, forward_output)
        self._dispatcher = CallDispatcher(engine, own_backend=owned)
        self._state = "RUN"
        self._imaps: weakref.WeakSet[IMapIterator] = weakref.WeakSet()

    @property
    def processes(self) -> int:
        """How many calls run at once."""
        return self._dispatcher.backend.workers

    def _check_running(self) -> None:
        if self._state != "RUN":
            raise ValueError("Pool not running")

    def _chunksize(self, chunksize: int | None, items: int) -> int:
        if chunksize is None:
            return pool_chunksize(items, self.processes)
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize}")
        return chunksize

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        callback: Callback = None,
        error_callback: Callback = None,
    ) -> AsyncResult:
        """Run ``func(*args, **kwds)`` on a worker; an :class:`AsyncResult` for its value."""
        self._check_running()
        futures = self._dispatcher.submit_calls(func, [(tuple(args), dict(kwds or {}))])
        return AsyncResult(futures, True, callback, error_callback)

    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (), kwds: dict[str, Any] | None = None) -> Any:
        """``func(*args, **kwds)`` on a worker, waiting for the result."""
        return self.apply_async(func, args, kwds).get()

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callback = None,
        error_callback: Callback = None,
    ) -> AsyncResult:
        """``[func(*args) for args in iterable]`` on the workers, asynchronously."""
        self._check_running()
        calls: list[Call] = [(tuple(args), {}) for args in iterable]
        size = self._chunksize(chunksize, len(calls))
        return AsyncResult(self._dispatcher.submit_calls(func, calls, size), False, callback, error_callback)

    def map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callback = None,
        error_callback: Callback = None,
    ) -> AsyncResult:
        """``[func(x) for x in iterable]`` on the workers, asynchronously."""
        return self.starmap_async(func, ((x,) for x in iterable), chunksize, callback, error_callback)

    def map(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None) -> list[Any]:
        """``[func(x) for x in iterable]`` on the workers, in order."""
        return self.map_async(func, iterable, chunksize).get()

    def starmap(
        self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]], chunksize: int | None = None
    ) -> list[Any]:
        """``[func(*args) for args in iterable]`` on the workers, in order."""
        return self.starmap_async(func, iterable, chunksize).get()

    def imap(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int = 1) -> IMapIterator:
        """Results of ``func`` over ``iterable`` in order, as they become available."""
        return self._imap(func, iterable, chunksize, ordered=True)

    def imap_unordered(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int = 1) -> IMapIterator:
        """Results of ``func`` over ``iterable`` in the order they finish."""
        return self._imap(func, iterable, chunksize, ordered=False)

    def _imap(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int, ordered: bool) -> IMapIterator:
        self._check_running()
        size = self._chunksize(chunksize, 0)
        iterator = IMapIterator(self._dispatcher, func, (((x,), {}) for x in iterable), size, ordered)
        self._imaps.add(iterator)
        return iterator

    def close(self) -> None:
        """Accept no more work; what was submitted still runs."""
        if self._state == "RUN":
            self._state = "CLOSE"
            for iterator in list(self._imaps):
                iterator.submit_rest()
            self._dispatcher.shutdown(wait=False)

    def terminate(self) -> None:
        """Stop now: work not sent is cancelled, the workers drop queued chunks, waiting results fail."""
        self._state = "TERMINATE"
        self._dispatcher.terminate()

    def join(self) -> None:
        """Wait for outstanding work after :meth:`close` or :meth:`terminate`."""
        if self._state == "RUN":
            raise ValueError("Pool is still running")
        self._dispatcher.shutdown(wait=True)

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.terminate()  # as multiprocessing.Pool does
