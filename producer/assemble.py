"""Putting chunk results back in loop order: one result per chunk index."""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any

from distloop.tasks.core import codec
from distloop.tasks.core.errors import (
    BrokerUnavailable,
    ChunkFailed,
    RemoteTraceback,
    TargetError,
    TargetNotAllowed,
    UsageError,
)
from distloop.tasks.kernel import ChunkResult, combine

Sink = Callable[[Any], None]


class Assembler:
    """Receives chunk results in any order, keeps the first per index, emits in order.

    With a reduce op it folds partial values in chunk order (so float sums are
    the same on every backend); otherwise it hands each decoded item to ``sink``.
    Out-of-order results wait in a buffer bounded by the dispatcher's window.
    """

    def __init__(self, reduce: str | None, on_error: str, sink: Sink | None = None) -> None:
        self.reduce = reduce
        self.on_error = on_error
        self.sink = sink
        self.value: Any = None
        self.errors: list[dict[str, Any]] = []
        self.hosts: dict[str, dict[str, int]] = {}
        self.items = 0
        self.chunks = 0
        self.compute_s = 0.0
        self.total_chunks: int | None = None  # set once the job is planned
        self.seen: set[int] = set()
        self._next = 0
        self._buffer: dict[int, ChunkResult] = {}
        # With on_error "raise": the lowest-index failed chunk so far. It is raised once
        # every chunk before it is in, so the error is the one a serial loop would meet.
        self.failure: ChunkResult | None = None

    def add(self, result: ChunkResult) -> bool:
        """Take one chunk's result; False if that index already had one."""
        if result.index in self.seen or result.index < self._next:
            return False
        if result.fatal:
            raise fatal_error(result.fatal)
        self.seen.add(result.index)
        self.chunks += 1
        self.items += result.items
        self.compute_s += result.seconds
        if result.host:
            host = self.hosts.setdefault(result.host, {"chunks": 0, "items": 0})
            host["chunks"] += 1
            host["items"] += result.items
        if result.errors:
            self.errors.extend(result.errors)
            if self.on_error == "raise":
                if self.failure is None or result.index < self.failure.index:
                    self.failure = result
                self.raise_failure(due_only=True)
                return True
        self._buffer[result.index] = result
        while self._next in self._buffer:
            self._emit(self._buffer.pop(self._next))
            self._next += 1
        self.raise_failure(due_only=True)
        return True

    def raise_failure(self, due_only: bool = False) -> None:
        """Raise the pending failure (with ``due_only``, once every chunk before it is in)."""
        if self.failure is not None and (self._next == self.failure.index or not due_only):
            raise chunk_failed(self.failure.errors[0])

    def checkpoint(self) -> dict[str, Any] | None:
        """State that lets a resumed job skip every chunk already emitted, or None.

        Possible when results leave the producer as they come (a reduce op, or an
        output file, flushed here so that its length matches); a result list kept
        in memory cannot be rebuilt from a checkpoint.
        """
        if not self.reduce and not isinstance(self.sink, JsonLinesSink):
            return None
        state: dict[str, Any] = {
            "next": self._next, "items": self.items, "chunks": self.chunks,
            "errors": self.errors, "hosts": self.hosts, "value": codec.encode(self.value),
        }  # fmt: skip
        if isinstance(self.sink, JsonLinesSink):
            self.sink.stream.flush()
            state["output_offset"] = self.sink.stream.tell()
        self.seen = {i for i in self.seen if i >= self._next}  # the rest is below _next
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`checkpoint` (the output stream is positioned by the caller)."""
        self._next = int(state["next"])
        self.items, self.chunks = int(state["items"]), int(state["chunks"])
        self.errors, self.hosts = list(state["errors"]), dict(state["hosts"])
        self.value = codec.decode(state["value"])

    def _emit(self, result: ChunkResult) -> None:
        if self.reduce:
            self.value = combine(self.reduce, self.value, codec.decode(result.partial))
        elif self.sink is not None and result.values:
            values = codec.decode_all(result.values)
            if isinstance(self.sink, ListSink):  # the common case: a chunk's values at once
                self.sink.values.extend(values)
            else:
                for value in values:
                    self.sink(value)


def chunk_failed(error: dict[str, Any]) -> ChunkFailed:
    """The error for a failed item, with the remote traceback as its cause."""
    if error.get("type") == "NotJSONable":
        exc = ChunkFailed(error["index"], "TypeError", f"result of f({error['index']}): {error['message']}")
    else:
        exc = ChunkFailed(error["index"], error["type"], error["message"], error.get("traceback", ""))
        exc.exc_module, exc.exc_qualname = error.get("module"), error.get("qualname")
    if exc.remote_traceback:
        exc.__cause__ = RemoteTraceback(exc.remote_traceback)
    return exc


def fatal_error(fatal: dict[str, Any]) -> Exception:
    kind = fatal.get("kind")
    if kind == "not_allowed":
        return TargetNotAllowed(fatal["message"])
    if kind == "target":
        return TargetError(fatal["message"])
    if kind == "worker":
        return BrokerUnavailable(f"a worker process failed: {fatal.get('type')}: {fatal.get('message')}")
    return ChunkFailed(None, kind or "Error", fatal.get("message", "chunk failed"))


class ListSink:
    """Collects results in a list."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> None:
        self.values.append(value)


class JsonLinesSink:
    """Writes one JSON value per line, in loop order, as results arrive."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.count = 0

    def __call__(self, value: Any) -> None:
        try:
            self.stream.write(codec.to_json(value))
            self.stream.write("\n")
        except OSError as exc:  # a full disk mid-job: one line, not a traceback
            raise UsageError(f"--output {getattr(self.stream, 'name', '')}: {exc.strerror}") from None
        self.count += 1
