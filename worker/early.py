"""The embedded cluster started early: before the producer imports Celery, kombu and redis-py.

``distloop run`` spends 0.3-0.5 s importing what sends a job (Celery, kombu, redis-py,
rich) and its embedded worker spends as long importing the same before it consumes a
task. Started one after the other, the first result waits for both. The command line
starts the cluster first (``with started_early(...)``, from its own light imports), and
so do ``run_job`` and the facades before they import the Celery backend; the backend
adopts it when its ``start`` asks for the very same cluster (:func:`adopt`): the two
import side by side. Blocks nest: an inner one uses the cluster of the outer.

A cluster nobody adopted (the job failed before its backend started) is stopped by pid
when the block ends; one started for another cluster than the backend asks for (other
workers, another allow-list, other settings) as soon as it asks: a mismatch only costs
the time of starting the right one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from distloop.tasks.core.errors import DistloopError
from distloop.tasks.core.limits import check_workers, worker_cap
from distloop.tasks.core.settings import Settings
from distloop.worker.embedded import EmbeddedCluster

#: The cluster started early and not adopted yet, with what it was started for (under _lock:
#: two threads making executors at once must not both adopt one cluster).
_parked: tuple[EmbeddedCluster, tuple[object, ...]] | None = None
_lock = threading.Lock()


def _key(workers: int | None, allow: Sequence[str], settings: Settings) -> tuple[object, ...]:
    return (workers, tuple(allow), settings)


def wants_embedded(settings: Settings) -> bool:
    """Whether a producer with ``settings`` would start an embedded cluster (no broker, no standing one to look for)."""
    if settings.broker_url is not None:
        return False
    # An environment file of `distloop up` may name a standing cluster: the backend decides, as usual.
    return not (settings.standing and os.path.exists(os.path.expanduser(settings.env_file)))


@contextmanager
def started_early(workers: int | None, allow: Sequence[str], settings: Settings) -> Iterator[EmbeddedCluster | None]:
    """Start the embedded cluster for ``EmbeddedCluster(workers, allow, settings)`` now, for the backend to adopt.

    Yields the cluster, or None: when ``settings`` would not use one, or it cannot start
    here (the backend then starts it, and reports why not, as without this).
    """
    global _parked
    with _lock:
        outer = _parked
    if outer is not None:  # started further up (the command line's block owns it)
        yield outer[0]
        return
    cluster = None
    if wants_embedded(settings):
        try:
            # The Celery backend's own cap for its embedded cluster, before anything forks.
            check_workers(workers, "--workers", worker_cap())
            cluster = EmbeddedCluster(workers, allow, settings).start(wait=False)
        except DistloopError:  # a refused --workers, no redis-server: the backend says so in its own words
            cluster = None
    if cluster is not None:
        with _lock:
            _parked = (cluster, _key(workers, allow, settings))
    try:
        yield cluster
    finally:
        with _lock:
            unclaimed = cluster is not None and _parked is not None and _parked[0] is cluster
            if unclaimed:
                _parked = None
        if unclaimed and cluster is not None:
            cluster.stop()


def adopt(workers: int | None, allow: Sequence[str], settings: Settings) -> EmbeddedCluster | None:
    """The cluster started early for exactly these arguments (once: it is the caller's to stop), else None.

    One started for other arguments is stopped at once: the caller starts its own.
    """
    global _parked
    with _lock:
        if _parked is None:
            return None
        (cluster, key), _parked = _parked, None
    if key != _key(workers, allow, settings):
        cluster.stop()
        return None
    return cluster
