"""Large array arguments of chunks sent to Celery workers: stored beside the messages, dropped once answered.

A chunk whose arguments hold large numpy arrays (``ChunkSpec.blobs``, see
:mod:`distloop.tasks.core.blobs`) is published with only their names; the raw bytes
go first into the job's blob hash, where the worker that runs the chunk reads them.
They stay while the chunk may run again (a lost chunk, a straggler's copy, a refusal
handed to another worker) and go when its result is in, or with the job's ledger.

A long list of calls (a facade's ``map`` over many items) goes the same way, as one
JSON blob (:func:`pack`): inside the message, kombu writes the list into the message's
JSON and the worker's main process and then its pool child each parse it, where only
the child needs it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace

from distloop.tasks.core import blobs
from distloop.tasks.kernel import ChunkResult, ChunkSpec
from distloop.tasks.store.jobs import ARGUMENT_BLOB, JobStore

#: Lists of calls shorter than this stay in the message (most are too small to be worth a blob).
PACK_ITEMS = 1000


def pack(chunk: ChunkSpec) -> ChunkSpec:
    """``chunk`` with a long ``each``/``calls`` list moved into its blobs, where that is at least
    :data:`blobs.MIN_BYTES` of JSON; else ``chunk`` itself.

    The blob is named after the chunk's index, so a chunk sent again (lost, a straggler's
    copy) names the blob stored the first time.
    """
    values = chunk.each if chunk.each is not None else chunk.calls
    if values is None or len(values) < PACK_ITEMS:
        return chunk
    data = json.dumps(values, separators=(",", ":")).encode()
    if len(data) < blobs.MIN_BYTES:
        return chunk
    name = f"calls:{chunk.index}"
    packed = {"field": "each" if chunk.each is not None else "calls", "name": name, "items": len(values)}
    return replace(chunk, each=None, calls=None, blobs={**(chunk.blobs or {}), name: data}, packed=packed)


class ArgumentBlobs:
    """Which sent chunks of which job have arguments in the blob hash."""

    def __init__(self) -> None:
        self._stored: dict[str, dict[int, list[str]]] = {}  # job id -> chunk index -> field names

    def put(self, store: JobStore, job_id: str, chunks: Sequence[ChunkSpec]) -> None:
        """Store the arguments of ``chunks`` not stored yet (before the chunks are published)."""
        stored = self._stored.setdefault(job_id, {})
        fresh = {}
        for chunk in chunks:
            if chunk.blobs and chunk.index not in stored:
                fresh[chunk.index] = {ARGUMENT_BLOB + name: data for name, data in chunk.blobs.items()}
        if fresh:
            store.put_blobs(job_id, {field: data for own in fresh.values() for field, data in own.items()})
            stored.update({index: list(own) for index, own in fresh.items()})

    def answered(self, store: JobStore, job_id: str, results: Iterable[ChunkResult]) -> None:
        """Drop the arguments of chunks whose result is in (none of these is a refusal)."""
        stored = self._stored.get(job_id)
        if stored:
            fields = [f for r in results for f in stored.pop(r.index, ())]
            store.drop_blobs(job_id, fields)

    def forget(self, job_id: str) -> None:
        """The job ended (its blob hash went with its ledger)."""
        self._stored.pop(job_id, None)
