"""Workers announce themselves in Redis: who serves, with how many processes, still alive.

Each worker's main process refreshes ``distloop:worker:<hostname>`` every
:data:`INTERVAL` seconds with a time-to-live of :data:`TTL`. The producer reads
these keys to count worker processes instantly (no broadcast round trip) and to
notice a worker that died without a word (its key expires). The key also says
whether the worker sends task events now: producers send task-sent events only
when one does, that is when a monitor such as Flower has switched them on.

It also lists the task ids the worker holds at that moment (``held``: taken from the
queue, waiting for or running in a pool process), so that a producer can tell a chunk
the ledger says is running from one its worker has let go of: a chunk whose result
could not be written while Redis restarted, for one (see
:mod:`distloop.backends.recovery`). ``at`` is read before ``held``: a chunk started
before ``at`` and not in ``held`` is no longer held.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

import redis

PREFIX = "distloop:worker:"
INTERVAL = 1.0
TTL = 4
#: At most this many held task ids in a heartbeat (a worker holds about one per process).
HELD_LIMIT = 4096


def announce(
    client: redis.Redis,
    hostname: str,
    concurrency: int,
    events: bool = False,
    pool: str = "prefork",
    held: Callable[[], Collection[str]] | None = None,
) -> None:
    """Write ``hostname``'s heartbeat; ``held`` (called after the time is read) lists the task ids it holds."""
    info: dict[str, Any] = {
        "host": hostname, "concurrency": concurrency, "pid": os.getpid(), "at": time.time(), "events": events,
        "pool": pool,
    }  # fmt: skip
    if held is not None:
        ids = list(held())
        if len(ids) <= HELD_LIMIT:  # too many to list: producers fall back on the ledger alone
            info["held"] = ids
    client.set(PREFIX + hostname, json.dumps(info), ex=TTL)


def held_by(info: dict[str, Any]) -> set[str] | None:
    """The task ids a worker's heartbeat says it holds; None if it does not say (an older worker)."""
    held = info.get("held")
    return set(held) if isinstance(held, list) else None


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
        held: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self.client = client
        self.hostname = hostname
        self.concurrency = concurrency
        self.events = events  # does the worker send task events right now?
        self.pool = pool  # its pool kind: producers count only the workers of their jobs' kind
        self.held = held  # the task ids the worker holds right now
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="distloop-heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        announce(self.client, self.hostname, self.concurrency, self.events(), self.pool, self.held)

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
