"""The Celery app and the chunk task: what ``celery -A tasks worker`` serves."""

from __future__ import annotations

import os
import pathlib
from typing import Any

from celery import Celery, signals
from celery.utils.log import get_task_logger

from tasks import defaults
from tasks.heartbeat import Heartbeat
from tasks.jobstore import JobStore
from tasks.kernel import ChunkSpec, run_named_chunk
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


@app.task(name=defaults.CHUNK_TASK, bind=True, ignore_result=True)
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
    result = run_named_chunk(target, ChunkSpec.from_wire(spec), reduce, on_error, allow)
    result.host = self.request.hostname or ""
    if result.fatal:
        logger.warning("refused chunk %s of job %s: %s", result.index, job_id, result.fatal["message"])
    store.put_result(job_id, result.index, result.to_wire())


_heartbeat: Heartbeat | None = None


@app.task(name=defaults.ITEM_TASK)
def item(target: str, i: int) -> Any:
    """One item per task, result through Celery's result backend.

    Not used by distloop's own dispatch: it is the plain-Celery baseline that
    ``make perf`` measures chunked dispatch against, on the same workers.
    """
    return resolve(target, settings.allowed_patterns)(i)


@signals.worker_ready.connect
def _announce_ready(sender: Any = None, **_: Any) -> None:
    global _heartbeat
    hostname = getattr(sender, "hostname", None) or "unknown"
    concurrency = int(getattr(getattr(sender, "controller", None), "concurrency", 0) or 1)
    client = settings.redis_client()
    _heartbeat = Heartbeat(client, hostname, concurrency)
    _heartbeat.start()
    path = os.environ.get(ENV_READY_FILE)
    if path:
        pathlib.Path(path).write_text(str(os.getpid()))


@signals.worker_shutdown.connect
def _announce_shutdown(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
