"""Starting ``celery -A tasks worker`` processes with distloop's settings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping

from tasks import defaults
from tasks.application import ENV_READY_FILE
from tasks.settings import Settings
from worker.processes import ManagedProcess


def worker_argv(concurrency: int, hostname: str, loglevel: str = "warning") -> list[str]:
    """The command line of a distloop worker: prefork, distloop's queue.

    No ``-E``: task events cost about 1 ms of worker CPU per chunk, so they are on
    only while a monitor asks for them (Flower does, every few seconds) or with
    ``DISTLOOP_TASK_EVENTS=1``.
    """
    return [
        sys.executable, "-m", "celery", "-A", "tasks", "worker",
        "-P", "prefork", "-c", str(concurrency), "-Q", defaults.QUEUE,
        "-n", hostname, "-l", loglevel, "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def worker_env(settings: Settings, extra: Mapping[str, str] | None = None, cwd: str | None = None) -> dict[str, str]:
    """Environment for a worker: distloop settings, and the user's folder on the import path."""
    env = dict(os.environ)
    env.update(settings.to_env())
    folder = cwd or os.getcwd()
    env["PYTHONPATH"] = os.pathsep.join(p for p in [folder, env.get("PYTHONPATH", "")] if p)
    env.update(extra or {})
    return env


def start_worker(
    settings: Settings,
    *,
    concurrency: int,
    hostname: str | None = None,
    cwd: str | None = None,
    log_path: str | None = None,
    wait: bool = True,
    timeout: float = defaults.STARTUP_TIMEOUT,
    extra_env: Mapping[str, str] | None = None,
) -> ManagedProcess:
    """Start one prefork worker; with ``wait``, return once it consumes tasks."""
    hostname = hostname or f"distloop-{os.getpid()}@{socket.gethostname()}"
    ready = os.path.join(tempfile.gettempdir(), f"distloop-ready-{uuid.uuid4().hex}")
    env = worker_env(settings, {ENV_READY_FILE: ready, **(extra_env or {})}, cwd)
    log = open(log_path, "ab") if log_path else None  # noqa: SIM115
    try:
        process = ManagedProcess(
            f"celery worker {hostname}",
            worker_argv(concurrency, hostname),
            env=env,
            cwd=cwd,
            log=log if log is not None else subprocess.DEVNULL,
            # Cold shutdown if we die: the worker must not outlive its owner.
            death_signal=signal.SIGQUIT,
        )
    finally:
        if log is not None:
            log.close()
    if wait:
        try:
            process.wait_for(lambda: os.path.exists(ready), timeout, "ready")
        except BaseException:
            process.stop()
            raise
        finally:
            if os.path.exists(ready):
                os.unlink(ready)
    return process
