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
same worker process; by default ``map`` sizes messages from the function's
measured cost (at first ``multiprocessing``'s rule, about four chunks per
process), and so does ``imap`` (``multiprocessing``'s default there is 1: one
message per item, far too slow across a broker; pass ``chunksize=1`` for that).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from distloop.facades.calls import CallDispatcher
from distloop.facades.constructor import check_count, check_max_tasks, initializer_spec, mp_context_ignored
from distloop.facades.executor import make_backend
from distloop.facades.pool_results import AsyncResult, Callback, IMapIterator
from distloop.tasks.core.settings import Settings


class Pool:
    """``multiprocessing.Pool`` on distloop's workers (the embedded cluster, or those at ``broker``).

    ``processes``: with no broker, how many worker processes the embedded
    cluster starts; with a broker, how many calls may run at once (default:
    every worker process serving it). ``initializer(*initargs)`` runs once in
    each worker process before its first call of this pool (by name: a
    module-level function of an allowed module; ``initargs`` as JSON).
    ``maxtasksperchild``: chunks (``multiprocessing``'s tasks) a worker process runs
    before it is replaced; applied to the embedded cluster, while workers you
    start keep their own ``--max-tasks-per-child``. ``context`` is accepted and
    ignored: worker processes are started by the Celery workers, not here.
    ``forward_output=False``: what the calls print or log on the workers is not shown here.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        broker: str | None = None,
        settings: Settings | None = None,
        backend: str = "celery",
        forward_output: bool | None = None,
    ) -> None:
        self._state = "INIT"
        check_count(processes, "Number of processes must be at least 1")
        check_max_tasks(maxtasksperchild, "maxtasksperchild must be a positive int or None")
        mp_context_ignored(context)
        init = initializer_spec(initializer, initargs)
        allow = (init["target"].rpartition(":")[0],) if init else ()
        engine, owned = make_backend(
            processes, broker, settings, backend, forward_output, max_tasks_per_child=maxtasksperchild, allow=allow,
            option="processes",
        )  # fmt: skip
        self._dispatcher = CallDispatcher(engine, own_backend=owned, init=init)
        self._state = "RUN"
        self._imaps: weakref.WeakSet[IMapIterator] = weakref.WeakSet()

    @property
    def processes(self) -> int:
        """How many calls run at once."""
        return self._dispatcher.backend.workers

    def _check_running(self) -> None:
        if self._state != "RUN":
            raise ValueError("Pool not running")

    @staticmethod
    def _chunksize(chunksize: int | None) -> int | None:
        if chunksize is not None and chunksize < 1:
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
        future = self._dispatcher.submit(func, tuple(args), dict(kwds or {}))
        return AsyncResult(future, True, callback, error_callback)

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
        size = self._chunksize(chunksize)
        batch = self._dispatcher.map_calls(func, list(iterable), star=True, chunksize=size)
        return AsyncResult(batch.future(), False, callback, error_callback)

    def map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callback = None,
        error_callback: Callback = None,
    ) -> AsyncResult:
        """``[func(x) for x in iterable]`` on the workers, asynchronously."""
        self._check_running()
        size = self._chunksize(chunksize)
        # A range goes as it is: map_calls sends its chunks' bounds, with no list to build and compare.
        items = iterable if isinstance(iterable, range) else list(iterable)
        batch = self._dispatcher.map_calls(func, items, chunksize=size)
        return AsyncResult(batch.future(), False, callback, error_callback)

    def map(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None) -> list[Any]:
        """``[func(x) for x in iterable]`` on the workers, in order."""
        return self.map_async(func, iterable, chunksize).get()

    def starmap(
        self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]], chunksize: int | None = None
    ) -> list[Any]:
        """``[func(*args) for args in iterable]`` on the workers, in order."""
        return self.starmap_async(func, iterable, chunksize).get()

    def imap(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None) -> IMapIterator:
        """Results of ``func`` over ``iterable`` in order, as they become available."""
        return self._imap(func, iterable, chunksize, ordered=True)

    def imap_unordered(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None
    ) -> IMapIterator:
        """Results of ``func`` over ``iterable`` in the order they finish."""
        return self._imap(func, iterable, chunksize, ordered=False)

    def _imap(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None, ordered: bool
    ) -> IMapIterator:
        self._check_running()
        iterator = IMapIterator(self._dispatcher, func, iterable, self._chunksize(chunksize), ordered, self)
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

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        # As multiprocessing.Pool: a pool dropped while running is a leak worth a warning.
        if getattr(self, "_state", None) == "RUN":
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)
            self._dispatcher.shutdown(wait=False)
