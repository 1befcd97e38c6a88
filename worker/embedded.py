"""The embedded cluster: what ``distloop run`` uses when no broker is configured.

A private redis-server (random password, loopback, no persistence) and one
local prefork worker with one process per core (``run --pool threads``: a threads
worker with :data:`~distloop.tasks.core.defaults.THREAD_WORKERS` threads), importing from
the producer's working directory. Both start at once; the producer may send chunks as
soon as Redis answers (they wait in Redis while the worker starts: ``start(wait=False)``,
then :meth:`EmbeddedCluster.check`). Stopped by pid at exit, on errors and on
Ctrl-C. Its workers also allow the modules its producer adds to the private Redis
later (``JobStore.allow``), so an Executor can run functions from a module it meets
after the cluster started.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from types import TracebackType

from distloop.tasks.core import defaults
from distloop.tasks.core.errors import BrokerUnavailable
from distloop.tasks.core.limits import check_workers, pool_cap
from distloop.tasks.core.settings import Settings
from distloop.worker.celery_worker import start_worker
from distloop.worker.processes import ManagedProcess
from distloop.worker.redis_server import RedisServer, spawn_redis


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
        self._ready_file = ""
        self._ready = False
        self._started = 0.0
        self._deadline = 0.0

    def start(self, wait: bool = True) -> EmbeddedCluster:
        """Start Redis and the worker side by side; return once Redis answers (and, with ``wait``, the worker).

        Without ``wait`` the caller calls :meth:`check` until it returns True.
        """
        self._started = time.perf_counter()
        self._deadline = time.monotonic() + defaults.STARTUP_TIMEOUT
        self._ready_file = os.path.join(tempfile.gettempdir(), f"distloop-ready-{uuid.uuid4().hex}")
        self._ready = False
        try:
            for attempt in range(5):  # another process may grab the free port before redis binds it
                self.redis = spawn_redis()
                self._start_worker(self.redis)
                try:
                    self.redis.wait_answering()
                    break
                except (RuntimeError, TimeoutError) as exc:
                    self._stop_parts()
                    if attempt == 4:
                        raise BrokerUnavailable(f"could not start redis-server: {exc}") from None
            if wait:
                assert self.worker is not None
                self.worker.wait_for(self.check, defaults.STARTUP_TIMEOUT, "ready")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_worker(self, server: RedisServer) -> None:
        self.settings = self.base_settings.replace(
            broker_url=server.url,
            result_url=None,
            allow=self.base_settings.allow + self.allow,
            # The Executor and Pool meet functions from new modules as they go.
            allow_from_store=True,
        )
        if not self.log_path:
            fd, self.log_path = tempfile.mkstemp(prefix="distloop-worker-", suffix=".log")
            os.close(fd)
        # Started before Redis answers: it spends its first 0.3 s importing Celery.
        self.worker = start_worker(
            self.settings,
            concurrency=self.workers,
            hostname=f"embedded-{os.getpid()}@%h",
            cwd=os.getcwd(),
            log_path=self.log_path,
            import_path=script_folder(),
            wait=False,
            ready_file=self._ready_file,
            # If we die, our private Redis dies with us: a cold shutdown has nothing to hand
            # back, and its pool children would wait up to 30 s for Redis to store a result.
            # Celery gives its pool children PDEATHSIG SIGKILL: they go with the worker.
            death_signal=signal.SIGKILL,
        )

    def check(self) -> bool:
        """Whether the worker consumes tasks yet; :class:`BrokerUnavailable` if it died or never got there."""
        if self._ready:
            return True
        if self.worker is None:
            raise BrokerUnavailable("the embedded cluster is not running")
        if os.path.exists(self._ready_file):
            os.unlink(self._ready_file)
            self._ready = True
            self.startup_s = time.perf_counter() - self._started
            return True
        if not self.worker.alive():
            raise BrokerUnavailable(
                f"the embedded worker exited with code {self.worker.popen.returncode} before it was ready: "
                f"{self.log_tail()}"
            )
        if time.monotonic() > self._deadline:
            raise BrokerUnavailable(f"the embedded worker was not ready after {defaults.STARTUP_TIMEOUT:.0f} s")
        return False

    def log_tail(self) -> str:
        """The worker log's last lines, joined on one line."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                lines = [line.strip() for line in log.read().splitlines() if line.strip()]
        except OSError:
            return "(no log)"
        return "; ".join(lines[-3:]) or "(empty log)"

    def stop(self) -> None:
        """Stop the worker (and its pool) and then Redis, each by pid."""
        self._stop_parts()
        if self.log_path and os.path.exists(self.log_path):
            os.unlink(self.log_path)
        if self._ready_file and os.path.exists(self._ready_file):
            os.unlink(self._ready_file)

    def _stop_parts(self) -> None:
        if self.worker is not None:
            # Nothing of value is left in a private cluster: its whole process group is killed
            # at once (Celery's cold shutdown, SIGQUIT, took 1.7 s, and was cut short after 0.5 s).
            self.worker.stop(signal.SIGKILL, grace=0.5)
            self.worker = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()
