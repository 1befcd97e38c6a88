"""The Celery app and the chunk task: what ``celery -A tasks worker`` serves."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import redis
from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery import Celery, signals
from celery.utils.log import get_task_logger

from tasks import defaults
from tasks.heartbeat import Heartbeat
from tasks.jobstore import JobStore
from tasks.kernel import ChunkSpec, killed_chunk_result, run_named_chunk
from tasks.resolve import resolve
from tasks.settings import Settings

logger = get_task_logger(__name__)

#: Set by the embedded cluster: a file the worker creates once it is ready.
ENV_READY_FILE = "DISTLOOP_READY_FILE"


def make_app(settings: Settings) -> Celery:
    """A Celery app configured from ``settings`` (the producer builds its own this way)."""
    celery_app = Celery("distloop", set_as_current=False)
    celery_app.conf.update(settings.celery_config())
    return celery_app


settings = Settings.from_env()
app = make_app(settings)
_store: JobStore | None = None


def job_store() -> JobStore:
    """The job ledger on this worker's result Redis (one client per process)."""
    global _store
    if _store is None:
        _store = JobStore(app.backend.client, settings.result_expires)
    return _store


# A chunk whose process dies (SIGKILL, OOM, segfault) is sent again, at once, at most
# WORKER_LOST_RETRIES times; then it is reported failed instead of looping forever.
@app.task(
    name=defaults.CHUNK_TASK, bind=True, ignore_result=True,
    max_retries=defaults.WORKER_LOST_RETRIES, default_retry_delay=0,
)  # fmt: skip
def chunk(
    self: Any, job_id: str, target: str, spec: dict[str, Any], reduce: str | None = None, on_error: str = "raise"
) -> None:
    """Run one chunk of a job and store its result in the job ledger."""
    store = job_store()
    if not store.mark_started(job_id, spec["index"], self.request.hostname or ""):
        return  # the job was cancelled or has finished: nothing to do
    allow = settings.allowed_patterns
    if settings.allow_from_store:  # the embedded cluster: its producer adds modules as it meets them
        allow += store.allowed()
    # Under a --timeout (a per-task time limit) go item by item, so the stuck item is known.
    fast = not any(self.request.timelimit or ())
    result = run_named_chunk(target, ChunkSpec.from_wire(spec), reduce, on_error, allow, fast)
    result.host = self.request.hostname or ""
    if result.fatal:
        logger.warning("refused chunk %s of job %s: %s", result.index, job_id, result.fatal["message"])
    store.put_result(job_id, result.index, result.to_wire())


@signals.task_failure.connect
def _record_killed_chunk(sender: Any = None, exception: Any = None, args: Any = None, **_: Any) -> None:
    """A chunk killed by its hard time limit, or whose process died too often: report it.

    Runs in the worker's main process. Without this the chunk would have no
    result and its job would wait for it forever.
    """
    if getattr(sender, "name", None) != defaults.CHUNK_TASK or not args or len(args) < 3:
        return
    if isinstance(exception, TimeLimitExceeded):
        kind, message = "Timeout", f"the chunk was killed by its hard time limit ({exception.args[0]} s)"
    elif isinstance(exception, WorkerLostError):
        kind = "WorkerLost"
        message = f"the worker process running this chunk died {defaults.WORKER_LOST_RETRIES + 1} times ({exception})"
    else:
        return
    job_id, _target, spec = args[:3]
    reduce = args[3] if len(args) > 3 else None
    on_error = args[4] if len(args) > 4 else "raise"
    store = job_store()
    try:
        if not store.exists(job_id):
            return
        result = killed_chunk_result(ChunkSpec.from_wire(spec), reduce, on_error, kind, message)
        store.put_result(job_id, result.index, result.to_wire())
    except redis.RedisError as exc:
        logger.warning("could not report failed chunk %s of job %s: %s", spec.get("index"), job_id, exc)


_heartbeat: Heartbeat | None = None


@app.task(name=defaults.ITEM_TASK)
def item(target: str, i: int) -> Any:
    """One item per task, result through Celery's result backend.

    Not used by distloop's own dispatch: it is the plain-Celery baseline that
    ``make perf`` measures chunked dispatch against, on the same workers.
    """
    return resolve(target, settings.allowed_patterns)(i)


def sends_task_events(consumer: Any) -> bool:
    """Whether the worker sends task events now (-E, DISTLOOP_TASK_EVENTS, or a monitor's enable_events)."""
    dispatcher = getattr(consumer, "event_dispatcher", None)  # replaced on reconnects: read it each time
    if dispatcher is None or not dispatcher.enabled:
        return False
    return not dispatcher.groups or "task" in dispatcher.groups


@signals.worker_ready.connect
def _announce_ready(sender: Any = None, **_: Any) -> None:
    global _heartbeat
    hostname = getattr(sender, "hostname", None) or "unknown"
    concurrency = int(getattr(getattr(sender, "controller", None), "concurrency", 0) or 1)
    client = settings.redis_client()
    _heartbeat = Heartbeat(client, hostname, concurrency, lambda: sends_task_events(sender))
    _heartbeat.start()
    path = os.environ.get(ENV_READY_FILE)
    if path:
        pathlib.Path(path).write_text(str(os.getpid()))


@signals.worker_shutdown.connect
def _announce_shutdown(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
