"""A distloop deployment across simulated hosts: Redis with a password on one
namespace, ``distloop worker`` on others, the producer in the root namespace.

Used by ``tests/test_multihost.py`` and by ``tests/multihost_scale.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distloop.tasks.core.settings import ENV_ALLOW, ENV_BROKER, ENV_RESULT
from distloop.tasks.store.workers import live_workers
from distloop.worker.processes import ManagedProcess, stop_all
from distloop.worker.redis_server import RedisServer, start_redis
from tests.netlab import ROOT, Host, NetLab, distloop_argv

REDIS_PORT = 6379


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any distloop broker settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in (ENV_BROKER, ENV_RESULT, ENV_ALLOW)}
    env.update(extra)
    return env


@dataclass
class MultiHost:
    """One Redis host and any number of worker hosts on a :class:`NetLab`."""

    lab: NetLab
    logs: Path
    redis: RedisServer | None = None
    workers: dict[str, tuple[Host, ManagedProcess]] = field(default_factory=dict)

    def start_redis(self) -> RedisServer:
        host = self.lab.add_host("redis")
        self.redis = start_redis(host=host.address, port=REDIS_PORT, command_prefix=host.prefix())
        return self.redis

    @property
    def url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    def start_worker(self, concurrency: int = 2, timeout: float = 60.0, env: dict[str, str] | None = None) -> str:
        """``distloop worker`` on a new host (``env``: extra variables); its worker name once it heartbeats."""
        return self.start_workers(1, concurrency, timeout, env)[0]

    def start_workers(
        self, count: int, concurrency: int = 2, timeout: float = 60.0, env: dict[str, str] | None = None
    ) -> list[str]:
        """``count`` new hosts, their workers started at once; their names once all heartbeat."""
        started = []
        for _ in range(count):
            host = self.lab.add_host(f"h{len(self.lab.namespaces)}")
            name = f"worker@{host.ns}"
            argv = distloop_argv(
                "worker", "--hostname", name, "--concurrency", str(concurrency), "--allow", "tests.workloads"
            )  # fmt: skip
            with open(self.logs / f"{host.ns}.log", "ab") as log:
                # The password travels in the environment, not on a command line others can read.
                process = self.lab.spawn(host, argv, log, env=clean_env(**{ENV_BROKER: self.url, **(env or {})}))
            self.workers[name] = (host, process)
            started.append((name, process))
        assert self.redis is not None
        client = self.redis.client()
        try:
            for name, process in started:
                process.wait_for(lambda name=name: name in live_workers(client), timeout, "heartbeating")
        finally:
            client.close()
        return [name for name, _ in started]

    def stop_workers(self) -> None:
        """Stop every worker (by pid; each deletes its heartbeat); their hosts stay, idle."""
        stop_all([process for _, process in self.workers.values()])
        self.workers.clear()

    def run(self, *args: str, timeout: float = 300, env: dict[str, str] | None = None) -> dict[str, Any]:
        """``distloop run ARGS --json`` from the root namespace (``env``: extra variables); its JSON report."""
        done = subprocess.run(
            distloop_argv("run", *args, "--json"), capture_output=True, text=True, timeout=timeout,
            cwd=ROOT, env=clean_env(**{ENV_BROKER: self.url, **(env or {})}),
        )  # fmt: skip
        assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
        report: dict[str, Any] = json.loads(done.stdout)
        report["_stderr"] = done.stderr
        return report

    def logs_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))

    def close(self) -> None:
        self.lab.close()  # stops the workers it spawned, by pid
        if self.redis is not None:
            self.redis.stop()
            self.redis = None


def scale_run(
    cluster: MultiHost, items: int = 400, chunk: int | str = 5, target: str = "tests.workloads:sleep_square"
) -> dict[str, Any]:
    """One timed job of sleeping items (50 ms each, blocking or awaited) on whatever hosts ``cluster`` has."""
    started = time.perf_counter()
    report = cluster.run(target, "--range", f"0:{items}", "--chunk-size", str(chunk))
    report["_outer_s"] = time.perf_counter() - started
    assert report["result"] == [i * i for i in range(items)]
    return report
