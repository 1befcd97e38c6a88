"""A joblib parallel backend, ``"distloop"``, that runs ``Parallel`` batches on Celery workers.

::

    distloop.register_joblib()
    with joblib.parallel_config(backend="distloop"):          # was: backend="loky"
        results = Parallel(n_jobs=-1)(delayed(f)(i) for i in range(1000))

joblib is optional (``pip install 'distloop[joblib]'``) and imported only here.
Each joblib batch (``BatchedCalls``) becomes one chunk of explicit calls on a
:class:`~distloop.facades.executor.CeleryExecutor`; joblib's auto-batching sizes them
from the measured round trip, as it does for its process backends. Options
given to ``parallel_config(backend="distloop", ...)`` or to
:func:`register_joblib` reach the executor: ``broker``, ``settings``,
``forward_output``, or an existing ``executor`` to share (it is then left running).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from distloop.facades.batch import CallBatch
from distloop.facades.executor import CeleryExecutor
from distloop.tasks.core.defaults import MAX_STREAM_CHUNK, TARGET_CHUNK_SECONDS
from distloop.tasks.core.errors import UsageError
from distloop.tasks.core.settings import Settings

NAME = "distloop"


def _joblib() -> Any:
    try:
        import joblib
        import joblib._parallel_backends
    except ImportError:
        raise UsageError("joblib is not installed: pip install 'distloop[joblib]' (or pip install joblib)") from None
    return joblib


def register_joblib(
    *,
    broker: str | None = None,
    settings: Settings | None = None,
    executor: CeleryExecutor | None = None,
    forward_output: bool | None = None,
) -> None:
    """Register the ``"distloop"`` joblib backend; its defaults are these options."""
    joblib = _joblib()
    base = joblib._parallel_backends.ParallelBackendBase
    auto = joblib._parallel_backends.AutoBatchingMixin
    defaults = {"broker": broker, "settings": settings, "executor": executor, "forward_output": forward_output}

    class DistloopBackend(auto, base):  # type: ignore[misc, valid-type]
        """joblib batches as chunks on distloop's workers."""

        supports_retrieve_callback = True
        supports_timeout = True
        uses_threads = False
        supports_sharedmem = False
        default_n_jobs = -1  # Parallel(n_jobs=None): every worker process

        def __init__(self, nesting_level: int | None = None, inner_max_num_threads: int | None = None, **options: Any):
            super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
            unknown = set(options) - set(defaults)
            if unknown:
                raise UsageError(f"unknown distloop joblib option(s): {', '.join(sorted(unknown))}")
            self.options = {**defaults, **{k: v for k, v in options.items() if v is not None}}
            self.executor: CeleryExecutor | None = None
            self.own_executor = False
            self.target = ""  # the function of the last batch sent

        def _executor(self) -> CeleryExecutor:
            if self.executor is None:
                shared = self.options["executor"]
                self.own_executor = shared is None
                self.executor = shared or CeleryExecutor(
                    broker=self.options["broker"],
                    settings=self.options["settings"],
                    forward_output=self.options["forward_output"],
                )
            return self.executor

        def effective_n_jobs(self, n_jobs: int | None) -> int:
            if n_jobs == 0:
                raise ValueError("n_jobs == 0 in Parallel has no meaning")
            if n_jobs is not None and n_jobs > 0:
                return int(n_jobs)
            return max(self._executor().workers + 1 + (n_jobs or -1), 1)

        def configure(self, n_jobs: int = 1, parallel: Any = None, **_: Any) -> int:
            self.parallel = parallel
            return self.effective_n_jobs(n_jobs)

        def compute_batch_size(self) -> int:
            # joblib times a batch's round trip, broker included, so tiny calls grow their
            # batches by doubling only. The workers time the calls themselves: once they
            # have, a batch holds about TARGET_CHUNK_SECONDS of work (joblib still splits
            # the end of the input evenly over the workers).
            theirs = int(super().compute_batch_size())
            cost = self.executor._dispatcher.cost(self.target) if self.executor is not None else 0.0
            if cost <= 0:
                return theirs
            return max(theirs, min(int(TARGET_CHUNK_SECONDS / cost), MAX_STREAM_CHUNK))

        def submit(self, func: Any, callback: Callable[[Any], None] | None = None) -> Future[Any]:
            future, self.target = _submit_batch(self._executor(), func)
            if callback is not None:
                future.add_done_callback(callback)
            return future

        def retrieve_result_callback(self, future: Future[Any]) -> Any:
            return future.result()

        def abort_everything(self, ensure_ready: bool = True) -> None:
            # Calls not sent yet are dropped by joblib's own abort; running ones finish.
            if not ensure_ready:
                self.terminate()

        def terminate(self) -> None:
            if self.executor is not None and self.own_executor:
                self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
            self.reset_batch_stats()

        def get_nested_backend(self) -> Any:
            # Code running inside a call runs on a worker; nested Parallel calls stay there, in order.
            return joblib._parallel_backends.SequentialBackend(nesting_level=(self.nesting_level or 0) + 1), None

    joblib.register_parallel_backend(NAME, DistloopBackend)


def _submit_batch(executor: CeleryExecutor, batch: Any) -> tuple[Future[list[Any]], str]:
    """Send a joblib ``BatchedCalls`` (items of ``(func, args, kwargs)``) as chunks: one Future for its
    list, and the last function's target.

    Consecutive calls of one function share a chunk (joblib sized the batch);
    ``f(x)`` calls travel in the compact one-argument form.
    """
    items = list(getattr(batch, "items", None) or [(batch, (), {})])
    calls = CallBatch()
    executor._dispatcher.map_delayed(items, calls, chunksize=len(items))
    calls.seal()
    return calls.future(), calls.chunks[-1].job.target
