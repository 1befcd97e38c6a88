"""Large numpy buffers beside the JSON, not inside it: raw bytes, referenced by name.

A float64 array of 10**6 elements is 8 MB of raw bytes; as base64 inside a JSON
message it is 10.7 MB that every hop copies, escapes and parses again (and kombu's
Redis transport may base64 it once more). Where a Redis is at hand (the celery
backend), an array of at least :data:`MIN_BYTES` travels out of band instead: its
encoded form holds ``{"__blob__": name}`` where the base64 would be, and the raw
bytes go into the job's blob hash under that name, written and read with plain
``HSET``/``HMGET`` (see :mod:`distloop.tasks.store.jobs`).

- :func:`out_of_band` turns it on for the encoding done inside its block (a
  ``contextvars`` variable: each thread, each asyncio task its own) and collects the
  buffers, name -> bytes-like, for the caller to store.
- :func:`attach` puts fetched bytes back in place of the references, in a copy of the
  encoded value, so that :func:`distloop.tasks.core.codec.decode` rebuilds the arrays.
  JSON never yields ``bytes``: only this function puts raw data in an encoded value.

A reference nobody attached (a blob that expired, a forged message) is a
:class:`~distloop.tasks.core.codec.DecodeError` when decoded, never a guess.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

#: The tag of a reference, in an array's data position.
TAG = "__blob__"
#: Arrays of fewer raw bytes stay inline (base64): a Redis round trip costs more than that.
MIN_BYTES = 64 * 1024

_sink: ContextVar[dict[str, Any] | None] = ContextVar("distloop_blob_sink", default=None)


@contextlib.contextmanager
def out_of_band(enabled: bool = True) -> Iterator[dict[str, Any]]:
    """Within the block, large arrays encode as references; yields the buffers, name -> bytes-like.

    ``enabled=False`` yields an empty dict and changes nothing (a backend without a Redis).
    """
    if not enabled:
        yield {}
        return
    sink: dict[str, Any] = {}
    token = _sink.set(sink)
    try:
        yield sink
    finally:
        _sink.reset(token)


def stash(data: Any) -> dict[str, str] | None:
    """A reference to ``data`` (a C-contiguous bytes-like) kept in the active sink; None without one."""
    sink = _sink.get()
    if sink is None or len(data) < MIN_BYTES:
        return None
    name = uuid.uuid4().hex
    sink[name] = data
    return {TAG: name}


def attach(value: Any, blobs: Mapping[str, bytes | None]) -> Any:
    """A copy of encoded ``value`` with each reference named in ``blobs`` replaced by its bytes.

    Only an array's data position is looked at, so a user's dict that reads like a
    reference (escaped by the codec as ``__dict__``) stays what it is.
    """
    cls = type(value)
    if cls is list:
        return [attach(v, blobs) for v in value]
    if cls is not dict:
        return value
    if len(value) == 1:
        key, payload = next(iter(value.items()))
        if key == "__ndarray__":
            if type(payload) is list and len(payload) == 4 and type(payload[3]) is dict:
                name = payload[3].get(TAG)
                data = blobs.get(name) if type(name) is str else None
                if data is not None:
                    return {key: [*payload[:3], data]}
            return value
        if key == "__dict__" and type(payload) is dict:  # an escaped user dict: its values only
            return {key: {k: attach(v, blobs) for k, v in payload.items()}}
    return {k: attach(v, blobs) for k, v in value.items()}
