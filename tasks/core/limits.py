"""Caps on the counts a user may ask for, checked before anything is started.

A process count is never used unchecked: ``--workers``, ``--concurrency``, a
facade's ``max_workers`` or ``processes`` each meet :func:`check_workers` before
the first fork. Each refusal is a :class:`~distloop.tasks.core.errors.UsageError`:
one line naming the option, the value and the limit.
"""

from __future__ import annotations

import os

from distloop.tasks.core import defaults
from distloop.tasks.core.errors import UsageError


def worker_cap() -> int:
    """The most worker processes (or threads) this machine may run for one job or worker."""
    return min(defaults.MAX_WORKERS, defaults.WORKERS_PER_CPU * (os.cpu_count() or 1))


def pool_cap(pool: str) -> int:
    """The most a worker of this pool kind may run: processes for prefork, threads otherwise."""
    return worker_cap() if pool == "prefork" else defaults.MAX_POOL_CONCURRENCY


def check_workers(count: int | None, option: str = "--workers", cap: int | None = None) -> None:
    """Refuse a worker count below 1 or above ``cap`` (default: :func:`worker_cap`)."""
    if count is None:
        return
    check_positive(count, option)
    limit = worker_cap() if cap is None else cap
    given = f"{option}{count}" if option.endswith("=") else f"{option} {count}"  # "processes=64", "--workers 64"
    if count > limit and limit == worker_cap() < defaults.MAX_WORKERS:
        raise UsageError(
            f"{given} is above this machine's cap of {limit}"
            f" ({defaults.WORKERS_PER_CPU} per CPU, at most {defaults.MAX_WORKERS})"
        )
    if count > limit:
        raise UsageError(f"{given} is above the cap of {limit}")


def check_positive(value: int, option: str, most: int | None = None) -> None:
    """Refuse an integer option below 1 or above ``most``."""
    if value < 1:
        raise UsageError(f"{option} must be at least 1, not {value}")
    if most is not None and value > most:
        raise UsageError(f"{option} must be at most {most}, not {value}")
