"""distloop's producer: everything on the submitting side.

How data flows::

    run_loop / distloop run                     backends (one interface)
    -----------------------                     ------------------------
    parse TARGET and range                      serial : kernel in this thread
    preflight: resolve f (import only)          thread : kernel in a thread pool
    plan chunks (sizing.ChunkPlanner, lazy:     process: kernel in a process pool
      a probe per worker, then sized by cost)
           |                                    celery : chunk task -> Redis queue
           v                                             -> prefork worker child
    dispatch.run_chunks  -- submit(window) -->           -> kernel -> job ledger
           ^                                             (tasks.jobstore)
           |            <-- wait(): results, any order --
    assemble.Assembler: one result per chunk index, loop order,
    reduce folded in chunk order, item errors kept
           |
           v
    list / reduced value / JSON Lines file, JobReport (--json)

Every backend runs the same chunk kernel (``tasks.kernel``), so comparing
them measures dispatch and parallelism, not different code.

The facades for code written against the standard library (``CeleryExecutor``,
``Pool``, and the joblib backend of ``register_joblib``) send explicit calls,
not ranges, through the same backends and kernel (``producer.calls``)::

    executor.submit / pool.map / Parallel(...)      collector thread
    name f, encode args (JSON) -> chunk of calls -> backend.submit / backend.wait
    a Future per call          <- decoded value, or the item's error
"""

from producer.api import JobReport, run_job, run_loop
from producer.backend import Backend, JobSpec, get_backend
from producer.executor import CeleryExecutor
from producer.joblib_backend import register_joblib
from producer.pool import AsyncResult, Pool
from tasks.errors import (
    BrokerUnavailable,
    CallFailed,
    ChunkFailed,
    DistloopError,
    Interrupted,
    ResultNotSerializable,
    TargetError,
    TargetNotAllowed,
    UsageError,
)

__all__ = [
    "AsyncResult",
    "Backend",
    "BrokerUnavailable",
    "CallFailed",
    "CeleryExecutor",
    "ChunkFailed",
    "DistloopError",
    "Interrupted",
    "JobReport",
    "JobSpec",
    "Pool",
    "ResultNotSerializable",
    "TargetError",
    "TargetNotAllowed",
    "UsageError",
    "get_backend",
    "register_joblib",
    "run_job",
    "run_loop",
]
