"""Coroutine targets: the items of a chunk run concurrently on this thread's event loop.

``async def f(i)`` is run by :func:`run_async_chunk` (the kernel's ``run_chunk`` hands it
every chunk of a coroutine function): at most ``concurrency`` items of the chunk are
awaited at once, by that many runner coroutines taking items in loop order, and the
chunk's result is built in loop order exactly as the item-by-item path builds it, so
reduce, ``on_error`` and the assembler see no difference from a plain function.

One event loop per thread, kept for the life of the process (a prefork child, a pool
thread): measured on the 2-core machine, ``asyncio.run`` per chunk of 16 trivial items
costs about 200 us against 75 us on a kept loop (a new loop, its selector and its
shutdown each time).

Stopping:

- ``on_error="raise"``: the first failing item (in loop order) is reported, as today;
  items after it that are still running are cancelled, and none after it is started.
- ``--timeout``: Celery's soft limit raises :class:`SoftTimeLimitExceeded` in the
  worker's main thread, which runs this loop. Whether it comes out of the loop (the loop
  was waiting in ``select``, nearly always for waiting items) or out of one item's
  coroutine, every pending item is cancelled: items that were running are reported as
  timed out, items not started as not run. (Were it raised inside one of asyncio's own
  callbacks, asyncio would log and drop it; the hard limit then stops the chunk.)
- A revoked chunk (``distloop`` cancelling a job) has its pool process terminated, and
  the coroutines go with it.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded

from distloop.tasks.core import codec, defaults
from distloop.tasks.kernel import REDUCERS, ChunkResult, ChunkSpec, combine, item_error, set_partial, timeout_error

_local = threading.local()

# An item's outcome: (kind, value). kind is "ok", "error", "timeout" or "not run".
Outcome = tuple[str, Any]


def event_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop, made on first use and kept (one per process and pool thread)."""
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
    return loop


class _Items:
    """The chunk's items, handed to the runners in loop order, and what became of each."""

    def __init__(self, chunk: ChunkSpec, on_error: str) -> None:
        self.pending = enumerate(chunk.items())
        self.outcomes: list[Outcome | None] = [None] * len(chunk)
        self.running: dict[int, asyncio.Future[Any]] = {}
        self.raise_first = on_error == "raise"
        self.stop_after: int | None = None  # no item after this position is started
        self.timed_out = False

    def failed(self, pos: int) -> None:
        """Item ``pos`` failed: with ``on_error="raise"`` nothing after it is needed."""
        if self.raise_first and (self.stop_after is None or pos < self.stop_after):
            self.stop_after = pos
            for other, future in self.running.items():
                if other > pos:
                    future.cancel()

    def next(self) -> tuple[int, tuple[Any, ...], dict[str, Any]] | None:
        if self.timed_out:
            return None
        for pos, (_, args, kwargs) in self.pending:
            if self.stop_after is not None and pos > self.stop_after:
                return None
            return pos, args, kwargs
        return None


async def _runner(fn: Callable[..., Awaitable[Any]], items: _Items) -> None:
    """Await items one after another until none is left (``concurrency`` of these run at once)."""
    while (picked := items.next()) is not None:
        pos, args, kwargs = picked
        future = asyncio.ensure_future(fn(*args, **kwargs))
        items.running[pos] = future
        try:
            items.outcomes[pos] = ("ok", await future)
        except SoftTimeLimitExceeded:
            items.outcomes[pos] = ("timeout", None)
            items.timed_out = True
            raise  # the chunk's gather stops; run_async_chunk cancels the rest
        except asyncio.CancelledError:
            if items.timed_out:  # the chunk's time is up: this item was still running
                items.outcomes[pos] = ("timeout", None)
                raise
            items.outcomes[pos] = ("not run", None)  # cancelled: an earlier item failed
        except Exception as exc:
            items.outcomes[pos] = ("error", exc)
            items.failed(pos)
        finally:
            items.running.pop(pos, None)


async def _run_all(fn: Callable[..., Awaitable[Any]], items: _Items, concurrency: int, total: int) -> None:
    runners = [asyncio.ensure_future(_runner(fn, items)) for _ in range(min(concurrency, total))]
    try:
        await asyncio.gather(*runners)
    finally:
        # A timeout (from an item, or from the loop itself): stop every item still pending.
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)


def _drain(loop: asyncio.AbstractEventLoop, main: asyncio.Future[None]) -> None:
    """After a timeout came out of the loop itself: cancel the chunk's coroutines and let them finish."""
    main.cancel()
    try:
        loop.run_until_complete(asyncio.gather(main, return_exceptions=True))
    except SoftTimeLimitExceeded:  # pragma: no cover - a second signal while draining
        pass


def run_async_chunk(
    fn: Callable[..., Awaitable[Any]],
    chunk: ChunkSpec,
    reduce: str | None = None,
    on_error: str = "raise",
    concurrency: int = 100,
) -> ChunkResult:
    """Run the coroutine function ``fn`` over ``chunk``'s items, ``concurrency`` at a time."""
    items = _Items(chunk, on_error)
    loop = event_loop()
    main = loop.create_task(_run_all(fn, items, max(1, concurrency), len(chunk)))
    try:
        loop.run_until_complete(main)
    except SoftTimeLimitExceeded:
        items.timed_out = True
        _drain(loop, main)
    return _assemble(chunk, items, reduce, on_error)


#: Threads that run the items of threads-pool chunks (``fan_out``), shared by the process's
#: chunks and started on demand: each chunk bounds its own items at once.
_threads: ThreadPoolExecutor | None = None
_threads_lock = threading.Lock()


def _item_threads() -> ThreadPoolExecutor:
    global _threads
    with _threads_lock:
        if _threads is None:
            _threads = ThreadPoolExecutor(defaults.MAX_POOL_CONCURRENCY, thread_name_prefix="distloop-item")
        return _threads


def run_threaded_chunk(
    fn: Callable[..., Any], chunk: ChunkSpec, reduce: str | None = None, on_error: str = "raise", threads: int = 8
) -> ChunkResult:
    """Run the blocking function ``fn`` over ``chunk``'s items, ``threads`` at a time on item threads.

    Each item is awaited on this thread's event loop as a call on a thread of
    :func:`_item_threads`, so ordering, ``on_error`` and reduce follow
    :func:`run_async_chunk` exactly. (A thread cannot be stopped: a cancelled item's
    call runs to its end, as on any threads pool.)
    """
    pool = _item_threads()

    async def call(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args, **kwargs))

    return run_async_chunk(call, chunk, reduce, on_error, threads)


def _assemble(chunk: ChunkSpec, items: _Items, reduce: str | None, on_error: str) -> ChunkResult:
    """The chunk's result in loop order, as the kernel's item-by-item path builds it."""
    result = ChunkResult(index=chunk.index, values=None if reduce else [])
    to_partial = REDUCERS[reduce][1] if reduce else None
    acc: Any = None
    for pos, (index, _, _) in enumerate(chunk.items()):
        kind, value = items.outcomes[pos] or ("not run", None)
        error: dict[str, Any] | None = None
        if kind == "ok":
            try:
                if to_partial is not None:
                    acc = combine(reduce, acc, to_partial(value))  # type: ignore[arg-type]
                else:
                    result.values.append(codec.encode(value))  # type: ignore[union-attr]
            except codec.NotJSONable as exc:
                error = item_error(index, exc, with_traceback=False) | {"type": "NotJSONable"}
            except Exception as exc:  # the reduce op refused the value (None in a sum...)
                error = item_error(index, exc)
        elif kind == "error" and isinstance(value, BaseException):
            error = item_error(index, value)
        elif kind == "timeout":
            error = timeout_error(index)
        else:
            error = timeout_error(index, "not run: the chunk's --timeout expired before it")
        if error is not None:
            result.errors.append(error)
            if on_error == "raise":
                break
            if result.values is not None:
                result.values.append(None)
        result.items += 1
    if reduce:
        set_partial(result, acc)
    return result
