"""The backend interface; serial, thread, process and celery implement it (``distloop.backends``).

A backend runs chunks of a job and hands back their results as they finish, in
any order. It knows nothing of ranges, ordering or reduction: that is the
dispatcher's and the assembler's work, shared by every backend, by
``run_loop``, the CLI, and the Executor and Pool facades.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

from distloop.tasks.core.errors import UsageError
from distloop.tasks.core.limits import worker_cap
from distloop.tasks.core.settings import Settings
from distloop.tasks.kernel import ChunkResult, ChunkSpec


@dataclass(frozen=True)
class JobSpec:
    """What every chunk of a job shares."""

    job_id: str
    target: str
    reduce: str | None = None
    on_error: str = "raise"
    #: Seconds a chunk may run before its stuck item is reported failed (None: no limit).
    timeout: float | None = None
    #: What the job's ledger records besides the fields above (items, range, output...).
    meta: Mapping[str, Any] = field(default_factory=dict)
    #: Items of an ``async def`` target awaited at once per process (None: the workers' setting).
    io_concurrency: int | None = None
    #: A blocking function's items run at once per chunk on a threads pool (None: one at a time).
    fan_out: int | None = None
    #: Whether results stay in the ledger once read, until a checkpoint covers them (resume
    #: reads them). The facades' jobs cannot resume: their results go as they are read.
    keep_results: bool = True


@dataclass(frozen=True)
class StoredJob:
    """A job left unfinished: its description, finished chunks, and sent chunks' boundaries."""

    meta: dict[str, Any]
    done: list[ChunkResult]
    plan: dict[int, ChunkSpec]


class Backend(ABC):
    """Runs chunks. Use as a context manager, or call :meth:`start` and :meth:`close`."""

    name: ClassVar[str]
    #: Whether the backend can stop a chunk that runs past ``JobSpec.timeout``.
    supports_timeout: ClassVar[bool] = False
    #: Whether large array arguments may travel beside their chunk (``ChunkSpec.blobs``, see
    #: :mod:`distloop.tasks.core.blobs`); a backend without it gets them inline.
    out_of_band: ClassVar[bool] = False

    def __init__(self, settings: Settings | None = None, workers: int | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.requested_workers = workers
        self.startup_s = 0.0

    @classmethod
    def worker_cap(cls, settings: Settings) -> int:
        """The most workers it may be asked for: processes or threads it starts on this machine."""
        return worker_cap()

    @property
    @abstractmethod
    def workers(self) -> int:
        """How many chunks can run at once (for sizing and the in-flight window)."""

    @property
    def threaded(self) -> bool:
        """Whether the backend's slots are threads (or greenlets), there for waiting work."""
        return False

    @property
    def cores(self) -> int:
        """Cores the chunks run on (CPU utilisation is CPU time over wall time times this)."""
        return min(self.workers, os.cpu_count() or 1)

    def start(self, allow: Sequence[str] = ()) -> None:  # noqa: B027 - optional hook
        """Get ready to run chunks; ``allow`` names targets the job will run."""

    @abstractmethod
    def open_job(self, job: JobSpec) -> None:
        """Prepare for ``job``'s chunks."""

    @abstractmethod
    def submit(self, job: JobSpec, chunks: Sequence[ChunkSpec]) -> None:
        """Start running ``chunks`` (non-blocking where the backend allows)."""

    @abstractmethod
    def wait(self, job: JobSpec, timeout: float) -> list[ChunkResult]:
        """Results finished since the last call; waits up to ``timeout`` for the first."""

    def lost(self, job: JobSpec, pending: Collection[int]) -> list[int]:
        """Indices among ``pending`` (sent, no result yet) that must be sent again.

        Local backends never lose a chunk; the celery backend finds chunks lost
        with a dead worker or a restarted Redis.
        """
        return []

    def stragglers(self, job: JobSpec, in_flight: Mapping[int, ChunkSpec]) -> None:  # noqa: B027 - optional hook
        """Every chunk is sent and some workers are idle: send the slowest of ``in_flight`` again.

        Local backends have no idle worker to hand one to; the celery backend does
        (see :mod:`distloop.backends.stragglers`).
        """

    def collected(self, job: JobSpec, checkpoint: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Chunks below ``checkpoint["next"]`` are emitted: forget their results, keep the checkpoint."""

    def stored_job(self, job_id: str) -> StoredJob | None:
        """A job left unfinished by a producer that died: its description and finished chunks."""
        raise UsageError(f"the {self.name} backend keeps no jobs to resume")

    def cancel(self, job: JobSpec, why: str = "stopped") -> None:  # noqa: B027 - optional hook
        """Stop ``job`` before its end (``why``: "failed", "interrupted", "terminated")."""

    def close_job(self, job: JobSpec) -> None:  # noqa: B027 - optional hook
        """Release what the job held (its ledger, its queue)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop everything :meth:`start` started."""

    def __enter__(self) -> Backend:
        self.start()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()
