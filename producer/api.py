"""The Python entry point: ``run_loop(f, range(...))``."""

from __future__ import annotations

import inspect
import math
import os
import reprlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from distloop.assemble import Assembler, JsonLinesSink, ListSink
from distloop.backends import check_timeout, start_backend
from distloop.backends.base import Backend, JobSpec
from distloop.dispatch import Progress, run_chunks
from distloop.ranges import range_length
from distloop.sizing import ChunkPlanner
from distloop.tasks.core import codec, defaults
from distloop.tasks.core.errors import ResultNotSerializable, UsageError
from distloop.tasks.core.limits import check_positive
from distloop.tasks.core.settings import Settings
from distloop.tasks.kernel import ON_ERROR, REDUCERS, ChunkResult, ChunkSpec
from distloop.tasks.targets import resolve, target_of


@dataclass
class JobReport:
    """What a finished job gives back: the result and how it was obtained."""

    job_id: str
    backend: str
    items: int
    chunks: int
    chunk_size: int
    wall_s: float
    result: Any = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    hosts: dict[str, dict[str, int]] = field(default_factory=dict)
    startup_s: float = 0.0
    compute_s: float = 0.0  # seconds the chunks spent in f, summed over workers
    cpu_s: float = 0.0  # CPU seconds of the threads that ran the chunks, as the workers measured them


def new_job_id() -> str:
    """A fresh job id: what `distloop status` and `distloop resume` take."""
    return uuid.uuid4().hex[:12]


def validate(reduce: str | None, on_error: str) -> None:
    if reduce is not None and reduce not in REDUCERS:
        raise UsageError(f"unknown reduce op {reduce!r}; choose from {', '.join(REDUCERS)}")
    if on_error not in ON_ERROR:
        raise UsageError(f"unknown --on-error {on_error!r}; choose from {', '.join(ON_ERROR)}")


def validate_io_concurrency(io_concurrency: int | None) -> None:
    if io_concurrency is not None and not 1 <= io_concurrency <= defaults.MAX_IO_CONCURRENCY:
        raise UsageError(f"--io-concurrency must be between 1 and {defaults.MAX_IO_CONCURRENCY}, not {io_concurrency}")


def validate_timeout(timeout: float | None) -> None:
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        raise UsageError(f"--timeout must be a positive number of seconds, not {timeout}")


def chunk_size_option(chunk_size: int | str) -> int | None:
    """``"auto"`` -> None, else a positive integer."""
    if chunk_size == "auto":
        return None
    try:
        size = int(chunk_size)
    except ValueError:
        raise UsageError(f"--chunk-size {chunk_size!r}: expected a positive integer or 'auto'") from None
    check_positive(size, "--chunk-size", defaults.MAX_CHUNK_SIZE)
    return size


def item_count(items: range | list[Any]) -> int:
    """How many items: a range's length of any size (``len`` stops at 2**63), or a list's."""
    return range_length(items) if isinstance(items, range) else len(items)


def plan_chunks(
    items: range | list[Any],
    chunk_size: int | str,
    workers: int,
    io_concurrency: int | None = None,
    threaded: bool = False,
    by_host: bool = False,
    fan_out: int | None = None,
) -> ChunkPlanner:
    """The job's chunk planner; a list of values becomes a range over their positions.

    ``io_concurrency``: set for an ``async def`` target (items awaited at once per chunk).
    ``by_host``: shrink the tail for the slowest host measured (celery backend).
    ``fan_out``: each chunk's items run that many at once (a threads pool's blocking chunks).
    """
    fixed = chunk_size_option(chunk_size)
    if isinstance(items, range):
        planner = ChunkPlanner(items, workers, 0.0, fixed, io_concurrency=io_concurrency, threaded=threaded)
    else:
        planner = CallPlanner(items, workers, fixed, io_concurrency, threaded)
    planner.by_host = by_host
    planner.fan_out = fan_out or 1
    return planner


class CallPlanner(ChunkPlanner):
    """Chunks of explicit calls ``f(value)`` for an arbitrary iterable's values."""

    def __init__(
        self,
        values: list[Any],
        workers: int,
        fixed: int | None,
        io_concurrency: int | None = None,
        threaded: bool = False,
    ) -> None:
        super().__init__(range(len(values)), workers, 0.0, fixed, io_concurrency=io_concurrency, threaded=threaded)
        self.values = values

    def __iter__(self) -> Iterator[ChunkSpec]:
        for spec in super().__iter__():
            yield ChunkSpec(index=spec.index, calls=[self._call(n) for n in range(spec.start, spec.stop)])

    def _call(self, n: int) -> list[Any]:
        try:
            return codec.encode_call([self.values[n]], {})
        except codec.NotJSONable as exc:  # named by its item, as the facades name a call
            value = reprlib.repr(self.values[n])
            raise ResultNotSerializable(f"cannot send item {n} ({value}): {exc}; {codec.WHAT_TRAVELS}") from None


def run_job(
    f: Callable[..., Any] | str,
    items: range | Iterable[Any],
    *,
    backend: str | Backend = "celery",
    reduce: str | None = None,
    chunk_size: int | str = "auto",
    workers: int | None = None,
    on_error: str = "raise",
    settings: Settings | None = None,
    output: IO[str] | None = None,
    progress: Progress | None = None,
    job_id: str | None = None,
    timeout: float | None = None,
    forward_output: bool | None = None,
    io_concurrency: int | None = None,
    pool: str | None = None,
) -> JobReport:
    """Run ``f`` over ``items`` and report how; see :func:`run_loop`."""
    validate(reduce, on_error)
    if forward_output is not None and isinstance(backend, str):
        settings = (settings or Settings.from_env()).replace(forward_output=forward_output)
    validate_timeout(timeout)
    if pool is not None:
        if pool not in defaults.POOLS:
            raise UsageError(f"unknown pool {pool!r}; choose from {', '.join(defaults.POOLS)}")
        settings = (settings or Settings.from_env()).replace(pool=pool)
    if io_concurrency is None and settings is not None:
        io_concurrency = settings.io_concurrency
    validate_io_concurrency(io_concurrency)
    target = f if isinstance(f, str) else target_of(f)
    fn = resolve(target)  # preflight: import it here (never call it), so a bad target fails fast
    # An async target's chunks await many items at once: the planner sizes them for it.
    awaited = (io_concurrency or defaults.IO_CONCURRENCY) if inspect.iscoroutinefunction(fn) else None
    if not isinstance(items, range):
        items = list(items)
    sink = JsonLinesSink(output) if output is not None else ListSink()
    assembler = Assembler(reduce, on_error, sink)
    owned = isinstance(backend, str)
    allow = (target.rpartition(":")[0],)
    if isinstance(backend, str):
        engine = start_backend(backend, settings or Settings.from_env(), workers, allow, timeout=timeout)
    else:
        engine = backend
        check_timeout(engine, timeout)
        engine.start(allow)
    try:
        by_host = engine.name == "celery" and engine.settings.stragglers  # hosts can differ in speed
        # A threads pool's blocking chunks run their items a few at a time: one chunk per few threads.
        fan_out = defaults.THREAD_FAN_OUT if engine.name == "celery" and engine.threaded and not awaited else None
        slots = max(1, engine.workers // fan_out) if fan_out else engine.workers
        planner = plan_chunks(items, chunk_size, slots, awaited, engine.threaded, by_host, fan_out)
        assembler.total_chunks = planner.estimated_chunks()
        # Everything `distloop resume` needs to finish the job is kept in its ledger.
        meta: dict[str, Any] = {
            "items": item_count(items), "chunk_size": planner.first_size, "chunks": assembler.total_chunks,
        }  # fmt: skip
        if isinstance(items, range):
            meta["range"] = [items.start, items.stop, items.step]
        if output is not None and getattr(output, "name", None):
            meta["output"] = os.path.abspath(output.name)
        if io_concurrency:
            meta["io_concurrency"] = io_concurrency
        if fan_out:
            meta["fan_out"] = fan_out
        job = JobSpec(job_id or new_job_id(), target, reduce, on_error, timeout, meta, io_concurrency, fan_out)

        cpu = [0.0]

        def observe(result: ChunkResult) -> None:
            cpu[0] += result.cpu_seconds
            planner.observe(result)
            assembler.total_chunks = meta["chunks"] = planner.estimated_chunks()  # the ledger gets it too

        started = time.perf_counter()
        run_chunks(engine, job, iter(planner), assembler, window=planner.window, observe=observe, progress=progress)
        wall = time.perf_counter() - started
    finally:
        if owned:
            engine.close()
    result = assembler.value if reduce else (sink.values if isinstance(sink, ListSink) else None)
    return JobReport(
        job.job_id, engine.name, item_count(items), planner.sent, planner.largest, wall, result,
        assembler.errors, assembler.hosts, engine.startup_s, assembler.compute_s, cpu[0],
    )  # fmt: skip


def run_loop(
    f: Callable[..., Any] | str,
    items: range | Iterable[Any],
    *,
    backend: str = "celery",
    reduce: str | None = None,
    chunk_size: int | str = "auto",
    **options: Any,
) -> Any:
    """``[f(i) for i in items]`` (or its reduction), run in parallel on ``backend``.

    ``f`` is a module-level function or a ``"module:function"`` name. Results
    come back in loop order; with ``reduce`` ("sum", "min", "max", "count") the
    workers reduce and one value comes back. The first failing item raises
    :class:`~distloop.tasks.core.errors.ChunkFailed` with the worker's traceback as its cause.
    What ``f`` prints or logs on Celery workers shows here as ``[host:pid] line``
    (``forward_output=False``: not). Other options: ``workers``, ``on_error``,
    ``settings``, ``progress``, ``timeout``.

    An ``async def`` ``f`` runs on every backend: each chunk's items are awaited
    concurrently on one event loop per worker process, at most ``io_concurrency`` at
    once (default: the workers' DISTLOOP_IO_CONCURRENCY, else 100). ``pool="threads"``
    sends the chunks to ``distloop worker --pool threads`` workers (queue ``distloop.threads``).
    """
    return run_job(f, items, backend=backend, reduce=reduce, chunk_size=chunk_size, **options).result
