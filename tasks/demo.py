"""The workloads of the three articles distloop started from, as plain functions.

``pool.map(calc_stuff, ...)``, serial vs threads vs processes for ``crunch_numbers``,
``square`` and ``cube`` with ``Pool`` and ``ProcessPoolExecutor``. No distloop imports.
"""

from __future__ import annotations

import math


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
