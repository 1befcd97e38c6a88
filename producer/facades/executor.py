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

from distloop.backends import start_backend
from distloop.backends.base import Backend
from distloop.facades.batch import CallBatch
from distloop.facades.calls import CallDispatcher
from distloop.facades.constructor import check_count, check_max_tasks, initializer_spec, mp_context_ignored
from distloop.tasks.core.settings import Settings


def make_backend(
    workers: int | None,
    broker: str | None,
    settings: Settings | None,
    backend: str | Backend,
    forward_output: bool | None = None,
    *,
    max_tasks_per_child: int | None = None,
    allow: tuple[str, ...] = (),
    option: str = "max_workers",
) -> tuple[Backend, bool]:
    """The started backend a facade runs on, and whether the facade owns it.

    ``max_tasks_per_child`` reaches the workers this facade starts (the embedded
    cluster); workers started by someone else keep their own ``--max-tasks-per-child``.
    ``allow``: modules the embedded cluster must allow from the start (the initializer's).
    """
    if isinstance(backend, Backend):
        return backend, False
    settings = settings or Settings.from_env()
    if broker is not None:
        settings = settings.replace(broker_url=broker)
    if max_tasks_per_child is not None:
        settings = settings.replace(max_tasks_per_child=max_tasks_per_child)
    if forward_output is not None:
        settings = settings.replace(forward_output=forward_output)
    return start_backend(backend, settings, workers, allow, option=f"{option}="), True


class CeleryExecutor(Executor):
    """An Executor on distloop's workers: the embedded cluster, or those at ``broker``.

    ``max_workers``: with no broker configured, how many worker processes the
    embedded cluster starts (default: one per core); with a broker, how many
    calls may run at once (default: every worker process serving it).
    ``initializer(*initargs)`` runs once in each worker process before its first
    call of this executor (it travels by name, like the calls: a module-level
    function of an allowed module; ``initargs`` as JSON). ``max_tasks_per_child``:
    chunks a worker process runs before it is replaced; applied to the embedded
    cluster, while workers you start keep their own ``--max-tasks-per-child``.
    ``mp_context`` is accepted and ignored: worker processes are started by the
    Celery workers (prefork), not by this process.
    ``broker`` (or ``DISTLOOP_BROKER_URL``) names the Redis the workers serve;
    ``settings`` gives every other option; ``backend`` runs the same calls on
    ``"process"``, ``"thread"`` or ``"serial"`` for comparison. What the calls print or
    log on Celery workers shows on this process's stdout and stderr as ``[host:pid] line``
    unless ``forward_output=False``.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        broker: str | None = None,
        settings: Settings | None = None,
        backend: str | Backend = "celery",
        forward_output: bool | None = None,
    ) -> None:
        check_count(max_workers, "max_workers must be greater than 0")
        mp_context_ignored(mp_context)
        check_max_tasks(max_tasks_per_child, "max_tasks_per_child must be >= 1")
        init = initializer_spec(initializer, initargs)
        allow = (init["target"].rpartition(":")[0],) if init else ()
        engine, owned = make_backend(
            max_workers, broker, settings, backend, forward_output, max_tasks_per_child=max_tasks_per_child, allow=allow
        )
        self._dispatcher = CallDispatcher(engine, own_backend=owned, init=init)

    @property
    def workers(self) -> int:
        """How many calls can run at once on the workers."""
        return self._dispatcher.backend.workers

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)`` on a worker and return its Future.

        Calls submitted while others are waiting to be sent travel together, once
        calls of ``fn`` are known to be short (a few per message would otherwise
        leave the workers waiting on the broker); long calls each go alone.
        """
        return self._dispatcher.submit(fn, args, kwargs)

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
        message; the default (``None``) sizes messages from the function's measured
        cost (about four per worker process at first), instead of one per item.
        """
        end = time.monotonic() + timeout if timeout is not None else None
        if len(iterables) == 1:
            items = iterables[0] if isinstance(iterables[0], range) else list(iterables[0])  # a range as it is
            batch = self._dispatcher.map_calls(fn, items, chunksize=chunksize)
        else:
            batch = self._dispatcher.map_calls(fn, list(zip(*iterables, strict=False)), star=True, chunksize=chunksize)
        return _results_in_order(self._dispatcher, batch, end)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more calls; as in the standard library, then stop what this executor started."""
        self._dispatcher.shutdown(wait, cancel_futures)


def _results_in_order(dispatcher: CallDispatcher, batch: CallBatch, end: float | None) -> Iterator[Any]:
    # As concurrent.futures' own map: a generator, so that an abandoned or failed
    # iteration drops the calls not sent yet.
    try:
        for slot in range(batch.size):
            batch.wait(slot, None if end is None else end - time.monotonic())
            yield from batch.values(slot)
    finally:
        dispatcher.withdraw(batch)
