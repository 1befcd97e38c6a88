"""What ``f`` prints or logs on a worker, forwarded to the producer's terminal through Redis.

Only while a chunk runs, and only when its producer asked (``forward_output`` in the
chunk's message): ``sys.stdout`` and ``sys.stderr`` are replaced by line writers and a
handler sits on the root logger, so what ``f`` writes is caught and the worker's own
logging (Celery, kombu, distloop) is not::

    worker process (one chunk)                 Redis                          producer
    print(...) / sys.stderr / logging  --->  distloop:job:<id>:output  --->  [host:pid] line
    lines in the order written, pushed         list, bounded per job          stdout (print), stderr
    every OUTPUT_FLUSH_SECONDS and at the      (a marker says where the       (stderr, logging, markers)
    chunk's end, before its result             rest was dropped)

Each entry is a JSON list ``[stream, "host:pid", text]``, ``stream`` being ``"out"`` or
``"err"``. A chunk keeps at most :data:`~distloop.tasks.core.defaults.OUTPUT_LINES_PER_CHUNK`
lines and ``OUTPUT_BYTES_PER_CHUNK`` bytes and ends with a marker line counting what it
dropped; a job at most ``OUTPUT_LINES_PER_JOB`` lines and ``OUTPUT_BYTES_PER_JOB`` bytes, then one
marker. The keys go with the job's ledger (:meth:`distloop.tasks.store.jobs.JobStore.delete`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import redis

from distloop.tasks.core import defaults
from distloop.tasks.store.jobs import ledger_keys, output_budget_key, output_key

#: Loggers whose records are the worker's own, never forwarded.
OWN_LOGGERS = ("celery", "kombu", "amqp", "billiard", "redis", "distloop")

# KEYS: meta, output, budget. ARGV: expires, max lines, max bytes, the job's marker entry, entries...
# Only while the job exists; once the job's budget is spent, the marker once, then nothing.
_PUSH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HGET', KEYS[3], 'full') then return 0 end
local lines = tonumber(redis.call('HGET', KEYS[3], 'lines') or '0')
local bytes = tonumber(redis.call('HGET', KEYS[3], 'bytes') or '0')
local max_lines, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[3])
local pushed = 0
for n = 5, #ARGV do
  if lines >= max_lines or bytes + #ARGV[n] > max_bytes then
    redis.call('HSET', KEYS[3], 'full', '1')
    redis.call('RPUSH', KEYS[2], ARGV[4])
    break
  end
  redis.call('RPUSH', KEYS[2], ARGV[n])
  lines = lines + 1
  bytes = bytes + #ARGV[n]
  pushed = pushed + 1
end
redis.call('HSET', KEYS[3], 'lines', lines, 'bytes', bytes)
redis.call('EXPIRE', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return pushed
"""


class OutputStore:
    """The job's output list in Redis: workers push, the producer pops."""

    def __init__(self, client: redis.Redis, expires: int = defaults.RESULT_EXPIRES) -> None:
        self.client = client
        self.expires = expires
        self._push = client.register_script(_PUSH)

    def push(self, job_id: str, who: str, entries: list[str]) -> int:
        """Append ``entries`` within the job's budget; how many went (-1: the job is gone)."""
        marker = entry(
            "err", who,
            f"distloop: this job's forwarded output reached its limit ({defaults.OUTPUT_LINES_PER_JOB} lines, "
            f"{defaults.OUTPUT_BYTES_PER_JOB} bytes): the rest of it is dropped",
        )  # fmt: skip
        keys = [ledger_keys(job_id)[0], output_key(job_id), output_budget_key(job_id)]
        argv: list[str | int] = [self.expires, defaults.OUTPUT_LINES_PER_JOB, defaults.OUTPUT_BYTES_PER_JOB, marker]
        argv.extend(entries)
        return int(self._push(keys, argv))

    def pop(self, job_id: str, most: int = 1000) -> list[tuple[str, str, str]]:
        """Every ``(stream, who, text)`` waiting, in order (``most`` per round trip)."""
        lines: list[tuple[str, str, str]] = []
        while True:
            raw: list[bytes] = self.client.lpop(output_key(job_id), most) or []  # type: ignore[assignment]
            for item in raw:
                try:
                    stream, who, text = json.loads(item)
                except (ValueError, TypeError):
                    continue  # not ours: skipped, never evaluated
                lines.append((str(stream), str(who), str(text)))
            if len(raw) < most:
                return lines


def entry(stream: str, who: str, text: str) -> str:
    return json.dumps([stream, who, text])


class ChunkOutput:
    """The lines one chunk wrote, in order, bounded, pushed in batches through ``push``."""

    def __init__(self, who: str, push: Callable[[list[str]], object]) -> None:
        self.who = who
        self._push = push
        self._lock = threading.RLock()
        self._entries: list[str] = []
        self._lines = self._bytes = 0
        self._dropped_lines = self._dropped_bytes = 0
        self._last_push = time.monotonic()
        self.forwarded = 0

    def add(self, stream: str, text: str) -> None:
        if len(text) > defaults.OUTPUT_LINE_CHARS:
            cut = len(text) - defaults.OUTPUT_LINE_CHARS
            text = f"{text[: defaults.OUTPUT_LINE_CHARS]} [distloop: {cut} more characters of this line dropped]"
        size = len(text.encode("utf-8", "replace"))
        with self._lock:
            if self._lines >= defaults.OUTPUT_LINES_PER_CHUNK or self._bytes + size > defaults.OUTPUT_BYTES_PER_CHUNK:
                self._dropped_lines += 1
                self._dropped_bytes += size
                return
            self._lines += 1
            self._bytes += size
            self._entries.append(entry(stream, self.who, text))
            if time.monotonic() - self._last_push >= defaults.OUTPUT_FLUSH_SECONDS:
                self.flush()

    def flush(self) -> None:
        with self._lock:
            entries, self._entries = self._entries, []
            self._last_push = time.monotonic()
            if entries:
                try:
                    self._push(entries)
                except redis.RedisError:
                    return  # these lines are lost; f goes on, and so does its chunk
                self.forwarded += len(entries)

    def close(self) -> None:
        """Push what is left, with a marker line if the chunk's limit dropped some."""
        with self._lock:
            if self._dropped_lines:
                self._entries.append(
                    entry(
                        "err", self.who,
                        f"distloop: {self._dropped_lines} more lines ({self._dropped_bytes} bytes) of this chunk's "
                        f"output dropped (at most {defaults.OUTPUT_LINES_PER_CHUNK} lines, "
                        f"{defaults.OUTPUT_BYTES_PER_CHUNK} bytes per chunk)",
                    )
                )  # fmt: skip
            self.flush()


class LineWriter(io.TextIOBase):
    """A text stream that writes to ``tee`` (the worker's own) and, while a chunk runs, hands each
    complete line to that chunk's :class:`ChunkOutput`.

    One per stream and process, kept across chunks: a stream picked up while a chunk ran
    (``logging.StreamHandler()`` at import time takes ``sys.stderr``) then forwards the
    lines of whatever chunk runs when it writes, and outside chunks only writes to ``tee``.
    """

    def __init__(self, stream: str, tee: TextIO | None) -> None:
        self.stream = stream
        self.tee = tee
        self.output: ChunkOutput | None = None
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.tee is not None:
            try:
                self.tee.write(text)
            except Exception:
                self.tee = None  # the worker's own stream broke: keep forwarding
        output = self.output
        if output is not None:
            *lines, self._partial = (self._partial + text).split("\n")
            for line in lines:
                output.add(self.stream, line)
        return len(text)

    def flush(self) -> None:
        if self.tee is not None:
            try:
                self.tee.flush()
            except Exception:
                self.tee = None

    def close_line(self) -> None:
        if self._partial and self.output is not None:
            self.output.add(self.stream, self._partial)
        self._partial = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


_WRITERS: dict[str, LineWriter] = {}


def _writer(stream: str, current: Any) -> LineWriter:
    """This process's writer for ``stream``, writing through to ``current`` (the stream it replaces)."""
    writer = _WRITERS.get(stream)
    if writer is None:
        writer = _WRITERS[stream] = LineWriter(stream, current)
    elif current is not writer:
        writer.tee = current
    return writer


class LogForwarder(logging.Handler):
    """Root-logger handler for the chunk: records of ``f``'s loggers, as ``logging.basicConfig`` prints them."""

    def __init__(self, output: ChunkOutput) -> None:
        super().__init__()
        self._output = output
        self.setFormatter(logging.Formatter(logging.BASIC_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".", 1)[0] in OWN_LOGGERS:
            return
        try:
            for line in self.format(record).rstrip("\n").split("\n"):
                self._output.add("err", line)
        except Exception:
            self.handleError(record)


def who_am_i(hostname: str) -> str:
    """``host:pid`` for the prefix: the worker's node name (``name@host``) and this process's id."""
    return f"{hostname or 'worker'}:{os.getpid()}"


@contextmanager
def forwarding(store: OutputStore, job_id: str, hostname: str) -> Iterator[ChunkOutput]:
    """Catch what runs inside (one chunk) writes to stdout, stderr and logging; push it for ``job_id``.

    Only in a process's main thread (prefork pool processes, ``-P solo``): ``sys.stdout`` is
    one per process, and chunks running side by side in threads (``-P threads``) would
    swap it under each other. There nothing is caught, and output stays in the worker's log.
    """
    output = ChunkOutput(who_am_i(hostname), lambda entries: store.push(job_id, output.who, entries))
    if threading.current_thread() is not threading.main_thread():
        yield output
        return
    saved: tuple[Any, Any] = (sys.stdout, sys.stderr)
    out, err = _writer("out", sys.stdout), _writer("err", sys.stderr)
    out.output = err.output = output
    handler = LogForwarder(output)
    root = logging.getLogger()
    sys.stdout, sys.stderr = out, err
    root.addHandler(handler)
    try:
        yield output
    finally:
        root.removeHandler(handler)
        sys.stdout, sys.stderr = (s if s is not w else w.tee for s, w in zip(saved, (out, err), strict=True))
        out.close_line()
        err.close_line()
        out.output = err.output = None
        output.close()
