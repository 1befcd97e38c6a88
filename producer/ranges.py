"""Parsing ``START:STOP[:STEP]`` exactly as Python's ``range`` reads it, and ranges of any size.

``len(range)`` raises ``OverflowError`` past ``sys.maxsize`` items (2**63 - 1 on 64-bit
machines), although a range of 10**20 items is a fine ``range`` otherwise: it slices and
indexes with Python ints. Every length distloop takes of a range goes through
:func:`range_length` instead.
"""

from __future__ import annotations

from distloop.tasks.core.errors import UsageError


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
