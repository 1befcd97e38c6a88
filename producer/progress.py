"""Progress on stderr while a job runs: a rich bar on a terminal, plain lines otherwise.

Both take the :class:`~distloop.assemble.Assembler` after each chunk result
(items and chunks done, failures, and the job's total chunks once planned) and
must be closed, which draws the final state.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from distloop.assemble import Assembler
from distloop.tasks.core import defaults


class Display(Protocol):
    """What ``run_job`` calls after each result, and the command closes at the end."""

    def __call__(self, assembler: Assembler) -> None: ...

    def close(self) -> None: ...


def _chunks(assembler: Assembler) -> str:
    total = assembler.total_chunks
    return f"{assembler.chunks}/{total if total is not None else '?'} chunks"


class PlainProgress:
    """A line every ``every`` seconds, and the final state: items, chunks, rate, ETA, failures."""

    def __init__(self, total_items: int, every: float = defaults.PROGRESS_INTERVAL) -> None:
        self.total = total_items
        self.every = every
        self.started = 0.0
        self.last_line = 0.0
        self.last_call = 0.0
        self.assembler: Assembler | None = None
        self.printed: tuple[int, int] | None = None

    def __call__(self, assembler: Assembler) -> None:
        now = time.monotonic()
        first = self.assembler is None
        if first:  # the job is planned: rates count from here, not from start-up
            self.started = self.last_line = now
        self.assembler = assembler
        self.last_call = now
        if not first and now - self.last_line >= self.every:
            self.last_line = now
            self._line(assembler, now)

    def _line(self, assembler: Assembler, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = assembler.items / elapsed
        pct = 100.0 * assembler.items / self.total if self.total else 100.0
        left = self.total - assembler.items
        eta = f"ETA {left / rate:.0f} s" if rate > 0 and left > 0 else f"{elapsed:.1f} s"
        print(
            f"distloop: {assembler.items}/{self.total} items ({pct:.0f}%), {_chunks(assembler)},"
            f" {rate:,.0f} items/s, {eta}, {len(assembler.errors)} failed",
            file=sys.stderr,
            flush=True,
        )
        self.printed = (assembler.items, assembler.chunks)

    def close(self) -> None:
        """Print the final state (as of the last result) if earlier lines left off before it.

        A job shorter than one interval, or one that fails before its first line,
        prints nothing here: the command's own summary or error line says it all.
        """
        a = self.assembler
        if a is not None and self.printed is not None and self.printed != (a.items, a.chunks):
            self._line(a, self.last_call)


class RichProgress:
    """A live bar (rich) on the terminal: items and chunks done, rate, elapsed, ETA, failures."""

    def __init__(self, total_items: int) -> None:
        self.progress = Progress(
            TextColumn("[bold]distloop"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} items"),
            TextColumn("{task.fields[chunks]}"),
            RateColumn(),
            TimeElapsedColumn(),
            EtaColumn(),
            TextColumn("{task.fields[failed]}"),
            console=Console(stderr=True),
            refresh_per_second=4,
            # Results printed on stdout stay on stdout; but what the workers forward
            # (distloop.backends.forwarded) while the bar is drawn on this terminal goes above it.
            redirect_stdout=sys.stdout.isatty(),
        )
        # The clock starts with the job (first call), not while workers start up.
        self.task = self.progress.add_task(
            "run", total=total_items, start=False, chunks="0/? chunks", failed="0 failed"
        )
        self.progress.start()
        self.started = False

    def __call__(self, assembler: Assembler) -> None:
        first = not self.started
        if first:
            self.progress.start_task(self.task)
            self.started = True
        failed = len(assembler.errors)
        self.progress.update(
            self.task,
            completed=assembler.items,
            chunks=_chunks(assembler),
            failed=f"[red]{failed} failed[/red]" if failed else "0 failed",
        )
        if first:  # draw the job's totals now: the first results may come before the next refresh
            self.progress.refresh()

    def close(self) -> None:
        self.progress.stop()


def _rate(task: Task) -> float | None:
    """Items per second since the job started (steadier than rich's burst-sensitive speed)."""
    elapsed = task.finished_time if task.finished else task.elapsed
    if not elapsed or elapsed < 0.5 or not task.completed:
        return None
    return task.completed / elapsed


class RateColumn(ProgressColumn):
    """Items per second since the job started."""

    def render(self, task: Task) -> Text:
        rate = _rate(task)
        return Text(f"{rate:,.0f} items/s" if rate else "- items/s")


class EtaColumn(ProgressColumn):
    """Time left at the rate so far, or "done"."""

    def render(self, task: Task) -> Text:
        if task.finished:
            return Text("done")
        rate = _rate(task)
        if not rate or task.total is None:
            return Text("ETA -:--:--")
        left = (task.total - task.completed) / rate
        if left >= 86400:  # a day or more (a range of 10**20 items: millions of years)
            return Text(f"ETA {left / 86400:,.0f} days")
        return Text(f"ETA {time.strftime('%H:%M:%S', time.gmtime(left))}")


def progress_for(
    enabled: bool | None, total_items: int, *, every: float = defaults.PROGRESS_INTERVAL
) -> Display | None:
    """The progress display for a job: None when ``enabled`` is False.

    By default (None, or True) a rich bar when stderr is a terminal, otherwise a
    plain line every ``every`` seconds and the final state (a job shorter than
    ``every`` prints none: its summary line is enough).
    """
    if enabled is False:
        return None
    if sys.stderr.isatty():
        return RichProgress(total_items)
    return PlainProgress(total_items, every)
