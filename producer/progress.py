"""Progress on stderr while a job runs."""

from __future__ import annotations

import sys
import time

from producer.assemble import Assembler


class PlainProgress:
    """Periodic plain lines: items done out of total, rate, failures."""

    def __init__(self, total_items: int, every: float = 2.0) -> None:
        self.total = total_items
        self.every = every
        self.started = time.monotonic()
        self.last = self.started

    def __call__(self, assembler: Assembler) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line(assembler)

    def _line(self, assembler: Assembler) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        pct = 100.0 * assembler.items / self.total if self.total else 100.0
        print(
            f"distloop: {assembler.items}/{self.total} items ({pct:.0f}%), {assembler.chunks} chunks,"
            f" {assembler.items / elapsed:.0f} items/s, {len(assembler.errors)} failed",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        pass


def progress_for(enabled: bool | None, total_items: int) -> PlainProgress | None:
    """A progress display, or None; by default only when stderr is a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    return PlainProgress(total_items) if enabled else None
