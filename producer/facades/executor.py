"""``CeleryExecutor``: a ``concurrent.futures.Executor`` whose calls run on Celery workers.

Switching is one line::

    with ProcessPoolExecutor(max_workers=4) as ex:      # before
    with CeleryExecutor(max_workers=4) as ex:           # after

Functions travel by name (module-level functions only), arguments and results
as JSON (see :mod:`distloop.tasks.core.codec` for what survives). Everything goes through the
backend interface and the chunk kernel (:mod:`distloop.facades.calls`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

from distloop.backends import get_backend
from distloop.backends.base import Backend
from distloop.facades.calls import Call, CallDispatcher, pool_chunksize
from distloop.tasks.core.settings import Settings


def make_backend(
    workers: int | None,
    broker: str | None,
    settings: Settings | None,
    backend: str | Backend,
    forward_output: bool | None = None,
) -> tuple[Backend, bool]:
    """The started backend a facade runs on, and whether the facade owns it."""
    if isinstance(backend, Backend):
        return backend, False
    settings = settings or Settings.from_env()
    if broker is not None:
        settings = settings.replace(broker_url=broker)
    if forward_output is not None:
        settings = settings.replace(forward_output=forward_output)
    engine = get_backend(backend, settings, workers)
    engine.start()
    return engine, True


class CeleryExecutor(Executor):
    """An Executor on distloop's workers: the embedded cluster, or those at ``broker``.

    ``max_workers``: with no broker configured, how many worker processes the
    embedded cluster starts (default: one per core); with a broker, how many
    calls may run at once (default: every worker process serving it).
    ``broker`` (or ``DISTLOOP_BROKER_URL``) names the Redis the workers serve;
    ``settings`` gives every other option; ``backend`` runs the same calls on
    ``"process"``, ``"thread"`` or ``"serial"`` for comparison. What the calls print or
    log on Celery workers shows on this process's stdout and stderr as ``[host:pid] line``
    unless ``forward_output=False``.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        broker: str | None = None,
        settings: Settings | None = None,
        backend: str | Backend = "celery",
        forward_output: bool | None = None,
    ) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        engine, owned = make_backend(max_workers, broker, settings, backend, forward_output)
        self._dispatcher = CallDispatcher(engine, own_backend=owned)

    @property
    def workers(self) -> int:
        """How many calls can run at once on the workers."""
        return self._dispatcher.backend.workers

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)`` on a worker (one message) and return its Future."""
        return self._dispatcher.submit_calls(fn, [(args, kwargs)])[0]

    def submit_batch(
        self, fn: Callable[..., Any], calls: Iterable[tuple[Iterable[Any], dict[str, Any]]], chunksize: int = 1
    ) -> list[Future[Any]]:
        """Schedule many ``fn(*args, **kwargs)`` calls, ``chunksize`` per message; a Future per call."""
        return self._dispatcher.submit_calls(fn, ((tuple(a), k) for a, k in calls), chunksize)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
    ) -> Iterator[Any]:
        """``map(fn, *iterables)`` on the workers; results in order, as in the standard library.

        The calls are submitted at once. Iterating raises a call's exception when
        its result is reached, and ``TimeoutError`` when a result is not there
        ``timeout`` seconds after this call. ``chunksize`` calls travel per
        message; the default (``None``) uses ``multiprocessing.Pool``'s rule of
        about four chunks per worker process, instead of one message per item.
        """
        end = time.monotonic() + timeout if timeout is not None else None
        calls: list[Call] = [(args, {}) for args in zip(*iterables, strict=False)]
        size = chunksize if chunksize is not None else pool_chunksize(len(calls), self.workers)
        futures = self._dispatcher.submit_calls(fn, calls, size)
        return _results_in_order(futures, end)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more calls; as in the standard library, then stop what this executor started."""
        self._dispatcher.shutdown(wait, cancel_futures)


def _results_in_order(futures: list[Future[Any]], end: float | None) -> Iterator[Any]:
    # As concurrent.futures' own map: a generator, so that an abandoned or failed
    # iteration cancels the calls not sent yet.
    futures.reverse()
    try:
        while futures:
            yield _result_or_cancel(futures.pop(), None if end is None else end - time.monotonic())
    finally:
        for future in futures:
            future.cancel()


def _result_or_cancel(future: Future[Any], timeout: float | None) -> Any:
    try:
        return future.result(timeout)
    finally:
        future.cancel()
