"""The embedded cluster: what ``distloop run`` uses when no broker is configured.

A private redis-server (random password, loopback, no persistence) and one
local prefork worker with one process per core (``run --pool threads``: a threads
worker with :data:`~distloop.tasks.core.defaults.THREAD_WORKERS` threads), importing from the producer's
working directory. Ready before the first chunk is sent; stopped by pid at
exit, on errors and on Ctrl-C. Its workers also allow the modules its producer
adds to the private Redis later (``JobStore.allow``), so an Executor can run
functions from a module it meets after the cluster started.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from types import TracebackType

from distloop.tasks.core import defaults
from distloop.tasks.core.limits import check_workers, pool_cap
from distloop.tasks.core.settings import Settings
from distloop.worker.celery_worker import start_worker
from distloop.worker.processes import ManagedProcess
from distloop.worker.redis_server import RedisServer, start_redis


def script_folder() -> list[str]:
    """The folder this Python imports from first (``sys.path[0]``: the script's), if not the working directory.

    ``python myproject/run.py`` imports ``myproject``'s neighbours from there; the
    embedded workers must find them too. A console script's folder (``bin``) is left out.
    """
    first = sys.path[0] if sys.path else ""
    if not first or not os.path.isdir(first):
        return []
    first = os.path.abspath(first)
    if first in (os.path.abspath(os.getcwd()), os.path.dirname(os.path.abspath(sys.executable))):
        return []
    return [first]


class EmbeddedCluster:
    """A private Redis and local workers, for the life of a ``with`` block."""

    def __init__(self, workers: int | None = None, allow: Sequence[str] = (), settings: Settings | None = None):
        waiting = settings is not None and settings.pool != "prefork"  # `run --pool threads`: threads, not processes
        check_workers(workers, "workers", pool_cap(settings.pool if settings is not None else "prefork"))
        self.workers = workers or (defaults.THREAD_WORKERS if waiting else os.cpu_count() or 1)
        self.allow = tuple(allow)
        # Its private Redis speaks plain redis:// on loopback: TLS settings meant for a
        # remote broker (DISTLOOP_TLS_*) do not apply to it.
        self.base_settings = (settings or Settings()).replace(
            tls_ca_file=None, tls_cert_file=None, tls_key_file=None, tls_insecure=False
        )
        self.redis: RedisServer | None = None
        self.worker: ManagedProcess | None = None
        self.settings: Settings | None = None
        self.startup_s = 0.0
        self.log_path = ""

    def start(self) -> EmbeddedCluster:
        started = time.perf_counter()
        try:
            self.redis = start_redis()
            self.settings = self.base_settings.replace(
                broker_url=self.redis.url,
                result_url=None,
                allow=self.base_settings.allow + self.allow,
                # The Executor and Pool meet functions from new modules as they go.
                allow_from_store=True,
            )
            fd, self.log_path = tempfile.mkstemp(prefix="distloop-worker-", suffix=".log")
            os.close(fd)
            self.worker = start_worker(
                self.settings,
                concurrency=self.workers,
                hostname=f"embedded-{os.getpid()}@%h",
                cwd=os.getcwd(),
                log_path=self.log_path,
                import_path=script_folder(),
            )
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - started
        return self

    def stop(self) -> None:
        """Stop the worker (and its pool) and then Redis, each by pid."""
        if self.worker is not None:
            # Nothing of value is left in a private cluster: a cold shutdown, cut short.
            self.worker.stop(signal.SIGQUIT, grace=0.5)
            self.worker = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.log_path and os.path.exists(self.log_path):
            os.unlink(self.log_path)

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()
