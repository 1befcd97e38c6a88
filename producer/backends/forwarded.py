"""Showing what ``f`` printed or logged on the workers: ``[host:pid] line``, as it arrives.

Lines ``f`` wrote to stdout go to this process's stdout, the rest (stderr, logging,
distloop's markers) to its stderr, each stream looked up when written (so a progress
bar that redirects them, or ``distloop run --json``, which sends everything but its
JSON to stderr, keeps its place). Control characters are shown escaped (``\\x1b``): a
line from a worker cannot move the cursor or retitle the terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

#: C0 and C1 control characters but the tab, shown as ``\\xNN``.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F, *range(0x80, 0xA0))}


def show(lines: Iterable[tuple[str, str, str]]) -> None:
    """Print each ``(stream, who, text)`` as ``[who] text`` on stdout (``"out"``) or stderr."""
    streams = set()
    for stream, who, text in lines:
        target = sys.stdout if stream == "out" else sys.stderr
        target.write(f"[{who.translate(_ESCAPES)}] {text.translate(_ESCAPES)}\n")
        streams.add(target)
    for target in streams:
        target.flush()
