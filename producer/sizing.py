"""Automatic chunk size, from the function's measured cost per item."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tasks import defaults


def probe_cost(fn: Callable[..., Any], r: range) -> float:
    """Seconds per item of ``fn`` over the first items of ``r``, run in this process.

    Stops after :data:`defaults.PROBE_SECONDS` or :data:`defaults.PROBE_MAX_ITEMS`
    items. An item that raises ends the probe: the loop itself will report it.
    """
    spent = 0.0
    count = 0
    for i in r[: defaults.PROBE_MAX_ITEMS]:
        started = time.perf_counter()
        try:
            fn(i)
        except Exception:
            break
        spent += time.perf_counter() - started
        count += 1
        if spent >= defaults.PROBE_SECONDS:
            break
    return spent / count if count else 0.0


def auto_chunk_size(items: int, cost: float, workers: int) -> int:
    """Items per chunk: long enough to dwarf dispatch, short enough to balance load.

    A chunk should run about :data:`defaults.TARGET_CHUNK_SECONDS`, while the job
    keeps at least :data:`defaults.MIN_CHUNKS_PER_WORKER` chunks per worker process.
    """
    if items <= 0:
        return 1
    by_balance = max(1, items // (defaults.MIN_CHUNKS_PER_WORKER * max(1, workers)))
    by_time = int(defaults.TARGET_CHUNK_SECONDS / cost) if cost > 0 else by_balance
    return max(1, min(by_balance, by_time))
