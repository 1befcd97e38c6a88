"""Parsing ``START:STOP[:STEP]`` and splitting a range into chunks."""

from __future__ import annotations

from collections.abc import Iterator

from tasks.errors import UsageError
from tasks.kernel import ChunkSpec


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


def split_range(r: range, chunk_size: int, first_index: int = 0) -> Iterator[ChunkSpec]:
    """Yield ``r`` as consecutive chunks of ``chunk_size`` items (the last may be shorter).

    Lazy: a range of 10**9 items costs nothing until its chunks are sent.
    """
    if chunk_size < 1:
        raise UsageError(f"chunk size must be at least 1, not {chunk_size}")
    for index, offset in enumerate(range(0, len(r), chunk_size), start=first_index):
        part = r[offset : offset + chunk_size]
        yield ChunkSpec(index=index, start=part.start, stop=part.stop, step=part.step)


def count_chunks(items: int, chunk_size: int) -> int:
    return -(-items // chunk_size)
