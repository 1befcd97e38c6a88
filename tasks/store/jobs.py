"""The job ledger in Redis: one result per chunk index, kept until the job is collected.

Keys (all expire after ``result_expires``; :func:`job_keys` lists them):

- ``distloop:job:<id>``          hash: the job's description (target, plan, state)
- ``distloop:job:<id>:results``  hash: chunk index -> chunk result (JSON), until collected; a
  facade's job keeps only an empty tombstone once its producer read the result
- ``distloop:job:<id>:done``     list: chunk indices in completion order, which the
  producer pops to stream results without polling each chunk
- ``distloop:job:<id>:running``  hash: chunk index -> {"host", "at"} while a worker runs it
- ``distloop:job:<id>:counts``   hash: exact counts that checkpoints never trim: chunks
  done ``ok``, ``failed`` and ``refused`` (kept apart: a refused chunk runs again
  elsewhere), ``collected`` (every chunk below it is emitted and its result dropped)
  and ``sent`` (chunks sent so far)
- ``distloop:job:<id>:plan``     hash: chunk index -> [start, stop, step] of range chunks sent
- ``distloop:job:<id>:lease``    string: the producer that runs the job (see :mod:`.lease`)
- ``distloop:job:<id>:output``   list: lines ``f`` printed or logged on the workers, until the
  producer shows them; ``...:output:budget`` (hash) counts what the job sent (:mod:`distloop.tasks.output`)
- ``distloop:job:<id>:blobs``    hash: name -> raw bytes of a large numpy array that travels
  beside its JSON (:mod:`distloop.tasks.core.blobs`): an argument's (``a:<hex>``, written
  by the producer, dropped when its chunk's result is in) or a result's (``<index>:<hex>``,
  written by the worker before its result, dropped with the result it belongs to)
- ``distloop:job:<id>:outcome``  string: how the job ended ("done", "failed", "interrupted",
  "terminated"), written when its producer deletes the rest, so ``distloop status`` can
  still answer: the one key a finished job leaves behind, for ``result_expires``

A chunk delivered twice (a redelivery, a straggler re-sent to an idle worker) keeps its
first result and is counted once: the second copy's is dropped unannounced, since a chunk
is a pure function of its range. A chunk below ``collected`` delivered late leaves nothing
behind.

``distloop:allow`` (a set) holds modules the embedded cluster's producer added
to its workers' allow-list while running (see ``Settings.allow_from_store``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, TypeVar

import redis

from distloop.tasks.core import blobs, defaults
from distloop.tasks.kernel import REFUSALS

PREFIX = "distloop:job:"
ALLOW_KEY = "distloop:allow"
#: The ledger's keys besides the description, by suffix (see :func:`job_keys`).
SUFFIXES = ("results", "done", "running", "counts", "plan", "lease", "output", "output:budget", "blobs")
#: Suffix of the note a finished job leaves behind (see :meth:`JobStore.delete`).
OUTCOME = "outcome"
#: What an argument's blob name starts with in the blob hash (a result's starts with its chunk index).
ARGUMENT_BLOB = "a:"
#: What stays of a result its producer read and will not need again (see :meth:`JobStore.results`).
RECEIVED = ""

# Lua: the kind of a stored result (a JSON chunk result), as _result_kind tells it.
_KIND_OF = """
local refusal_kinds = {}
for kind in string.gmatch(ARGV[#ARGV], '[^,]+') do refusal_kinds[kind] = true end
local function kind_of(raw)
  local ok, r = pcall(cjson.decode, raw)
  if not ok or type(r) ~= 'table' then return 'ok' end
  if type(r.fatal) == 'table' then
    if refusal_kinds[r.fatal.kind] and type(r.host) == 'string' and r.host ~= '' then return 'refused' end
    return 'failed'
  end
  if type(r.errors) == 'table' and #r.errors > 0 then return 'failed' end
  return 'ok'
end
"""

# KEYS: meta, running, results, counts. ARGV: index, entry, expires. Only while the job exists
# and the chunk has no result yet, nor was collected (a copy that comes late has nothing to do).
_MARK_STARTED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return 0 end
if tonumber(ARGV[1]) < tonumber(redis.call('HGET', KEYS[4], 'collected') or '0') then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS: meta, results, done, running, counts. ARGV: index, result, expires, kind, refusal kinds.
# Only while the job exists (else 0); a chunk already collected (below "collected") leaves
# nothing and returns 3. The first result of a chunk wins (1): a second copy (a re-sent
# straggler, a redelivery) is ignored and returns 2, so the producer hears of each chunk
# once and counts it once.
_PUT_RESULT = (
    _KIND_OF
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[4], ARGV[1])
local collected = tonumber(redis.call('HGET', KEYS[5], 'collected') or '0')
if tonumber(ARGV[1]) < collected then return 3 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 2 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
redis.call('RPUSH', KEYS[3], ARGV[1])
for n = 2, 5 do redis.call('EXPIRE', KEYS[n], ARGV[3]) end
return 1
"""
)

# KEYS: results. ARGV: chunk indices. Each stored result, and in its place the empty tombstone
# (RECEIVED) that says it was read: one round trip, as the HMGET it replaces.
_TAKE_RESULTS = """
local taken = {}
for n = 1, #ARGV do
  local raw = redis.call('HGET', KEYS[1], ARGV[n])
  if raw and raw ~= '' then redis.call('HSET', KEYS[1], ARGV[n], '') end
  taken[n] = raw
end
return taken
"""

# KEYS: results, counts. ARGV: chunk indices, then the refusal kinds joined by ",". Deletes
# each index's result only if it is a refusal, so a result another worker wrote meanwhile stays.
_DROP_REFUSALS = (
    _KIND_OF
    + """
local dropped = 0
for n = 1, #ARGV - 1 do
  local raw = redis.call('HGET', KEYS[1], ARGV[n])
  if raw and kind_of(raw) == 'refused' then
    dropped = dropped + redis.call('HDEL', KEYS[1], ARGV[n])
  end
end
if dropped > 0 then redis.call('HINCRBY', KEYS[2], 'refused', -dropped) end
return dropped
"""
)

T = TypeVar("T")


def _key(job_id: str, suffix: str = "") -> str:
    return PREFIX + job_id + (":" + suffix if suffix else "")


def _keys(job_id: str) -> tuple[str, str, str, str]:
    return _key(job_id), _key(job_id, "results"), _key(job_id, "done"), _key(job_id, "running")


def output_key(job_id: str) -> str:
    """The list of ``job_id``'s forwarded output lines (see :mod:`distloop.tasks.output`)."""
    return PREFIX + job_id + ":output"


def output_budget_key(job_id: str) -> str:
    """How many lines and bytes of output ``job_id`` forwarded so far, and whether it is full."""
    return PREFIX + job_id + ":output:budget"


def ledger_keys(job_id: str) -> tuple[str, str, str, str]:
    """The ``(meta, results, done, running)`` keys of ``job_id``'s ledger (for pipelined reads)."""
    return _keys(job_id)


def job_keys(job_id: str) -> list[str]:
    """Every key of ``job_id``'s ledger, which :meth:`JobStore.delete` removes when the job ends.

    The one place that lists them: a part of distloop that keeps more per job in Redis
    adds its key here, and the job's end removes it too (the outcome note excepted).
    """
    return [_key(job_id), *(_key(job_id, s) for s in SUFFIXES)]


def counts_key(job_id: str) -> str:
    """The hash of the job's exact counts (see :meth:`JobStore.counts`)."""
    return _key(job_id, "counts")


def outcome_key(job_id: str) -> str:
    """The note a finished job leaves behind for ``distloop status`` (kept ``result_expires``)."""
    return _key(job_id, OUTCOME)


def result_kind(result: dict[str, Any]) -> str:
    """``"ok"``, ``"failed"`` (item errors, or the chunk could not run) or ``"refused"`` (a worker's refusal)."""
    fatal = result.get("fatal")
    if fatal:
        return "refused" if fatal.get("kind") in REFUSALS and result.get("host") else "failed"
    return "failed" if result.get("errors") else "ok"


def _retrying(call: Callable[[], T], patience: float) -> T:
    """``call()``, again while Redis is unreachable, for up to ``patience`` seconds.

    A worker that finished a chunk while Redis restarts keeps its result until Redis
    is back (with persistence, the job goes on), instead of losing the work.
    """
    deadline = time.monotonic() + patience
    pause = 0.25
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


class JobStore:
    """Reads and writes one Redis's job ledgers."""

    def __init__(self, client: redis.Redis, expires: int, patience: float = defaults.BROKER_OUTAGE_SECONDS) -> None:
        self.client = client
        self.expires = expires
        #: Seconds a worker's ledger write waits for an unreachable Redis.
        self.patience = patience
        # redis-py's registered scripts: EVALSHA, loading the script again after a Redis restart.
        self._mark_started = client.register_script(_MARK_STARTED)
        self._put_result = client.register_script(_PUT_RESULT)
        self._drop_refusals = client.register_script(_DROP_REFUSALS)
        self._take_results = client.register_script(_TAKE_RESULTS)

    def create(self, job_id: str, meta: dict[str, Any]) -> None:
        meta_key = _key(job_id)
        pipe = self.client.pipeline()
        pipe.hset(meta_key, mapping={k: json.dumps(v) for k, v in meta.items()})
        pipe.expire(meta_key, self.expires)
        pipe.execute()

    def update(self, job_id: str, **fields: Any) -> None:
        meta_key = _key(job_id)
        self.client.hset(meta_key, mapping={k: json.dumps(v) for k, v in fields.items()})

    def meta(self, job_id: str) -> dict[str, Any] | None:
        raw = self.client.hgetall(_key(job_id))
        if not raw:
            return None
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def exists(self, job_id: str) -> bool:
        return bool(self.client.exists(_key(job_id)))

    def mark_started(self, job_id: str, index: int, host: str) -> bool:
        """Record that ``host`` runs chunk ``index``; False if the job is gone (cancelled) or the chunk is done."""
        meta_key, results_key, _, running_key = _keys(job_id)
        entry = json.dumps({"host": host, "at": time.time()})
        args: list[str | int] = [str(index), entry, self.expires]
        keys = [meta_key, running_key, results_key, _key(job_id, "counts")]
        return bool(_retrying(lambda: self._mark_started(keys, args), self.patience))

    def running(self, job_id: str) -> dict[int, dict[str, Any]]:
        """Chunks a worker has started and not finished: index -> {"host", "at"}."""
        raw = self.client.hgetall(_key(job_id, "running"))
        return {int(k): json.loads(v) for k, v in raw.items()}

    def forget_running(self, job_id: str, indices: Collection[int]) -> None:
        """Drop ``indices``' running entries: chunks no worker holds (their result was lost, or collected)."""
        if indices:
            self.client.hdel(_key(job_id, "running"), *map(str, indices))

    def put_result(self, job_id: str, index: int, result: dict[str, Any], blobs: Mapping[str, Any] = {}) -> bool:
        """Record chunk ``index``'s result, count it and announce it (worker side); False if the job is gone.

        Atomic with the job's existence, so a chunk that finishes after its job was
        cancelled or collected leaves nothing behind in Redis. The first result of a
        chunk wins: a later copy's is ignored (still True: the job exists).

        ``blobs``: the raw buffers the result's references name (:func:`.blobs.out_of_band`),
        stored first under names of this copy's own, and dropped again if this copy's
        result is not the one kept.
        """
        names = {_result_blob(index, name): data for name, data in blobs.items()}
        if blobs:
            result = {**result, "blobs": list(blobs)}
            _retrying(lambda: self.put_blobs(job_id, names), self.patience)
        keys = [*_keys(job_id), _key(job_id, "counts")]
        args: list[str | int] = [str(index), json.dumps(result), self.expires, result_kind(result), ",".join(REFUSALS)]
        stored = _retrying(lambda: self._put_result(keys, args), self.patience)
        if names and stored != 1:
            _retrying(lambda: self.drop_blobs(job_id, names), self.patience)
        return bool(stored)

    def put_blobs(self, job_id: str, blobs: Mapping[str, Any]) -> None:
        """Store raw buffers under their names in the job's blob hash (plain HSET: no script copies them)."""
        if blobs:
            key = _key(job_id, "blobs")
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(key, mapping=dict(blobs))  # type: ignore[arg-type]
            pipe.expire(key, self.expires)
            pipe.execute()

    def get_blobs(self, job_id: str, names: Collection[str], forget: Collection[str] = ()) -> dict[str, bytes | None]:
        """The raw buffers stored under ``names`` (None for one that is gone); ``forget``'s go in the same trip."""
        wanted = list(names)
        if not wanted:
            return {}
        key = _key(job_id, "blobs")
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(key, wanted)
        if forget:
            pipe.hdel(key, *forget)
        found: list[bytes | None] = pipe.execute()[0]
        return dict(zip(wanted, found, strict=True))

    def drop_blobs(self, job_id: str, names: Collection[str]) -> None:
        if names:
            self.client.hdel(_key(job_id, "blobs"), *names)

    def drop_refusals(self, job_id: str, indices: Collection[int]) -> int:
        """Forget the stored results of ``indices`` that are refusals (fatal, of a kind in :data:`REFUSALS`).

        A chunk handed to another worker then reads as not done until that worker
        answers: to the lost-chunk finder, to ``distloop status``, and to resume.
        """
        if not indices:
            return 0
        keys = [_key(job_id, "results"), _key(job_id, "counts")]
        return int(self._drop_refusals(keys, [*map(str, indices), ",".join(REFUSALS)]))

    def pop_done(self, job_id: str, timeout: float, most: int = 1000) -> list[int]:
        """Chunk indices finished since the last call; waits up to ``timeout`` for the first."""
        done_key = _key(job_id, "done")
        first = self.client.blpop([done_key], timeout=timeout)
        if first is None:
            return []
        rest = self.client.lpop(done_key, most) or []
        return [int(first[1])] + [int(x) for x in rest]

    def announce(self, job_id: str, indices: Collection[int]) -> None:
        """Announce ``indices`` again (their results are stored, and the producer never read them)."""
        if indices:
            self.client.rpush(_key(job_id, "done"), *map(str, sorted(indices)))

    def results(self, job_id: str, indices: list[int], consume: bool = False) -> list[dict[str, Any] | None]:
        """The stored results of ``indices`` (None where there is none), their large arrays in place.

        With ``consume`` (a job that cannot be resumed: the facades'), each result read,
        and its arrays, leave Redis at once: a tombstone (:data:`RECEIVED`) stays in its
        place, so that a late copy of the chunk is still ignored, until a checkpoint past
        it drops that too. A refusal is put back: it is dropped when its chunk is sent again.
        """
        if not indices:  # HMGET wants at least one field (a resumed job may have none stored)
            return []
        key, names = _key(job_id, "results"), [str(i) for i in indices]
        raw = self._take_results([key], names) if consume else self.client.hmget(key, names)
        results = [json.loads(r) if r else None for r in raw]  # (a tombstone reads as none)
        if consume:
            refused = {names[n]: raw[n] for n, r in enumerate(results) if r is not None and result_kind(r) == "refused"}
            if refused:
                self.client.hset(key, mapping=refused)  # type: ignore[arg-type]
        # Large arrays travel beside their results: fetched in one HMGET, put back in place.
        named = [n for n, r in enumerate(results) if r is not None and "blobs" in r]
        if named:
            fields: dict[int, list[str]] = {}
            for n in named:
                result: dict[str, Any] = results[n]  # type: ignore[assignment]
                fields[n] = [_result_blob(result["index"], name) for name in result.pop("blobs")]
            wanted = [f for own in fields.values() for f in own]
            stored = self.get_blobs(job_id, wanted, forget=wanted if consume else ())
            for n in named:
                found = {f.partition(":")[2]: stored.get(f) for f in fields[n]}
                results[n] = blobs.attach(results[n], found)
        return results

    def has_results(self, job_id: str, indices: Collection[int]) -> set[int]:
        """Those of ``indices`` that have a result stored."""
        wanted = sorted(indices)
        if not wanted:
            return set()
        raw = self.client.hmget(_key(job_id, "results"), [str(i) for i in wanted])
        return {i for i, r in zip(wanted, raw, strict=True) if r is not None}

    def finished_indices(self, job_id: str) -> set[int]:
        return {int(k) for k in self.client.hkeys(_key(job_id, "results"))}

    def counts(self, job_id: str) -> dict[str, int]:
        """The job's exact counts: chunks ``done``, ``failed``, ``refused``, ``sent``, and ``collected``.

        Kept by the worker-side scripts as each result lands, so the checkpoints that
        drop collected results (``--output``, ``--reduce``) never change them.
        """
        return self.parse_counts(self.client.hgetall(_key(job_id, "counts")))

    @staticmethod
    def parse_counts(raw: dict[Any, Any]) -> dict[str, int]:
        """:meth:`counts` from the counts hash as read (for pipelined reads)."""
        counts = {_text(k): int(v) for k, v in raw.items()}
        ok, failed = counts.get("ok", 0), counts.get("failed", 0)
        return {
            "done": ok + failed, "failed": failed, "refused": counts.get("refused", 0),
            "sent": counts.get("sent", 0), "collected": counts.get("collected", 0),
        }  # fmt: skip

    def chunk_counts(self, job_id: str) -> tuple[int, int]:
        """``(done, failed)``: chunks with a result, and those whose result holds an error."""
        counts = self.counts(job_id)
        return counts["done"], counts["failed"]

    def allow(self, patterns: list[str]) -> None:
        """Add ``patterns`` to the allow-list of workers with ``allow_from_store``."""
        if patterns:
            self.client.sadd(ALLOW_KEY, *patterns)

    def allowed(self) -> tuple[str, ...]:
        """The patterns :meth:`allow` added."""
        return tuple(sorted(_text(p) for p in self.client.smembers(ALLOW_KEY)))

    def record_plan(self, job_id: str, chunks: list[dict[str, Any]], sent: int | None = None) -> None:
        """Remember sent range chunks' boundaries (chunk sizes adapt, so resume cannot recompute them).

        ``sent``: how many chunks the job has sent in all (indices ``0 .. sent - 1``).
        """
        pipe = self.client.pipeline(transaction=False)
        if chunks:
            key = _key(job_id, "plan")
            pipe.hset(key, mapping={str(c["index"]): json.dumps([c["start"], c["stop"], c["step"]]) for c in chunks})
            pipe.expire(key, self.expires)
        if sent is not None:
            pipe.hset(_key(job_id, "counts"), "sent", sent)
            pipe.expire(_key(job_id, "counts"), self.expires)
        pipe.execute()

    def plan(self, job_id: str) -> dict[int, list[int]]:
        """Chunk index -> [start, stop, step] of every sent chunk not yet below the checkpoint."""
        return {int(k): json.loads(v) for k, v in self.client.hgetall(_key(job_id, "plan")).items()}

    def checkpoint(self, job_id: str, state: dict[str, Any]) -> None:
        """Save the producer's checkpoint, then forget the results of chunks below ``state["next"]``."""
        meta_key, results_key, _, _ = _keys(job_id)
        before = self.client.hget(meta_key, "checkpoint")
        start = int(json.loads(before)["next"]) if before else 0
        nxt = int(state["next"])
        pipe = self.client.pipeline()
        pipe.hset(meta_key, "checkpoint", json.dumps(state))
        pipe.expire(meta_key, self.expires)
        # From here on a late duplicate of a chunk below it is not stored (nor counted) again.
        pipe.hset(_key(job_id, "counts"), "collected", nxt)
        pipe.execute()
        below = list(range(start, nxt))
        self._drop_result_blobs(job_id, start, nxt)
        for offset in range(0, len(below), 10_000):
            fields = [str(i) for i in below[offset : offset + 10_000]]
            self.client.hdel(results_key, *fields)
            # The plan keeps the last emitted chunk: resume continues after its stop.
            planned = [f for f in fields if int(f) != nxt - 1]
            if planned:  # (HDEL wants a field: a checkpoint one chunk past the last has none)
                self.client.hdel(_key(job_id, "plan"), *planned)

    def _drop_result_blobs(self, job_id: str, start: int, stop: int) -> None:
        """Forget the large arrays of results ``start .. stop - 1`` (named ``<index>:<hex>``)."""
        key = _key(job_id, "blobs")
        if not self.client.exists(key):
            return
        prefix = [_text(f).partition(":") for f in self.client.hkeys(key)]
        gone = [a + ":" + b for a, _, b in prefix if a.isdigit() and start <= int(a) < stop]
        self.drop_blobs(job_id, gone)

    def delete(self, job_id: str, outcome: dict[str, Any] | None = None) -> list[int]:
        """Remove every key of the job's ledger; the chunks that were running then (in one transaction).

        With ``outcome``, a ledger that was still there leaves that note behind
        (``state``, ``target``, ``items``, the chunk counts...) until ``result_expires``.
        """
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(_key(job_id))
        pipe.hkeys(_key(job_id, "running"))
        pipe.hgetall(_key(job_id, "counts"))
        pipe.delete(*job_keys(job_id))
        meta, running, counts, _ = pipe.execute()
        if meta and outcome is not None:
            chunks = {_text(k): int(v) for k, v in counts.items()}
            described = {_text(k): json.loads(v) for k, v in meta.items()}
            note = {
                "created_at": described.get("created_at"), "chunks": described.get("chunks"),
                "done": chunks.get("ok", 0) + chunks.get("failed", 0), "failed": chunks.get("failed", 0),
                **outcome, "ended_at": time.time(),
            }  # fmt: skip
            self.client.set(outcome_key(job_id), json.dumps(note), ex=self.expires)
        return sorted(int(k) for k in running)

    def outcome(self, job_id: str) -> dict[str, Any] | None:
        """How a job whose ledger is gone ended, if its producer said so (see :meth:`delete`)."""
        raw = self.client.get(outcome_key(job_id))
        return json.loads(raw) if raw else None

    def job_ids(self) -> Iterator[tuple[str, bool]]:
        """``(job id, live)`` for every job in this Redis: live ledgers, and finished jobs' notes."""
        for key in self.client.scan_iter(match=PREFIX + "*", count=1000):
            rest = _text(key)[len(PREFIX) :]
            if ":" not in rest:
                yield rest, True
            elif rest.endswith(":" + OUTCOME) and rest.count(":") == 1:
                yield rest.split(":")[0], False


def _result_blob(index: int, name: str) -> str:
    """The blob hash field of a result's array: its chunk index first, for the checkpoint to find."""
    return f"{index}:{name}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
