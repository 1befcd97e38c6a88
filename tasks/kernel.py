"""The chunk kernel: the one piece of code every backend runs.

A chunk is a range descriptor (``start, stop, step``) or, for the Executor and
Pool facades, a list of explicit calls. The kernel runs ``f`` on each item,
encodes results for JSON, applies the reduce op, and records item failures as
data, so that a failed item never loses the rest of its chunk's work.
"""

from __future__ import annotations

import inspect
import operator
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice, repeat, starmap
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded

from distloop.tasks.core import codec, defaults
from distloop.tasks.core.errors import TargetError, TargetNotAllowed
from distloop.tasks.initializer import initialize
from distloop.tasks.targets import location_of, resolve

# reduce op -> (combine two partial values, value of one item's result)
REDUCERS: dict[str, tuple[Callable[[Any, Any], Any], Callable[[Any], Any]]] = {
    "sum": (lambda a, b: a + b, lambda v: v),
    "min": (min, lambda v: v),
    "max": (max, lambda v: v),
    # count: how many items gave a truthy result (so `--reduce count` counts hits).
    "count": (lambda a, b: a + b, lambda v: 1 if v else 0),
}

ON_ERROR = defaults.ON_ERROR


def combine(op: str, acc: Any, value: Any) -> Any:
    """Fold a partial ``value`` into ``acc`` (``None`` is the empty partial)."""
    if value is None:
        return acc
    if acc is None:
        return value
    return REDUCERS[op][0](acc, value)


@dataclass(frozen=True)
class ChunkSpec:
    """One chunk: its index in the job, and the items it covers."""

    index: int
    start: int = 0
    stop: int = 0
    step: int = 1
    # Explicit calls [[args, kwargs], ...] (encoded) instead of a range.
    calls: list[Any] | None = None
    # Or calls f(x) of one argument each, [x, ...] (encoded): map's calls, compact on the wire.
    each: list[Any] | None = None
    # The initializer of the Pool/Executor that sent the chunk (distloop.tasks.initializer).
    init: dict[str, Any] | None = None
    # Raw buffers of large array arguments, name -> bytes-like, that travel beside the message
    # (distloop.tasks.core.blobs): only the names go on the wire.
    blobs: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    # A long ``each`` or ``calls`` list sent as one JSON blob beside the message, in their place:
    # ``{"field": "each" | "calls", "name": blob name, "items": its length}`` (the worker that runs
    # the chunk puts the list back before anything reads it; see distloop.backends.arguments).
    packed: dict[str, Any] | None = None

    @property
    def is_range(self) -> bool:
        return self.calls is None and self.each is None and self.packed is None

    def __len__(self) -> int:
        if self.packed is not None:
            return int(self.packed["items"])
        if self.calls is not None:
            return len(self.calls)
        if self.each is not None:
            return len(self.each)
        return len(range(self.start, self.stop, self.step))

    def items(self) -> Iterator[tuple[Any, tuple[Any, ...], dict[str, Any]]]:
        """Yield ``(loop index, args, kwargs)`` for each item."""
        if self.each is not None:
            for n, x in enumerate(self.each):
                yield n, (codec.decode(x),), {}
        elif self.calls is not None:
            for n, (args, kwargs) in enumerate(self.calls):
                yield n, tuple(codec.decode(args)), codec.decode(kwargs)
        else:
            for i in range(self.start, self.stop, self.step):
                yield i, (i,), {}

    def to_wire(self) -> dict[str, Any]:
        data: dict[str, Any] = {"index": self.index}
        if self.packed is not None:
            data["packed"] = self.packed
        elif self.each is not None:
            data["each"] = self.each
        elif self.calls is not None:
            data["calls"] = self.calls
        else:
            data.update(start=self.start, stop=self.stop, step=self.step)
        if self.init is not None:
            data["init"] = self.init
        if self.blobs:
            data["blobs"] = list(self.blobs)
        return data

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ChunkSpec:
        return cls(
            index=int(data["index"]),
            start=int(data.get("start", 0)),
            stop=int(data.get("stop", 0)),
            step=int(data.get("step", 1)),
            calls=data.get("calls"),
            each=data.get("each"),
            init=data.get("init"),
            packed=data.get("packed"),
        )


@dataclass
class ChunkResult:
    """What a chunk gives back: encoded values (or a reduced partial) and item errors."""

    index: int
    items: int = 0
    values: list[Any] | None = None  # encoded per-item results, None when reduced
    partial: Any = None  # encoded reduced value of the good items
    errors: list[dict[str, Any]] = field(default_factory=list)
    # Set when the chunk could not run at all (target refused, not importable).
    fatal: dict[str, Any] | None = None
    host: str = ""
    seconds: float = 0.0
    # Lines of output the chunk forwarded (distloop.tasks.output), when it forwarded any.
    output: int | None = None
    # CPU seconds of the thread that ran the chunk: with ``seconds``, tells waiting from computing.
    cpu_seconds: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and v != []}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ChunkResult:
        return cls(**data)


#: What an item may raise and still be reported as its failure. A prefork worker process
#: (where Celery ignores SIGINT, so only ``f`` can raise them) widens it to
#: :data:`WORKER_ITEM_ERRORS` (see :mod:`distloop.tasks.signals`): ``sys.exit()`` in ``f``
#: then fails its item instead of killing the process. In the producer's own process
#: (serial, thread backends) Ctrl-C must still interrupt the job.
ITEM_ERRORS: tuple[type[BaseException], ...] = (Exception,)
WORKER_ITEM_ERRORS: tuple[type[BaseException], ...] = (Exception, SystemExit, KeyboardInterrupt)


def item_error(index: Any, exc: BaseException, with_traceback: bool = True) -> dict[str, Any]:
    """Describe a failed item as JSON-ready data.

    Besides its type name, message and traceback: where its class lives
    (``module``, a script's path as targets name it, and ``qualname``) and, when
    they travel as JSON, its ``args``, its instance attributes (``attrs``) and an
    ``OSError``'s ``errno``, ``strerror``, ``filename`` and ``filename2`` (``oserror``),
    so that the caller can be given the same exception back
    (:mod:`distloop.facades.originals`).
    """
    cls = type(exc)
    error: dict[str, Any] = {
        "index": index,
        "type": cls.__name__,
        "message": _text_of(exc),
        "traceback": "".join(traceback.format_exception(exc)) if with_traceback else "",
        "module": location_of(cls.__module__),
        "qualname": cls.__qualname__,
    }
    parts: dict[str, Any] = {"args": list(exc.args)}
    if vars(exc):
        parts["attrs"] = dict(vars(exc))
    if isinstance(exc, OSError):
        parts["oserror"] = [exc.errno, exc.strerror, exc.filename, exc.filename2]
    for key, value in parts.items():
        try:
            error[key] = codec.encode(value)
        except (codec.NotJSONable, RecursionError, ValueError):
            pass  # not sent: the caller gets a distloop error naming the class instead
    return error


def _text_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as failure:  # a broken __str__ must not lose the chunk
        return f"<str() failed: {type(failure).__name__}>"


# Folding a block of values into a partial at C speed; None is the empty partial. Raises
# (TypeError: a None, values that do not combine) when the block must go item by item.
_FAST_FOLD: dict[str, Callable[[Any, list[Any]], Any]] = {
    "sum": lambda acc, block: _sum(iter(block)) if acc is None else sum(block, acc),
    "min": lambda acc, block: combine("min", acc, min(block, default=None)),
    "max": lambda acc, block: combine("max", acc, max(block, default=None)),
    "count": lambda acc, block: (acc or 0) + sum(map(operator.truth, block)),
}

#: Items per block when reducing: the values of one block stay in cache, then are folded.
_REDUCE_BLOCK = 4096

_NOTHING = object()
_FAILED = object()  # the value of an item whose call raised


def _sum(values: Iterator[Any]) -> Any:
    """Left-to-right sum starting from the first value (as the item-by-item fold does)."""
    first: Any = next(values, _NOTHING)
    if first is _NOTHING:
        return None
    if first is None:
        raise TypeError("None in a sum")  # the item-by-item path skips Nones
    return sum(values, first)


def _apply(fn: Callable[..., Any], call: list[Any]) -> Any:
    return fn(*call[0], **call[1])


# Makes the calls of the items at positions lo..hi, each made as it is iterated.
_Calls = Callable[[int, int], Iterator[Any]]


def _calls(fn: Callable[..., Any], chunk: ChunkSpec) -> tuple[_Calls, Callable[[int], Any]]:
    """``fn``'s calls over the chunk's items (``map``, at C speed), and each position's loop index."""
    if chunk.is_range:
        items = range(chunk.start, chunk.stop, chunk.step)
        return (lambda lo, hi: map(fn, items[lo:hi])), items.__getitem__
    # One iterator over the calls, taken up in order. Every argument is decoded before any
    # call is made: arguments this worker cannot read (codec.DecodeError) fail the whole
    # chunk, as the chunk task reports them, instead of running the calls around them.
    calls: Iterator[Any]
    if chunk.each is not None:  # f(x) calls, one argument each (map's compact form)
        calls = map(fn, codec.decode_all(chunk.each))
    elif any(kwargs for _, kwargs in chunk.calls or ()):
        calls = map(_apply, repeat(fn), list(map(codec.decode, chunk.calls or ())))
    else:
        calls = starmap(fn, list(map(codec.decode, (args for args, _ in chunk.calls or ()))))
    return (lambda lo, hi: islice(calls, hi - lo)), int


def _run(calls: _Calls, lo: int, hi: int, on_error: str) -> tuple[list[Any], dict[int, BaseException]]:
    """The values of the items at positions lo..hi, each item's call made exactly once.

    ``list.extend`` keeps what it appended before an exception, so the failing
    position is known: it gets a marker (:data:`_FAILED`) and the calls go on from
    the next item instead of being made again. Returns the values and the failures
    by position in the values; stops at the first failure with ``on_error="raise"``.
    """
    out: list[Any] = []
    failures: dict[int, BaseException] = {}
    while True:
        try:
            out.extend(calls(lo + len(out), hi))
            return out, failures
        except ITEM_ERRORS as exc:
            failures[len(out)] = exc
            out.append(_FAILED)
            if on_error == "raise" or lo + len(out) >= hi:
                return out, failures


def _fast_chunk(fn: Callable[..., Any], chunk: ChunkSpec, reduce: str | None, on_error: str) -> ChunkResult:
    """Every item's call made exactly once, at C speed between failures; failures become item errors."""
    calls, index_of = _calls(fn, chunk)
    result = ChunkResult(index=chunk.index)
    if reduce:
        _reduce_values(calls, len(chunk), index_of, reduce, on_error, result)
        return result
    values, failures = _run(calls, 0, len(chunk), on_error)
    errors = {p: item_error(index_of(p), exc) for p, exc in failures.items()}
    for p in errors:
        values[p] = None
    try:
        encoded = codec.encode_all(values)
    except codec.NotJSONable:  # find which: encode value by value (the calls are not made again)
        encoded = []
        for p, value in enumerate(values):
            try:
                encoded.append(codec.encode(value))
            except codec.NotJSONable as exc:
                errors[p] = item_error(index_of(p), exc, with_traceback=False) | {"type": "NotJSONable"}
                encoded.append(None)
    if on_error == "raise" and errors:
        first = min(errors)
        result.values, result.items, result.errors = encoded[:first], first, [errors[first]]
    else:
        result.values, result.items, result.errors = encoded, len(encoded), [errors[p] for p in sorted(errors)]
    return result


def _reduce_values(
    calls: _Calls, count: int, index_of: Callable[[int], Any], reduce: str, on_error: str, result: ChunkResult
) -> None:
    """Fold the calls' values block by block; a block with a failure or a value that does
    not fold at C speed is folded value by value, as the item-by-item path does."""
    acc: Any = None
    to_partial = REDUCERS[reduce][1]
    done = 0
    while done < count:
        block, failures = _run(calls, done, min(done + _REDUCE_BLOCK, count), on_error)
        if not failures:
            try:
                acc = _FAST_FOLD[reduce](acc, block)
                result.items += len(block)
                done += len(block)
                continue
            except Exception:
                pass
        for p, value in enumerate(block):
            error = failures.get(p)
            if error is None:
                try:
                    acc = combine(reduce, acc, to_partial(value))
                except Exception as exc:
                    error = exc
            if error is not None:
                result.errors.append(item_error(index_of(done + p), error))
                if on_error == "raise":
                    done = count
                    break
            result.items += 1
        else:
            done += len(block)
    set_partial(result, acc)


def set_partial(result: ChunkResult, acc: Any) -> None:
    """Store a chunk's reduced value, encoded; one that cannot travel makes the chunk fail as a whole."""
    try:
        result.partial = codec.encode(acc)
    except codec.NotJSONable as exc:
        result.fatal = {"kind": "result", "message": f"reduced value of chunk {result.index}: {exc}"}


def timeout_error(index: Any, message: str = "still running when the chunk's --timeout expired") -> dict[str, Any]:
    """Describe an item stopped by the per-chunk time limit."""
    return {"index": index, "type": "Timeout", "message": message, "traceback": ""}


def skip_rest(chunk: ChunkSpec, after: Any, result: ChunkResult) -> None:
    """Mark every item of ``chunk`` after ``after`` as failed by the timeout (collect mode)."""
    seen = False
    for index, _, _ in chunk.items():
        if seen:
            result.errors.append(timeout_error(index, "not run: the chunk's --timeout expired before it"))
            result.items += 1
            if result.values is not None:
                result.values.append(None)
        seen = seen or index == after


def killed_chunk_result(chunk: ChunkSpec, reduce: str | None, on_error: str, kind: str, message: str) -> ChunkResult:
    """The result of a chunk whose process was killed (hard time limit, repeated crash).

    Which item was running is unknown here: every item of the chunk is reported
    failed (only the first with ``on_error="raise"``).
    """
    result = ChunkResult(index=chunk.index, values=None if reduce else [])
    for index, _, _ in chunk.items():
        result.errors.append({"index": index, "type": kind, "message": message, "traceback": ""})
        if on_error == "raise":
            break
        result.items += 1
        if result.values is not None:
            result.values.append(None)
    return result


def run_chunk(
    fn: Callable[..., Any],
    chunk: ChunkSpec,
    reduce: str | None = None,
    on_error: str = "raise",
    fast: bool = True,
    io_concurrency: int | None = None,
    fan_out: int = 1,
) -> ChunkResult:
    """Run ``fn`` over ``chunk``'s items; never raises for an item's failure.

    ``fn`` runs exactly once per item, whatever fails. With ``fast``, the calls are
    made at C speed (``map``), a failing item is recorded and the rest go on from the
    next item; values are encoded (or folded) afterwards, so a value that cannot
    travel does not call ``fn`` again either. Chunks under a ``--timeout`` go item by
    item from the start, so the stuck item is known.

    A coroutine function's items run concurrently, ``io_concurrency`` at a time, on
    this thread's event loop (:mod:`distloop.tasks.aio`). With ``fan_out`` above 1 (a
    threads pool's blocking chunk) a plain function's items run that many at once, each
    on a thread of the process, with the same rules.
    """
    started = time.perf_counter()
    if inspect.iscoroutinefunction(fn):
        from distloop.tasks import aio  # it builds on this module

        result = aio.run_async_chunk(fn, chunk, reduce, on_error, io_concurrency or defaults.IO_CONCURRENCY)
        result.seconds = time.perf_counter() - started
        return result
    if fan_out > 1 and len(chunk) > 1:
        from distloop.tasks import aio

        result = aio.run_threaded_chunk(fn, chunk, reduce, on_error, fan_out)
        result.seconds = time.perf_counter() - started
        return result
    if fast:
        result = _fast_chunk(fn, chunk, reduce, on_error)
        result.seconds = time.perf_counter() - started
        return result
    result = ChunkResult(index=chunk.index, values=None if reduce else [])
    to_partial = REDUCERS[reduce][1] if reduce else None
    acc: Any = None
    for index, args, kwargs in chunk.items():
        try:
            value = fn(*args, **kwargs)
            if to_partial is not None:
                acc = combine(reduce, acc, to_partial(value))  # type: ignore[arg-type]
            else:
                result.values.append(codec.encode(value))  # type: ignore[union-attr]
        except SoftTimeLimitExceeded:
            # The chunk ran out of its --timeout: this item is the stuck one; the
            # rest of the chunk is not attempted (the hard limit follows shortly).
            result.errors.append(timeout_error(index))
            if on_error == "raise":
                break
            result.items += 1
            if result.values is not None:
                result.values.append(None)
            skip_rest(chunk, index, result)
            break
        except codec.NotJSONable as exc:
            result.errors.append(item_error(index, exc, with_traceback=False) | {"type": "NotJSONable"})
            if on_error == "raise":
                break
            if result.values is not None:
                result.values.append(None)
        except ITEM_ERRORS as exc:
            result.errors.append(item_error(index, exc))
            if on_error == "raise":
                break
            if result.values is not None:
                result.values.append(None)
        result.items += 1
    if reduce:
        set_partial(result, acc)
    result.seconds = time.perf_counter() - started
    return result


#: Fatal kinds that say "this worker cannot run the target" (it cannot import it, or is not
#: allowed to), not "the chunk failed": another worker, with other code or another
#: allow-list, may run it.
REFUSALS = ("target", "not_allowed")


def run_named_chunk(
    target: str,
    chunk: ChunkSpec,
    reduce: str | None = None,
    on_error: str = "raise",
    allow: Any = None,
    fast: bool = True,
    io_concurrency: int | None = None,
    fan_out: int = 1,
) -> ChunkResult:
    """Resolve ``target`` (against ``allow``) and run the chunk; a refusal is a fatal result."""
    try:
        fn = resolve(target, allow)
        failed = initialize(chunk.init, allow)  # the Pool's/Executor's initializer, once per process
    except TargetError as exc:
        kind = "not_allowed" if isinstance(exc, TargetNotAllowed) else "target"
        return ChunkResult(index=chunk.index, fatal={"kind": kind, "message": str(exc)})
    if failed is not None:
        return ChunkResult(index=chunk.index, fatal=failed)
    cpu = time.thread_time()
    result = run_chunk(fn, chunk, reduce, on_error, fast, io_concurrency, fan_out)
    result.cpu_seconds = time.thread_time() - cpu
    return result
