"""Workers announce themselves in Redis: who serves, with how many processes, still alive.

Each worker's main process refreshes ``distloop:worker:<hostname>`` every
:data:`INTERVAL` seconds with a time-to-live of :data:`TTL`. The producer reads
these keys to count worker processes instantly (no broadcast round trip) and to
notice a worker that died without a word (its key expires). The key also says
whether the worker sends task events now: producers send task-sent events only
when one does, that is when a monitor such as Flower has switched them on.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

PREFIX = "distloop:worker:"
INTERVAL = 1.0
TTL = 4


def announce(client: redis.Redis, hostname: str, concurrency: int, events: bool = False, pool: str = "prefork") -> None:
    info = {
        "host": hostname, "concurrency": concurrency, "pid": os.getpid(), "at": time.time(), "events": events,
        "pool": pool,
    }  # fmt: skip
    client.set(PREFIX + hostname, json.dumps(info), ex=TTL)


def live_workers(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Hostname -> {"host", "concurrency", "pid", "at", "events", "pool"} for every worker alive now."""
    keys = list(client.scan_iter(match=PREFIX + "*", count=1000))
    if not keys:
        return {}
    values = client.mget(keys)
    return {
        (k.decode() if isinstance(k, bytes) else k)[len(PREFIX) :]: json.loads(v)
        for k, v in zip(keys, values, strict=True)
        if v is not None
    }


class Heartbeat:
    """A daemon thread in the worker's main process that keeps its key alive."""

    def __init__(
        self,
        client: redis.Redis,
        hostname: str,
        concurrency: int,
        events: Callable[[], bool] = lambda: False,
        pool: str = "prefork",
    ) -> None:
        self.client = client
        self.hostname = hostname
        self.concurrency = concurrency
        self.events = events  # does the worker send task events right now?
        self.pool = pool  # its pool kind: producers count only the workers of their jobs' kind
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="distloop-heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        announce(self.client, self.hostname, self.concurrency, self.events(), self.pool)

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            try:
                self.beat()
            except redis.RedisError:
                pass  # Redis away for a moment: the key expires, producers see us as gone

    def stop(self) -> None:
        self._stop.set()
        try:
            self.client.delete(PREFIX + self.hostname)
        except redis.RedisError:
            pass


def events_watched(workers: dict[str, dict[str, Any]]) -> bool:
    """Whether any of ``workers`` (from :func:`live_workers`) sends task events."""
    return any(bool(w.get("events")) for w in workers.values())
