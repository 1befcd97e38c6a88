"""When to stop waiting: Redis unreachable, or no worker alive, for too long.

A job on the celery backend rides out a short Redis outage or a worker restart,
but never waits forever: after :data:`defaults.BROKER_OUTAGE_SECONDS` of either it
fails with :class:`BrokerUnavailable` (exit code 3).
"""

from __future__ import annotations

import time

from distloop.tasks.core import defaults
from distloop.tasks.core.errors import BrokerUnavailable


class Watchdog:
    """Tracks how long Redis has been unreachable and how long no worker has been alive."""

    def __init__(self, limit: float | None = None) -> None:
        self.limit = defaults.BROKER_OUTAGE_SECONDS if limit is None else limit
        self._outage_since: float | None = None
        self._no_worker_since: float | None = None

    def reached(self) -> None:
        """Redis answered: an outage, if any, is over."""
        self._outage_since = None

    def unreachable(self, message: str) -> None:
        """Redis did not answer: go on waiting for it, up to :attr:`limit`, then raise."""
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
        if now - self._outage_since > self.limit:
            raise BrokerUnavailable(f"{message} (unreachable for {self.limit:.0f} s)")

    def workers_alive(self, alive: bool) -> None:
        """With no worker heartbeat for :attr:`limit` seconds, raise instead of waiting forever."""
        if alive:
            self._no_worker_since = None
            return
        now = time.monotonic()
        if self._no_worker_since is None:
            self._no_worker_since = now
        if now - self._no_worker_since > self.limit:
            raise BrokerUnavailable(
                f"no distloop worker has been alive for {self.limit:.0f} s; "
                "the job stays in Redis: start workers and run `distloop resume`"
            )
