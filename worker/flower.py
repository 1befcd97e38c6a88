"""Flower for distloop's app: loopback, basic auth always on, a bounded task list.

Flower runs as ``python -m celery -A distloop.tasks flower`` in a private empty working
directory (Flower would otherwise execute a ``flowerconfig.py`` found in the
current directory), with distloop's settings in its environment. The basic-auth
credentials travel in the environment too (``FLOWER_BASIC_AUTH``), so they never
show in ``ps``; the broker password stays out of every line we print.

Workers send task events only while someone watches: once Flower answers, this
module switches them on by remote control (Flower itself repeats that every 5 s
for workers that start later) and waits for their heartbeats to say so, so the
next job's producer sends task-sent events too.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import redis

from distloop.tasks.app import make_app
from distloop.tasks.core import defaults
from distloop.tasks.core.errors import BrokerUnavailable, UsageError
from distloop.tasks.core.settings import Settings
from distloop.tasks.store.workers import events_watched, live_workers
from distloop.worker.celery_worker import worker_env
from distloop.worker.processes import ManagedProcess

#: Where `distloop flower` finds USER:PASS when --basic-auth is not given (keeps it out of `ps`);
#: `distloop up --flower` writes its credentials there in its environment file.
ENV_FLOWER_AUTH = "DISTLOOP_FLOWER_AUTH"

#: Columns of Flower's tasks page: ``args`` shows each chunk's job, target and range.
TASKS_COLUMNS = "name,uuid,state,args,received,started,runtime,worker"

_BOUND = re.compile(r"Visit me at https?://\S+?:(\d+)")


@dataclass
class FlowerProcess:
    """A running Flower we started; :meth:`stop` stops it by pid."""

    process: ManagedProcess
    address: str
    port: int
    username: str
    password: str = field(repr=False)
    log_path: str = ""
    workdir: str = field(default="", repr=False)

    @property
    def url(self) -> str:
        """Where to point a browser (credentials not included)."""
        host = "127.0.0.1" if self.address in ("", "0.0.0.0") else self.address
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop Flower by pid and remove its working directory and log."""
        self.process.stop(signal.SIGTERM)
        shutil.rmtree(self.workdir, ignore_errors=True)


def require_flower() -> None:
    """Raise :class:`UsageError` with the install line when Flower (an optional part) is missing."""
    if importlib.util.find_spec("flower") is None:
        raise UsageError("Flower is not installed: pip install 'distloop[flower]'")


def parse_basic_auth(text: str) -> tuple[str, str]:
    """Split ``USER:PASS``; both parts required (Flower splits several pairs on commas)."""
    user, sep, password = text.partition(":")
    if not sep or not user or not password or "," in text:
        raise UsageError("--basic-auth must be USER:PASS (both non-empty, no comma)")
    return user, password


def flower_argv(address: str, port: int, max_tasks: int) -> list[str]:
    return [
        sys.executable, "-P", "-m", "celery", "-A", "distloop.tasks", "flower",
        f"--address={address}", f"--port={port}", f"--max_tasks={max_tasks}",
        f"--tasks_columns={TASKS_COLUMNS}",
    ]  # fmt: skip


def start_flower(
    settings: Settings,
    *,
    port: int | None = None,
    basic_auth: str | None = None,
    address: str = "127.0.0.1",
    max_tasks: int = defaults.FLOWER_MAX_TASKS,
    timeout: float = defaults.STARTUP_TIMEOUT,
    port_option: str = "--port",
) -> FlowerProcess:
    """Start Flower on ``settings``' broker; return once it answers HTTP.

    ``port`` None is Flower's usual 5555, 0 any free port (``port_option`` names the
    option that chose it, for the advice when the port is taken). ``basic_auth``
    ``USER:PASS``; when None, credentials are generated (``.username``,
    ``.password``): Flower is never started without authentication.
    """
    require_flower()
    if max_tasks < 1:
        raise UsageError(f"--max-tasks must be at least 1, not {max_tasks}")
    if basic_auth is None:
        basic_auth = f"{defaults.FLOWER_USER}:{secrets.token_urlsafe(18)}"
    username, password = parse_basic_auth(basic_auth)
    chosen = defaults.FLOWER_PORT if port is None else port
    workdir = tempfile.mkdtemp(prefix="distloop-flower-")
    log_path = os.path.join(workdir, "flower.log")
    env = worker_env(settings, {"FLOWER_BASIC_AUTH": basic_auth})
    env.pop("FLOWER_UNAUTHENTICATED_API", None)  # never let the API answer without credentials
    with open(log_path, "ab") as log:
        process = ManagedProcess("flower", flower_argv(address, chosen, max_tasks), env=env, cwd=workdir, log=log)
    flower = FlowerProcess(process, address, chosen, username, password, log_path, workdir)
    try:
        process.wait_for(lambda: _bound_port(flower) is not None, timeout, "listening")
        flower.port = _bound_port(flower) or chosen
        process.wait_for(lambda: _healthy(flower.url), timeout, "answering /healthcheck")
    except (RuntimeError, TimeoutError) as exc:
        text = flower.log()
        flower.stop()
        if "Address already in use" in text:
            raise UsageError(f"port {chosen} on {address} is in use: pass {port_option} 0 for any free port") from None
        tail = "; ".join(text.strip().splitlines()[-3:])
        raise BrokerUnavailable(f"Flower did not start: {exc} ({tail})") from None
    except BaseException:
        flower.stop()
        raise
    enable_task_events(settings)
    return flower


def enable_task_events(settings: Settings, timeout: float = 5.0) -> bool:
    """Ask every worker to send task events; wait until a live one's heartbeat says it does.

    Returns whether one does (False too when no worker runs yet: Flower asks again
    every few seconds, and a worker that starts later is switched on then).
    """
    app = make_app(settings)
    client = settings.redis_client()
    try:
        app.control.enable_events()
        deadline = time.monotonic() + timeout
        while True:
            workers = live_workers(client)
            if events_watched(workers):
                return True
            if not workers or time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
        app.close()


def _bound_port(flower: FlowerProcess) -> int | None:
    match = _BOUND.search(flower.log())
    return int(match.group(1)) if match else None


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthcheck", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
