"""distloop's producer: everything on the submitting side.

How data flows::

    run_loop / distloop run                     backends (one interface)
    -----------------------                     ------------------------
    parse TARGET and range                      serial : kernel in this thread
    preflight: resolve f, probe its cost        thread : kernel in a thread pool
    plan chunks (sizing.ChunkPlanner, lazy)     process: kernel in a process pool
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
"""

from producer.api import JobReport, run_job, run_loop
from producer.backend import Backend, JobSpec, get_backend
from tasks.errors import (
    BrokerUnavailable,
    ChunkFailed,
    DistloopError,
    Interrupted,
    ResultNotSerializable,
    TargetError,
    TargetNotAllowed,
    UsageError,
)

__all__ = [
    "Backend",
    "BrokerUnavailable",
    "ChunkFailed",
    "DistloopError",
    "Interrupted",
    "JobReport",
    "JobSpec",
    "ResultNotSerializable",
    "TargetError",
    "TargetNotAllowed",
    "UsageError",
    "get_backend",
    "run_job",
    "run_loop",
]
