"""A worker's life: announce it (heartbeat, ready file), and report chunks its pool lost.

Celery's signals are global; :mod:`distloop.tasks.app` imports this module so that
these handlers are connected in every process that serves distloop's app.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import redis
from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery import signals
from celery.utils.log import get_task_logger

from distloop.tasks import kernel, runtime
from distloop.tasks.core import defaults
from distloop.tasks.core.settings import ENV_READY_FILE
from distloop.tasks.kernel import ChunkSpec, killed_chunk_result
from distloop.tasks.store.workers import Heartbeat

logger = get_task_logger(__name__)

_heartbeat: Heartbeat | None = None


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
    store = runtime.job_store()
    try:
        if not store.exists(job_id):
            return
        result = killed_chunk_result(ChunkSpec.from_wire(spec), reduce, on_error, kind, message)
        store.put_result(job_id, result.index, result.to_wire())
    except redis.RedisError as exc:
        logger.warning("could not report failed chunk %s of job %s: %s", spec.get("index"), job_id, exc)


def sends_task_events(consumer: Any) -> bool:
    """Whether the worker sends task events now (-E, DISTLOOP_TASK_EVENTS, or a monitor's enable_events)."""
    dispatcher = getattr(consumer, "event_dispatcher", None)  # replaced on reconnects: read it each time
    if dispatcher is None or not dispatcher.enabled:
        return False
    return not dispatcher.groups or "task" in dispatcher.groups


@signals.worker_process_init.connect
def _catch_exits_in_items(**_: Any) -> None:
    """In a prefork pool process, ``sys.exit()`` or ``raise KeyboardInterrupt`` in ``f`` fails its item.

    Celery ignores SIGINT in these processes (the main process handles Ctrl-C), so
    only ``f`` raises them here; uncaught they would end the process and the chunk
    would be sent again, to die again.
    """
    kernel.ITEM_ERRORS = kernel.WORKER_ITEM_ERRORS


@signals.worker_ready.connect
def _announce_ready(sender: Any = None, **_: Any) -> None:
    global _heartbeat
    hostname = getattr(sender, "hostname", None) or "unknown"
    concurrency = int(getattr(getattr(sender, "controller", None), "concurrency", 0) or 1)
    client = runtime.settings.redis_client()
    _heartbeat = Heartbeat(client, hostname, concurrency, lambda: sends_task_events(sender), runtime.settings.pool)
    _heartbeat.start()
    path = os.environ.get(ENV_READY_FILE)
    if path:
        pathlib.Path(path).write_text(str(os.getpid()))


@signals.worker_shutdown.connect
def _announce_shutdown(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
