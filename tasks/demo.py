"""The workloads of the three articles distloop started from, as plain functions.

``pool.map(calc_stuff, ...)``, serial vs threads vs processes for ``crunch_numbers``,
``square`` and ``cube`` with ``Pool`` and ``ProcessPoolExecutor``, and the I/O-bound
``fetch_data`` (``await asyncio.sleep(...)  # Simulating network delay``) in an ``async``
and a blocking version. No distloop imports.
"""

from __future__ import annotations

import asyncio
import math
import time

#: The demos' "network delay", seconds: the beginner's guide sleeps a second; 20 ms
#: keeps a 400-item loop short while still waiting 200 times longer than it computes.
NETWORK_DELAY = 0.02


def calc_stuff(parameter: int) -> tuple[int, float, int]:
    """A CPU-bound step returning three values, about 2-3 ms each.

    As in ``out1, out2, out3 = zip(*pool.map(calc_stuff, range(0, 10 * offset, offset)))``.
    """
    acc = 0.0
    hits = 0
    for k in range(1, 8000):
        x = (parameter * 7919 + k * 104729) % 1_000_003
        acc += math.sqrt(x) / k
        hits += x & 1
    return parameter * parameter, round(acc, 9), hits


def crunch_numbers(i: int, n: int = 200_000) -> int:
    """The threads-vs-processes article's busy loop, sized to tens of milliseconds."""
    total = 0
    for k in range(n):
        total += (k ^ i) & 7
    return total


def square(x: int) -> int:
    """``Pool(4).map(square, ...)`` from the beginner's guide."""
    return x * x


def cube(x: int) -> int:
    """``ProcessPoolExecutor().map(cube, ...)`` from the beginner's guide."""
    return x * x * x


def skewed(i: int) -> int:
    """Cost grows in proportion to ``i``: uneven items that defeat naive equal chunks."""
    total = 0
    for k in range(20 * i):
        total += k % 7
    return total


async def fetch_data(i: int) -> str:
    """The guide's ``asyncio`` example: wait for a (simulated) network reply, return its data."""
    await asyncio.sleep(NETWORK_DELAY)  # Simulating network delay
    return f"Data from https://example.com/{i}"


def fetch_data_blocking(i: int) -> str:
    """The same request with a blocking wait, as a ``requests.get`` would: for threads."""
    time.sleep(NETWORK_DELAY)  # Simulating network delay
    return f"Data from https://example.com/{i}"
