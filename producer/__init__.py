"""distloop: run ``for i in range(start, stop, step): f(i)`` on many cores and many machines.

How data flows::

    run_loop / distloop run                     backends (one interface, distloop.backends)
    -----------------------                     -------------------------------------------
    parse TARGET and range                      serial : kernel in this thread
    preflight: resolve f (import only)          thread : kernel in a thread pool
    plan chunks (sizing.ChunkPlanner, lazy:     process: kernel in a process pool
      a probe per worker, then sized by cost)
           |                                    celery : chunk task -> Redis queue
           v                                             -> prefork worker child
    dispatch.run_chunks  -- submit(window) -->           -> kernel -> job ledger
           ^                                             (distloop.tasks.store.jobs)
           |            <-- wait(): results, any order --
    assemble.Assembler: one result per chunk index, loop order,
    reduce folded in chunk order, item errors kept
           |
           v
    list / reduced value / JSON Lines file, JobReport (--json)

Every backend runs the same chunk kernel (``distloop.tasks.kernel``), so comparing
them measures dispatch and parallelism, not different code.

The facades for code written against the standard library (``CeleryExecutor``,
``Pool``, and the joblib backend of ``register_joblib``, in ``distloop.facades``)
send explicit calls, not ranges, through the same backends and kernel::

    executor.submit / pool.map / Parallel(...)      collector thread
    name f, encode args (JSON) -> chunk of calls -> backend.submit / backend.wait
    a Future per call          <- decoded value, or the item's error

The package's parts live in the repository's three folders: this one (``producer/``)
is the submitting side, ``distloop.tasks`` (``tasks/``) is what runs on a worker and
what both sides share, ``distloop.worker`` (``worker/``) starts workers.

Names are exported lazily: a worker imports ``distloop.tasks``, which imports this
module first, and must not pay for (or depend on) the producer's side.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distloop.api import JobReport, run_job, run_loop
    from distloop.backends import get_backend
    from distloop.backends.base import Backend, JobSpec
    from distloop.facades.executor import CeleryExecutor
    from distloop.facades.joblib_backend import register_joblib
    from distloop.facades.parallel import Parallel, delayed
    from distloop.facades.pool import AsyncResult, Pool
    from distloop.tasks.core.errors import (
        BrokerUnavailable,
        CallFailed,
        ChunkFailed,
        DistloopError,
        InitializerFailed,
        Interrupted,
        ResultNotSerializable,
        TargetError,
        TargetNotAllowed,
        UsageError,
    )
    from distloop.tasks.core.settings import Settings

#: Public name -> the module that defines it.
_EXPORTS = {
    "JobReport": "distloop.api",
    "run_job": "distloop.api",
    "run_loop": "distloop.api",
    "get_backend": "distloop.backends",
    "Backend": "distloop.backends.base",
    "JobSpec": "distloop.backends.base",
    "CeleryExecutor": "distloop.facades.executor",
    "register_joblib": "distloop.facades.joblib_backend",
    "Parallel": "distloop.facades.parallel",
    "delayed": "distloop.facades.parallel",
    "AsyncResult": "distloop.facades.pool",
    "Pool": "distloop.facades.pool",
    "Settings": "distloop.tasks.core.settings",
    **dict.fromkeys(
        ("BrokerUnavailable", "CallFailed", "ChunkFailed", "DistloopError", "InitializerFailed", "Interrupted",
         "ResultNotSerializable", "TargetError", "TargetNotAllowed", "UsageError"),
        "distloop.tasks.core.errors",
    ),
}  # fmt: skip

__all__ = [
    "AsyncResult",
    "Backend",
    "BrokerUnavailable",
    "CallFailed",
    "CeleryExecutor",
    "ChunkFailed",
    "DistloopError",
    "InitializerFailed",
    "Interrupted",
    "JobReport",
    "JobSpec",
    "Parallel",
    "Pool",
    "ResultNotSerializable",
    "Settings",
    "TargetError",
    "TargetNotAllowed",
    "UsageError",
    "delayed",
    "get_backend",
    "register_joblib",
    "run_job",
    "run_loop",
]


def _version() -> str:
    # Read on first use: importlib.metadata costs 0.05 s of every worker's and producer's start.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("distloop")
    except PackageNotFoundError:  # running from a tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = globals()[name] = _version()
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'distloop' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
