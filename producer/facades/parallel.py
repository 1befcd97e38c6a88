"""``Parallel`` and ``delayed``: joblib's own calling convention, run on distloop's workers.

Switching is one line::

    from joblib import Parallel, delayed          # before
    from distloop import Parallel, delayed        # after

    results = Parallel(n_jobs=-1)(delayed(f)(i) for i in range(100_000))

joblib is not needed. ``delayed(f)(*args, **kwargs)`` is joblib's ``(f, args, kwargs)``,
so calls made with either ``delayed`` run on either ``Parallel``; this ``delayed``
builds its wrapper once per function instead of once per call (joblib's costs
more than a small call does). ``Parallel`` takes every call the generator yields,
sends consecutive calls of one function as chunks sized from its measured cost
(as ``CeleryExecutor.map``), and returns their results in order; a failed call
raises its original exception, as joblib does, and the calls not sent yet are dropped.

Worker processes are kept between calls, as joblib keeps loky's: every
``Parallel`` with the same options shares one :class:`CeleryExecutor` (the
embedded cluster, or the workers at ``broker``), stopped when Python exits
or by :meth:`Parallel.stop_workers`.
``executor=`` runs on one of yours instead (left running).
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from distloop.facades.batch import CallBatch
from distloop.facades.calls import CallDispatcher
from distloop.facades.executor import CeleryExecutor
from distloop.tasks.core.errors import UsageError
from distloop.tasks.core.settings import Settings
from distloop.worker.celery_worker import available_cpus

RETURN_AS = ("list", "generator", "generator_unordered")


def _wrapper(function: Callable[..., Any]) -> Callable[..., tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]:
    def delayed_function(*args: Any, **kwargs: Any) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        return function, args, kwargs

    try:
        return functools.wraps(function)(delayed_function)
    except AttributeError:  # a callable without __name__ (a partial): joblib skips wraps too
        return delayed_function


#: Each function's wrapper, built once (a dict lookup costs a third of what lru_cache's
#: bounded cache does per call); cleared when it holds WRAPPERS_KEPT functions.
_wrappers: dict[Callable[..., Any], Callable[..., Any]] = {}
WRAPPERS_KEPT = 1024


def delayed(function: Callable[..., Any]) -> Callable[..., tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]:
    """``delayed(f)(*args, **kwargs)`` is ``(f, args, kwargs)``: a call for :class:`Parallel`, as in joblib."""
    try:
        return _wrappers[function]
    except KeyError:
        if len(_wrappers) >= WRAPPERS_KEPT:
            _wrappers.clear()
        wrapper = _wrappers[function] = _wrapper(function)
        return wrapper
    except TypeError:  # an unhashable callable
        return _wrapper(function)


class Parallel:
    """joblib's ``Parallel`` on distloop's workers: ``Parallel(n_jobs)(delayed(f)(x) for x in xs)``.

    - ``n_jobs``: ``1`` runs the calls here, one after the other, as joblib does
      (for debugging); ``None`` or ``-1``, every worker process; ``n > 1``, at most
      ``n`` calls at once (on the embedded cluster, ``n`` worker processes);
      ``-2`` and lower, the cores but ``|n_jobs| - 1``. ``0`` is a ``ValueError``.
    - ``return_as``: ``"list"``, or a generator of the results in order
      (``"generator"``) or as they finish (``"generator_unordered"``).
    - ``timeout``: seconds any one result may take once the previous one came
      back, then ``TimeoutError``.
    - ``batch_size``: calls per message; ``"auto"`` sizes them from measured cost.
    - ``verbose``: above 0, progress lines on stderr, as joblib prints them.
    - ``backend`` must be ``None`` or ``"distloop"`` (joblib's own backends are
      joblib's: use ``joblib.Parallel``); ``require="sharedmem"`` is refused: worker
      processes share no memory with this one. ``pre_dispatch``, ``temp_folder``,
      ``max_nbytes``, ``mmap_mode`` and ``prefer`` are accepted and do not apply
      (large arrays travel beside the message, not through memory-mapped files).
    - ``broker``, ``settings``, ``forward_output``: as for :class:`CeleryExecutor`;
      ``executor``: an executor to run on (left running).
    """

    def __init__(
        self,
        n_jobs: int | None = None,
        backend: str | None = None,
        return_as: str = "list",
        verbose: int = 0,
        timeout: float | None = None,
        pre_dispatch: str | int = "2 * n_jobs",
        batch_size: int | str = "auto",
        temp_folder: str | None = None,
        max_nbytes: int | str | None = "1M",
        mmap_mode: str | None = "r",
        prefer: str | None = None,
        require: str | None = None,
        *,
        broker: str | None = None,
        settings: Settings | None = None,
        executor: CeleryExecutor | None = None,
        forward_output: bool | None = None,
    ) -> None:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if return_as not in RETURN_AS:
            raise ValueError(f"return_as must be one of {', '.join(map(repr, RETURN_AS))}, not {return_as!r}")
        if batch_size != "auto" and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
            raise ValueError(f"batch_size must be 'auto' or a positive integer, not {batch_size!r}")
        if backend not in (None, "distloop"):
            raise UsageError(
                f"backend={backend!r}: distloop's Parallel runs on distloop's workers; "
                "for joblib's own backends use joblib.Parallel"
            )
        if require == "sharedmem":
            raise UsageError("require='sharedmem': distloop's worker processes share no memory with this one")
        self.n_jobs = n_jobs
        self.return_as = return_as
        self.verbose = verbose
        self.timeout = timeout
        self.batch_size = None if batch_size == "auto" else int(batch_size)
        self._options = {"broker": broker, "settings": settings, "forward_output": forward_output}
        self._executor = executor

    @staticmethod
    def stop_workers() -> None:
        """Stop the executor (and the embedded cluster) that ``Parallel`` calls share, now rather than at exit."""
        global _shared
        with _lock:
            shared, _shared = _shared, None
        if shared is not None:
            shared[1].shutdown(wait=True)

    def __repr__(self) -> str:
        return f"Parallel(n_jobs={self.n_jobs})"

    def __enter__(self) -> Parallel:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __call__(self, iterable: Iterable[Any]) -> Any:
        if self.n_jobs == 1 and self._executor is None:
            here = (function(*args, **kwargs) for function, args, kwargs in iterable)
            return list(here) if self.return_as == "list" else here
        executor = self._executor or _shared_executor(self._max_workers(), self._options)
        dispatcher = executor._dispatcher
        batch = CallBatch()
        try:
            total = dispatcher.map_delayed(iterable, batch, chunksize=self.batch_size)
        except BaseException:
            dispatcher.withdraw(batch)
            raise
        batch.seal()
        chunks = self._chunks(dispatcher, batch, total)
        if self.return_as != "list":
            return _flat(chunks)
        results: list[Any] = []
        for values in chunks:  # a list's worth at a time, not a generator step per value
            results.extend(values)
        return results

    def _max_workers(self) -> int | None:
        if self.n_jobs is None or self.n_jobs == -1:
            return None
        if self.n_jobs > 0:
            return self.n_jobs
        return max(1, available_cpus() + 1 + self.n_jobs)  # the cores, as the embedded cluster counts them

    def _chunks(self, dispatcher: CallDispatcher, batch: CallBatch, total: int) -> Iterator[list[Any]]:
        """Each chunk's values, in order or as chunks finish; raises a failed call's exception at it."""
        started = time.monotonic()
        done = 0
        try:
            for position in range(batch.size):
                if self.return_as == "generator_unordered":
                    slot = batch.next_finished(self.timeout)
                    assert slot is not None  # sealed: each of its chunks finishes once
                else:
                    slot = position
                    batch.wait(slot, self.timeout)
                values = batch.values(slot)
                if not isinstance(values, list):  # a failed call in it: raised at its position
                    values = list(values)
                done += len(values)
                if self.verbose > 0:
                    self._progress(done, total, time.monotonic() - started)
                yield values
        finally:
            dispatcher.withdraw(batch)

    def _progress(self, done: int, total: int, elapsed: float) -> None:
        end = " finished" if done == total else ""
        print(f"[{self!r}]: Done {done:>5} out of {total:>5} | elapsed: {elapsed:6.1f}s{end}", file=sys.stderr)


def _flat(chunks: Iterator[list[Any]]) -> Iterator[Any]:
    for values in chunks:
        yield from values


_lock = threading.Lock()
_shared: tuple[tuple[Any, ...], CeleryExecutor] | None = None


def _shared_executor(max_workers: int | None, options: dict[str, Any]) -> CeleryExecutor:
    """The executor every ``Parallel`` with these options runs on, started on first use.

    Kept until Python exits (the executors' own exit hook stops them), so that
    ``Parallel`` in a loop pays the embedded cluster's start-up once, as loky's
    reusable executor does. Other options start another in its place: the one
    before finishes what it was given, then stops (as loky resizes its own).
    """
    global _shared
    key = (max_workers, options["broker"], options["settings"], options["forward_output"])
    with _lock:
        if _shared is not None:
            known, executor = _shared
            if known == key and not executor._dispatcher.closed:
                return executor
            executor.shutdown(wait=False)
            _shared = None
        executor = CeleryExecutor(max_workers, **options)
        _shared = (key, executor)
        return executor
