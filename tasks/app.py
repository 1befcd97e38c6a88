"""The Celery app and its tasks: what ``celery -A distloop.tasks worker`` serves.

The producer builds its own app from its own settings with :func:`make_app` and
sends tasks by name; the module-level :data:`app` is the worker's.
"""

from __future__ import annotations

import json
from typing import Any

from celery import Celery
from celery.utils.log import get_task_logger

from distloop.tasks import output, runtime, signals
from distloop.tasks.core import blobs, codec, defaults
from distloop.tasks.core.errors import TargetError
from distloop.tasks.core.settings import Settings
from distloop.tasks.kernel import ChunkResult, ChunkSpec, run_named_chunk
from distloop.tasks.store.jobs import ARGUMENT_BLOB, JobStore
from distloop.tasks.targets import resolve

logger = get_task_logger(__name__)

# The worker's signal handlers (heartbeat, ready file, lost chunks) are connected on import.
assert signals


def make_app(settings: Settings) -> Celery:
    """A Celery app configured from ``settings`` (the producer builds its own this way)."""
    # Events whose retries are bounded: a worker whose broker is gone still stops (distloop.tasks.events).
    celery_app = Celery("distloop", set_as_current=False, events="distloop.tasks.events:Events")
    celery_app.conf.update(settings.celery_config())
    return celery_app


settings = runtime.settings
app = make_app(settings)


# A chunk whose process dies (SIGKILL, OOM, segfault) is sent again, at once, at most
# WORKER_LOST_RETRIES times; then it is reported failed instead of looping forever.
@app.task(
    name=defaults.CHUNK_TASK, bind=True, ignore_result=True,
    max_retries=defaults.WORKER_LOST_RETRIES, default_retry_delay=0,
)  # fmt: skip
def chunk(
    self: Any,
    job_id: str,
    target: str,
    spec: dict[str, Any],
    reduce: str | None = None,
    on_error: str = "raise",
    io_concurrency: int | None = None,
    fan_out: int | None = None,
) -> None:
    """Run one chunk of a job and store its result in the job ledger.

    ``io_concurrency``: the job's bound on an ``async def`` target's items awaited at
    once (None: this worker's own DISTLOOP_IO_CONCURRENCY, else the default).
    ``fan_out``: a blocking function's items run that many at once (threads pools only).
    """
    store = runtime.job_store()
    if not store.mark_started(job_id, spec["index"], self.request.hostname or ""):
        return  # the job was cancelled or has finished: nothing to do
    allow = settings.allowed_patterns
    if settings.allow_from_store:  # the embedded cluster: its producer adds modules as it meets them
        allow += store.allowed()
    # Under a --timeout (a per-task time limit) go item by item, so the stuck item is known.
    fast = not any(self.request.timelimit or ())
    bound = min(int(io_concurrency or settings.effective_io_concurrency), defaults.MAX_IO_CONCURRENCY)
    # Threads for a chunk's own items only where the pool is threads (its slots wait, not compute).
    threads = min(int(fan_out or 1), defaults.MAX_POOL_CONCURRENCY) if settings.pool != "prefork" else 1
    chunk_spec = ChunkSpec.from_wire(spec)
    # Large results go beside the JSON (raw bytes in the job's blob hash), as large arguments came.
    with blobs.out_of_band() as buffers:
        try:
            if spec.get("blobs"):
                chunk_spec = ChunkSpec.from_wire(with_arguments(store, job_id, spec))
            if spec.get("forward_output"):  # the producer shows what f prints or logs
                with output.forwarding(runtime.output_store(), job_id, self.request.hostname or "") as out:
                    result = run_named_chunk(target, chunk_spec, reduce, on_error, allow, fast, bound, threads)
                result.output = out.forwarded or None
            else:
                result = run_named_chunk(target, chunk_spec, reduce, on_error, allow, fast, bound, threads)
        except codec.DecodeError as exc:  # arguments this worker cannot read (numpy missing, a forged message)
            result = unreadable(chunk_spec, reduce, on_error, f"arguments cannot be read on this worker: {exc}")
            buffers.clear()
    result.host = self.request.hostname or ""
    if result.fatal:
        logger.warning("refused chunk %s of job %s: %s", result.index, job_id, result.fatal["message"])
    try:
        store.put_result(job_id, result.index, result.to_wire(), buffers)
    except (TypeError, ValueError, RecursionError) as exc:
        # JSON could not write the result. Without a result the chunk would stay "running" for
        # good and its job wait forever: its items fail instead, each with the reason.
        failed = unreadable(chunk_spec, reduce, on_error, f"the result cannot be stored as JSON: {exc}")
        failed.host = result.host
        store.put_result(job_id, failed.index, failed.to_wire())


def with_arguments(store: JobStore, job_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with its large arguments' raw bytes (stored by the producer) in place of their references,
    and its list of calls back in place if it came beside the message (``packed``)."""
    stored = store.get_blobs(job_id, [ARGUMENT_BLOB + name for name in spec["blobs"]])
    found = {name: stored[ARGUMENT_BLOB + name] for name in spec["blobs"]}
    spec = dict(spec)
    packed = spec.pop("packed", None)
    if packed is not None:
        field, data = packed.get("field"), found.get(packed.get("name"))
        if field not in ("each", "calls") or data is None:
            raise codec.DecodeError("the chunk's list of calls is gone from the job's ledger")
        try:
            spec[field] = json.loads(data)  # plain JSON: lists, numbers, strings (the codec's tags)
        except ValueError as exc:
            raise codec.DecodeError(f"the chunk's list of calls is not JSON: {exc}") from None
        if type(spec[field]) is not list or len(spec[field]) != packed.get("items"):
            raise codec.DecodeError("the chunk's list of calls does not match its message")
        if len(found) == 1:  # the list was the only blob: no array references in it to attach
            return spec
    return {k: blobs.attach(v, found) if k in ("each", "calls") else v for k, v in spec.items()}


def unreadable(chunk: ChunkSpec, reduce: str | None, on_error: str, message: str) -> ChunkResult:
    """A chunk whose every item failed with ``message`` (as a value that cannot travel).

    Only the first with ``on_error="raise"``; the indices are listed without decoding
    the chunk's arguments, which may be what failed.
    """
    logger.warning("chunk %s: %s", chunk.index, message)
    indices = range(chunk.start, chunk.stop, chunk.step) if chunk.is_range else range(len(chunk))
    result = ChunkResult(index=chunk.index, values=None if reduce else [])
    for index in indices:
        result.errors.append({"index": index, "type": "NotJSONable", "message": message, "traceback": ""})
        if on_error == "raise":
            break
        result.items += 1
        if result.values is not None:
            result.values.append(None)
    return result


# A refused target is an expected outcome: one line in the log (ours), no traceback (Celery's).
@app.task(name=defaults.ITEM_TASK, throws=(TargetError,))
def item(target: str, i: int) -> Any:
    """One item per task, result through Celery's result backend.

    Not used by distloop's own dispatch: it is the plain-Celery baseline that
    ``make perf`` measures chunked dispatch against, on the same workers.
    """
    try:
        fn = resolve(target, settings.allowed_patterns)
    except TargetError as exc:
        logger.warning("refused item task: %s", exc)
        raise
    return fn(i)
