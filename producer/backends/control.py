"""What the producer asks of the workers through Celery's remote control: what they hold, and revoking.

Broadcasts (kombu's pidbox), so the producer uses them only when it must: asking happens
when a job has made no progress for a while (:mod:`distloop.backends.recovery`), revoking
a job when it ends with chunks still running, revoking a chunk's copy when the other
copy's result came first (:mod:`distloop.backends.stragglers`).
"""

from __future__ import annotations

from collections.abc import Mapping

import redis
from celery import Celery
from celery.utils.nodenames import worker_direct
from kombu.exceptions import OperationalError

from distloop.backends.queue import queued_messages

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


def stop_copies(app: Celery, broker: redis.Redis, job_id: str, firsts: Mapping[int, tuple[str, str, str]]) -> None:
    """Stop the copies that lost: ``firsts`` maps a chunk index to (the host whose result came
    first, the host the chunk ran on first, the host its copy went to).

    A copy still queued on its worker's own queue is taken out of it; a running one is
    revoked with ``terminate``, addressed to its worker alone: a worker that does not run
    the task would record a REVOKED state in the result backend (a ``celery-task-meta``
    key nobody reads). Best effort: a copy that finishes anyway has its result ignored.
    """
    losers: dict[str, list[str]] = {}
    for index, (winner, origin, target) in firsts.items():
        task_id = f"{job_id}-{index}"
        try:
            if winner != target:
                queued = queued_messages(broker, [worker_direct(target).name], job_id)
                waiting = [(key, raw) for key, raw, found in queued if found == index]
                if any(broker.lrem(key, 0, raw) for key, raw in waiting):
                    continue  # the copy never started
            for host in {origin, target} - {winner}:
                losers.setdefault(host, []).append(task_id)
        except (redis.RedisError, OSError):
            pass  # the copy then finishes, and the ledger ignores its result
    for host, task_ids in losers.items():
        try:
            app.control.revoke(task_ids, terminate=True, destination=[host])
        except (OperationalError, redis.RedisError, OSError):
            pass
