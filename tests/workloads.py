"""Test-only loop functions (allowed on test workers through DISTLOOP_ALLOW)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
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


# --- for the Executor, Pool and joblib facades (tests/test_facades.py) ---


def echo(value: object) -> object:
    return value


def add(a: int, b: int) -> int:
    return a + b


def scaled(x: int, *, factor: int = 1) -> int:
    return x * factor


def where(i: int) -> list[int]:
    """``[i, pid, parent pid]`` of the process that ran the call: proof of where it ran."""
    return [i, os.getpid(), os.getppid()]


def wait_for_file(path: str, i: int = 0, limit: float = 120.0) -> int:
    """Block until ``path`` exists (a test releases it), noting in ``path.ran`` that item ``i`` ran."""
    with open(f"{path}.ran", "a") as log:
        log.write(f"{i}\n")
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return i


def sleep_square(i: int) -> int:
    """A stand-in for I/O-bound or remote work: waits 50 ms, needs no CPU, returns i*i."""
    time.sleep(0.05)
    return i * i


#: A host's slowdown factor for :func:`sleep_square_host` (set on one test host's worker).
ENV_SLOWDOWN = "DISTLOOP_TEST_SLOWDOWN"


def sleep_square_host(i: int) -> int:
    """:func:`sleep_square` on a host that may be slower: its ``DISTLOOP_TEST_SLOWDOWN`` stretches the 50 ms."""
    time.sleep(0.05 * float(os.environ.get(ENV_SLOWDOWN, "1")))
    return i * i


def cpu_square(i: int) -> int:
    """CPU-bound work: one ``calc_stuff`` step (about 2-3 ms of CPU), returns i*i."""
    from distloop.tasks.demo import calc_stuff

    calc_stuff(i)
    return i * i


def sleep_s(i: int, seconds: float = 0.25) -> int:
    time.sleep(seconds)
    return i


def stuck_at_3(i: int) -> int:
    """Item 3 never finishes on its own: --timeout must turn it into a failure."""
    if i == 3:
        time.sleep(3600)
    return i


def deaf_at_3(i: int) -> int:
    """Item 3 ignores the soft time limit (like C code would): only the hard limit stops it."""
    if i == 3:
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            try:
                time.sleep(3600)
            except Exception:  # swallowing SoftTimeLimitExceeded is the point
                continue
    return i


def crash_once_at_13(i: int) -> int:
    """The process running item 13 SIGKILLs itself, the first time only (marker file)."""
    marker = os.path.join(os.environ["DISTLOOP_TEST_DIR"], "crashed-13")
    if i == 13 and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return i


def crash_at_5(i: int) -> int:
    """Item 5 kills its process every time: redelivery must stop after a few attempts."""
    if i == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return i


def unpicklable_result(i: int) -> object:
    return object()


def fail_late_at_1_fast_at_5(i: int) -> int:
    """Item 1 fails after a second, item 5 at once: a serial loop would meet item 1's error first."""
    if i == 1:
        time.sleep(1.0)
        raise ValueError("slow failure at 1")
    if i == 5:
        raise ValueError("fast failure at 5")
    return i


# --- initializers (tests/test_facade_constructors.py) ---

_initialized: str | None = None


def remember(tag: str, path: str) -> None:
    """An initializer: sets ``tag`` in this process and notes ``pid tag`` in ``path``."""
    global _initialized
    _initialized = tag
    with open(path, "a") as log:
        log.write(f"{os.getpid()} {tag}\n")


def tagged(i: int) -> list[object]:
    """``[i, pid, the tag the initializer set]``."""
    return [i, os.getpid(), _initialized]


def failing_initializer() -> None:
    raise RuntimeError("no database here")


def log_and_fail_at_3(path: str, i: int) -> int:
    """Notes ``i`` in ``path`` (each run of the call), and fails at 3."""
    with open(path, "a") as log:
        log.write(f"{i}\n")
    if i == 3:
        raise ValueError("bad item 3")
    return i


# --- values (tests/test_values.py, tests/test_bad_input.py) ---


def nested(depth: int) -> list[object]:
    """A list ``depth`` lists deep (``[[[...]]]``): 500 is what used to raise RecursionError."""
    value: list[object] = []
    inner = value
    for _ in range(depth - 1):
        inner.append([])
        inner = inner[0]  # type: ignore[assignment]
    return value


def too_deep(i: int) -> list[object]:
    return nested(500)


def big_int(i: int) -> int:
    """An int of 5,001 digits: more than Python writes in decimal by default (4,300)."""
    return 10**5000 + i


def million_floats(seed: int) -> object:
    """A 10**6-element float64 array (8 MB): what ``make perf`` times through the celery backend."""
    import numpy as np

    return np.random.default_rng(seed).random(10**6)


# --- async def targets (tests/test_io.py) ---

_in_flight = 0


async def async_square(i: int) -> int:
    """Waits 10 ms on the event loop, then returns i*i; later items finish first (results still in order)."""
    await asyncio.sleep(0.01 if i % 2 else 0.02)
    return i * i


async def async_fail_at_7(i: int) -> int:
    await asyncio.sleep(0.01)
    if i == 7:
        raise ValueError(f"bad item {i}")
    return i


async def async_in_flight(i: int) -> int:
    """How many items of this process were awaiting at once when this one started (the bound)."""
    global _in_flight
    _in_flight += 1
    seen = _in_flight
    try:
        await asyncio.sleep(0.05)
    finally:
        _in_flight -= 1
    return seen


async def async_stuck_at_3(i: int) -> int:
    """Item 3 awaits forever; when the chunk's --timeout cancels it, it leaves ``cancelled-3`` behind."""
    if i == 3:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            open(os.path.join(os.environ["DISTLOOP_TEST_DIR"], "cancelled-3"), "w").close()
            raise
    await asyncio.sleep(0.01)
    return i


async def async_sleep_square(i: int) -> int:
    """``sleep_square`` awaited: 50 ms on the event loop, no CPU, returns i*i (the multi-host async row)."""
    await asyncio.sleep(0.05)
    return i * i


async def async_wait_then_mark(i: int, seconds: float = 4.0) -> int:
    """Note that item ``i`` started (``started-i``), await ``seconds``, then note that it finished (``done-i``)."""
    folder = os.environ["DISTLOOP_TEST_DIR"]
    open(os.path.join(folder, f"started-{i}"), "w").close()
    await asyncio.sleep(seconds)
    open(os.path.join(folder, f"done-{i}"), "w").close()
    return i


async def async_in_flight_slow(i: int) -> int:
    """``async_in_flight`` over 0.25 s: a job long enough to be interrupted, reporting its bound."""
    global _in_flight
    _in_flight += 1
    seen = _in_flight
    try:
        await asyncio.sleep(0.25)
    finally:
        _in_flight -= 1
    return seen


def gated(i: int) -> int:
    """``i``; items from the number in ``$DISTLOOP_TEST_DIR/gate-at`` on wait until ``$DISTLOOP_TEST_DIR/gate`` exists.

    A job of these holds still mid-job (some chunks done, some running, the rest queued)
    for as long as a test needs to look at it.
    """
    folder = os.environ["DISTLOOP_TEST_DIR"]
    with open(os.path.join(folder, "gate-at")) as stream:
        at = int(stream.read())
    while i >= at and not os.path.exists(os.path.join(folder, "gate")):
        time.sleep(0.02)
    return i


# --- blocking items fanned out on a threads pool (tests/test_io.py) ---

_blocking_lock = threading.Lock()
_blocking_in_flight = 0


def blocking_in_flight(i: int) -> list[int]:
    """[i, how many items of this process were sleeping at once when this one started]; odd items wait less."""
    global _blocking_in_flight
    with _blocking_lock:
        _blocking_in_flight += 1
        seen = _blocking_in_flight
    try:
        time.sleep(0.05 if i % 2 else 0.1)  # later items of a chunk finish first: results still in order
    finally:
        with _blocking_lock:
            _blocking_in_flight -= 1
    return [i, seen]


def blocking_fail_at_7(i: int) -> int:
    time.sleep(0.01)
    if i == 7:
        raise ValueError(f"bad item {i}")
    return i
