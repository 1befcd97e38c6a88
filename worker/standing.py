"""A standing local cluster (``distloop up``): redis-server, prefork workers, optionally Flower.

Unlike the embedded cluster it outlives any one job: it runs until stopped, and
writes the full broker URL (with its random password) to an environment file
readable by its owner only, which ``. FILE`` turns into ``DISTLOOP_BROKER_URL``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType

from distloop.tasks.core.errors import BrokerUnavailable
from distloop.tasks.core.settings import ENV_BROKER, Settings
from distloop.worker.celery_worker import start_worker
from distloop.worker.discover import ENV_UP_PROJECT
from distloop.worker.flower import ENV_FLOWER_AUTH, FlowerProcess, require_flower, start_flower
from distloop.worker.processes import ManagedProcess
from distloop.worker.redis_server import RedisServer, start_redis


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """Write ``export NAME='value'`` lines (shell-quoted) to ``path``, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as stream:
        for name, value in values.items():
            quoted = value.replace("'", "'\"'\"'")
            stream.write(f"export {name}='{quoted}'\n")


class StandingCluster:
    """redis-server, one prefork worker with ``concurrency`` processes, and Flower if asked."""

    def __init__(
        self,
        base: Settings,
        *,
        concurrency: int,
        env_file: Path,
        bind: str = "127.0.0.1",
        port: int | None = None,
        flower: bool = False,
        flower_port: int | None = None,
    ) -> None:
        self.base = base
        self.concurrency = concurrency
        self.env_file = env_file
        self.bind = bind
        self.port = port
        self.with_flower = flower
        self.flower_port = flower_port
        self.redis: RedisServer | None = None
        self.worker: ManagedProcess | None = None
        self.flower: FlowerProcess | None = None
        self.hostname = f"up-{os.getpid()}@%h"

    def start(self) -> StandingCluster:
        if self.with_flower:
            require_flower()  # before anything starts
        try:
            self.redis = start_redis(host=self.bind, port=self.port)
            # On loopback its Redis is as private as the embedded cluster's (a random password in a
            # file only its owner reads): its workers, like those, also allow the modules producers
            # that found it there add (`distloop run` of a script of the project needs no --allow).
            settings = self.base.replace(broker_url=self.redis.url, result_url=None, allow_from_store=self.loopback)
            self.worker = start_worker(settings, concurrency=self.concurrency, hostname=self.hostname, cwd=os.getcwd())
            env = {ENV_BROKER: self.redis.url, ENV_UP_PROJECT: os.getcwd()}
            if self.with_flower:
                self.flower = start_flower(settings, port=self.flower_port, port_option="--flower-port")
                # The one variable `distloop flower` reads (USER:PASS).
                env[ENV_FLOWER_AUTH] = f"{self.flower.username}:{self.flower.password}"
            write_env_file(self.env_file, env)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def loopback(self) -> bool:
        """Whether its Redis listens on this host only."""
        return self.bind in ("127.0.0.1", "::1", "localhost")

    def watch(self) -> None:
        """Return never; raise :class:`BrokerUnavailable` if Redis or the worker exits on its own."""
        assert self.redis is not None and self.worker is not None
        parts = [("redis-server", self.redis.process), ("worker", self.worker)]
        while True:
            for name, process in parts:
                if not process.alive():
                    raise BrokerUnavailable(f"{name} (pid {process.pid}) exited with code {process.popen.returncode}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop Flower, the worker and Redis, each by pid, and remove the environment file."""
        for part in (self.flower, self.worker, self.redis):
            if part is not None:
                part.stop()
        self.flower = self.worker = self.redis = None
        if self.env_file.exists():
            self.env_file.unlink()

    def __enter__(self) -> StandingCluster:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()
