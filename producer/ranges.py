"""Parsing ``START:STOP[:STEP]`` exactly as Python's ``range`` reads it, and ranges of any size.

``len(range)`` raises ``OverflowError`` past ``sys.maxsize`` items (2**63 - 1 on 64-bit
machines), although a range of 10**20 items is a fine ``range`` otherwise: it slices and
indexes with Python ints. Every length distloop takes of a range goes through
:func:`range_length` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distloop.tasks.core.errors import UsageError

#: A range whose bounds leave this (JSON's and the codec's plain ints) stays a list of items.
_PLAIN_INTS = range(-(2**63), 2**63)


def range_length(r: range) -> int:
    """``len(r)`` as a Python int of any size (``len`` stops at ``sys.maxsize``)."""
    if r.step > 0:
        return max(0, (r.stop - r.start + r.step - 1) // r.step)
    return max(0, (r.start - r.stop - r.step - 1) // -r.step)


def parse_range(text: str) -> range:
    """Parse ``START:STOP[:STEP]`` (or a bare ``STOP``) exactly like Python's ``range``."""
    parts = text.split(":")
    if not 1 <= len(parts) <= 3:
        raise UsageError(f"--range {text!r}: expected START:STOP[:STEP]")
    try:
        numbers = [int(p.strip()) for p in parts]
    except ValueError:
        raise UsageError(f"--range {text!r}: bounds and step must be integers") from None
    if len(numbers) == 3 and numbers[2] == 0:
        raise UsageError(f"--range {text!r}: step must not be zero")
    return range(*numbers)


def as_range(values: Sequence[Any]) -> range | None:
    """The ``range`` that ``values`` is, item for item and type for type, else None.

    A ``range``, or a list of two or more exact ``int`` one step apart (``list(range(...))``,
    the arguments of ``delayed(f)(i) for i in range(n)``): a ``map`` over them can send each
    chunk's bounds, as ``distloop run`` does, instead of every item. Three checks in
    constant time turn most other lists down; a list that passes them costs two passes in C.
    """
    if isinstance(values, range):
        return values
    if not isinstance(values, list) or len(values) < 2:
        return None
    first, second, last = values[0], values[1], values[-1]
    if type(first) is not int or type(second) is not int or type(last) is not int:
        return None
    step = second - first
    if step == 0 or last != first + step * (len(values) - 1) or first not in _PLAIN_INTS or last not in _PLAIN_INTS:
        return None
    span = range(first, last + step, step)
    # Equal values are not enough: True == 1 and 1.0 == 1, so the types are compared too.
    if values != list(span) or set(map(type, values)) != {int}:
        return None
    return span
