"""Test-only loop functions (allowed on test workers through DISTLOOP_ALLOW)."""

from __future__ import annotations

import os
import time


def fail_at_7(i: int) -> int:
    if i == 7:
        raise ValueError(f"bad item {i}")
    return i


def as_set(i: int) -> set[int]:
    return {i}


def pid(i: int) -> int:
    return os.getpid()


def slow(i: int) -> int:
    time.sleep(0.05)
    return i


def sleep_ms(i: int, ms: int = 20) -> int:
    time.sleep(ms / 1000)
    return i


def sleep_square(i: int) -> int:
    """A stand-in for I/O-bound or remote work: waits 50 ms, needs no CPU, returns i*i."""
    time.sleep(0.05)
    return i * i
