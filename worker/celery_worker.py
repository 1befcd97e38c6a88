"""Starting ``celery -A distloop.tasks worker`` processes with distloop's settings.

:func:`start_worker` runs Celery's same ``worker`` command through
:mod:`distloop.worker.launch` (without the ``celery`` umbrella's plugins: ready 0.3 s sooner).
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from distloop.tasks.core import defaults
from distloop.tasks.core.limits import check_workers, pool_cap
from distloop.tasks.core.settings import ENV_READY_FILE, Settings
from distloop.worker.processes import ManagedProcess


def worker_argv(
    concurrency: int, hostname: str, loglevel: str = "warning", pool: str = "prefork", quick: bool = False
) -> list[str]:
    """The command line of a distloop worker: its pool kind, and that kind's queue.

    ``prefork`` serves :data:`defaults.QUEUE`; ``threads`` and ``gevent`` serve their own
    (:func:`defaults.queue_for`), so only jobs sent for waiting work reach them.

    ``quick``: through :mod:`distloop.worker.launch`, Celery's same ``worker`` command
    without the umbrella command's plugins (0.3 s sooner ready); else ``celery -A distloop.tasks worker``.

    No ``-E``: task events cost about 1 ms of worker CPU per chunk, so they are on
    only while a monitor asks for them (Flower does, every few seconds) or with
    ``DISTLOOP_TASK_EVENTS=1``.
    """
    check_workers(concurrency, "--concurrency", pool_cap(pool))  # the last check before any fork
    # -P: the working directory is not put first on the import path before Celery and its
    # dependencies load, so a user's celery.py or redis.py there cannot stand in for them;
    # the user's own modules are imported from there all the same (distloop.tasks.targets).
    command = ["distloop.worker.launch"] if quick else ["celery", "-A", "distloop.tasks", "worker"]
    return [
        sys.executable, "-P", "-m", *command,
        "-P", pool, "-c", str(concurrency), "-Q", defaults.queue_for(pool),
        "-n", hostname, "-l", loglevel, "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def worker_env(
    settings: Settings, extra: Mapping[str, str] | None = None, import_path: Sequence[str] = ()
) -> dict[str, str]:
    """Environment for a worker: distloop settings, and ``import_path`` ahead on its ``PYTHONPATH``.

    The worker imports the user's modules from its own working directory (see
    :mod:`distloop.tasks.targets`); ``import_path`` adds folders the producer imports
    from besides its working directory (the folder of the script it runs).
    """
    env = dict(os.environ)
    env.update(settings.to_env())
    if import_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in [*import_path, env.get("PYTHONPATH", "")] if p)
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
    import_path: Sequence[str] = (),
    ready_file: str | None = None,
    death_signal: int = signal.SIGQUIT,
) -> ManagedProcess:
    """Start one worker of ``settings.pool``'s kind; with ``wait``, return once it consumes tasks.

    Without ``wait`` the caller watches ``ready_file`` (the worker creates it once it
    consumes tasks) and removes it. ``death_signal``: what the worker gets if this
    process dies first (a cold shutdown by default: it hands back what it holds).
    """
    hostname = hostname or f"distloop-{os.getpid()}@{socket.gethostname()}"
    ready = ready_file or os.path.join(tempfile.gettempdir(), f"distloop-ready-{uuid.uuid4().hex}")
    env = worker_env(settings, {ENV_READY_FILE: ready, **(extra_env or {})}, import_path)
    log = open(log_path, "ab") if log_path else None  # noqa: SIM115
    try:
        process = ManagedProcess(
            f"celery worker {hostname}",
            worker_argv(concurrency, hostname, pool=settings.pool, quick=True),
            env=env,
            cwd=cwd,
            log=log if log is not None else subprocess.DEVNULL,
            # The worker must not outlive its owner.
            death_signal=death_signal,
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


def available_cpus(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """CPUs this process may use: its cpuset, lowered by a container's CPU quota (cgroup v2)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path(cpu_max).read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus
