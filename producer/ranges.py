"""Parsing ``START:STOP[:STEP]`` exactly as Python's ``range`` reads it."""

from __future__ import annotations

from distloop.tasks.core.errors import UsageError


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
