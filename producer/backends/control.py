"""What the producer asks of the workers through Celery's remote control: what they hold, and revoking a job.

Both are broadcasts (kombu's pidbox), so the producer uses them only when it must: asking
happens when a job has made no progress for a while (:mod:`distloop.backends.recovery`),
revoking when a job ends with chunks still running.
"""

from __future__ import annotations

import redis
from celery import Celery
from kombu.exceptions import OperationalError

#: The message header that names a chunk's job (and the producer that sent it): revoking a
#: job is revoking that stamp. Per producer, so a job id used again later is not revoked too.
JOB_STAMP = "distloop_job"
#: Seconds the workers get to say which chunks they hold.
INSPECT_TIMEOUT = 2.0


def held_by_workers(app: Celery, task_ids: list[str]) -> set[str] | None:
    """Which of ``task_ids`` the live workers hold, by their own answer (``inspect().query_task``).

    None when no worker answered within :data:`INSPECT_TIMEOUT`.
    """
    try:
        replies = app.control.inspect(timeout=INSPECT_TIMEOUT).query_task(*task_ids)
    except (OperationalError, redis.RedisError, OSError):
        return None
    if not replies:
        return None
    return {task_id for reply in replies.values() for task_id in (reply or {})}


def revoke_stamp(app: Celery, stamp: str) -> None:
    """Stop every chunk stamped ``stamp`` (:data:`JOB_STAMP`): running ones are terminated, later ones skipped.

    By stamp, not by task id: for a revoke by id, every worker that does not run a chunk
    stores a REVOKED result (``celery-task-meta-<id>``, kept a day) for it. For a stamp,
    a worker only skips or stops its own chunks, which store nothing (``ignore_result``).
    """
    app.control.revoke_by_stamped_headers({JOB_STAMP: stamp}, terminate=True)
