"""The job ledger in Redis: one result per chunk index, kept until the job is collected.

Keys (all expire after ``result_expires``):

- ``distloop:job:<id>``          hash: the job's description (target, plan, state)
- ``distloop:job:<id>:results``  hash: chunk index -> chunk result (JSON)
- ``distloop:job:<id>:done``     list: chunk indices in completion order, which the
  producer pops to stream results without polling each chunk
- ``distloop:job:<id>:running``  hash: chunk index -> {"host", "at"} while a worker runs it
- ``distloop:job:<id>:output``   list: lines ``f`` printed or logged on the workers, until the
  producer shows them; ``...:output:budget`` (hash) counts what the job sent (:mod:`distloop.tasks.output`)
- ``distloop:job:<id>:outcome``  string: how the job ended ("done", "failed", "interrupted",
  "terminated"), written when its producer deletes the rest, so ``distloop status`` can
  still answer

A chunk delivered twice (a redelivery, a straggler re-sent to an idle worker) keeps its
first result: the second copy's is dropped unannounced, since a chunk is a pure function
of its range.

``distloop:allow`` (a set) holds modules the embedded cluster's producer added
to its workers' allow-list while running (see ``Settings.allow_from_store``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from typing import Any

import redis

from distloop.tasks.kernel import REFUSALS

PREFIX = "distloop:job:"
ALLOW_KEY = "distloop:allow"

# KEYS: meta, running, results. ARGV: index, entry, expires. Only while the job exists and
# the chunk has no result yet (a copy that comes late has nothing to do).
_MARK_STARTED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS: meta, results, done, running. ARGV: index, result, expires. Only while the job exists.
# The first result of a chunk wins: a second copy (a re-sent straggler, a redelivery) is
# ignored and returns 2, so the producer hears of each chunk once.
_PUT_RESULT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[4], ARGV[1])
  return 2
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1
"""

# KEYS: results. ARGV: the refusal kinds joined by ",", then chunk indices. Deletes each
# index's result only if it is a refusal (a fatal result of one of those kinds), so a
# result another worker wrote meanwhile stays.
_DROP_REFUSALS = """
local kinds = {}
for kind in string.gmatch(ARGV[1], '[^,]+') do kinds[kind] = true end
local dropped = 0
for n = 2, #ARGV do
  local raw = redis.call('HGET', KEYS[1], ARGV[n])
  if raw then
    local ok, result = pcall(cjson.decode, raw)
    if ok and type(result) == 'table' and type(result.fatal) == 'table' and kinds[result.fatal.kind] then
      dropped = dropped + redis.call('HDEL', KEYS[1], ARGV[n])
    end
  end
end
return dropped
"""


def _keys(job_id: str) -> tuple[str, str, str, str]:
    base = PREFIX + job_id
    return base, base + ":results", base + ":done", base + ":running"


def _plan_key(job_id: str) -> str:
    return PREFIX + job_id + ":plan"


def _outcome_key(job_id: str) -> str:
    return PREFIX + job_id + ":outcome"


def output_key(job_id: str) -> str:
    """The list of ``job_id``'s forwarded output lines (see :mod:`distloop.tasks.output`)."""
    return PREFIX + job_id + ":output"


def output_budget_key(job_id: str) -> str:
    """How many lines and bytes of output ``job_id`` forwarded so far, and whether it is full."""
    return PREFIX + job_id + ":output:budget"


def ledger_keys(job_id: str) -> tuple[str, str, str, str]:
    """The ``(meta, results, done, running)`` keys of ``job_id``'s ledger (for pipelined reads)."""
    return _keys(job_id)


class JobStore:
    """Reads and writes one Redis's job ledgers."""

    def __init__(self, client: redis.Redis, expires: int) -> None:
        self.client = client
        self.expires = expires
        # redis-py's registered scripts: EVALSHA, loading the script again after a Redis restart.
        self._mark_started = client.register_script(_MARK_STARTED)
        self._put_result = client.register_script(_PUT_RESULT)
        self._drop_refusals = client.register_script(_DROP_REFUSALS)

    def create(self, job_id: str, meta: dict[str, Any]) -> None:
        meta_key = _keys(job_id)[0]
        pipe = self.client.pipeline()
        pipe.hset(meta_key, mapping={k: json.dumps(v) for k, v in meta.items()})
        pipe.expire(meta_key, self.expires)
        pipe.execute()

    def update(self, job_id: str, **fields: Any) -> None:
        meta_key = _keys(job_id)[0]
        self.client.hset(meta_key, mapping={k: json.dumps(v) for k, v in fields.items()})

    def meta(self, job_id: str) -> dict[str, Any] | None:
        raw = self.client.hgetall(_keys(job_id)[0])
        if not raw:
            return None
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def exists(self, job_id: str) -> bool:
        return bool(self.client.exists(_keys(job_id)[0]))

    def mark_started(self, job_id: str, index: int, host: str) -> bool:
        """Record that ``host`` runs chunk ``index``; False if the job is gone (cancelled) or the chunk is done."""
        meta_key, results_key, _, running_key = _keys(job_id)
        entry = json.dumps({"host": host, "at": time.time()})
        return bool(self._mark_started([meta_key, running_key, results_key], [str(index), entry, self.expires]))

    def running(self, job_id: str) -> dict[int, dict[str, Any]]:
        """Chunks a worker has started and not finished: index -> {"host", "at"}."""
        raw = self.client.hgetall(_keys(job_id)[3])
        return {int(k): json.loads(v) for k, v in raw.items()}

    def put_result(self, job_id: str, index: int, result: dict[str, Any]) -> bool:
        """Record chunk ``index``'s result and announce it (worker side); False if the job is gone.

        Atomic with the job's existence, so a chunk that finishes after its job was
        cancelled or collected leaves nothing behind in Redis. The first result of a
        chunk wins: a later copy's is ignored (still True: the job exists).
        """
        keys = _keys(job_id)
        return bool(self._put_result(list(keys), [str(index), json.dumps(result), self.expires]))

    def drop_refusals(self, job_id: str, indices: Collection[int]) -> int:
        """Forget the stored results of ``indices`` that are refusals (fatal, of a kind in :data:`REFUSALS`).

        A chunk handed to another worker then reads as not done until that worker
        answers: to the lost-chunk finder, to ``distloop status``, and to resume.
        """
        if not indices:
            return 0
        return int(self._drop_refusals([_keys(job_id)[1]], [",".join(REFUSALS), *map(str, indices)]))

    def pop_done(self, job_id: str, timeout: float, most: int = 1000) -> list[int]:
        """Chunk indices finished since the last call; waits up to ``timeout`` for the first."""
        done_key = _keys(job_id)[2]
        first = self.client.blpop([done_key], timeout=timeout)
        if first is None:
            return []
        rest = self.client.lpop(done_key, most) or []
        return [int(first[1])] + [int(x) for x in rest]

    def results(self, job_id: str, indices: list[int]) -> list[dict[str, Any] | None]:
        if not indices:  # HMGET wants at least one field (a resumed job may have none stored)
            return []
        raw = self.client.hmget(_keys(job_id)[1], [str(i) for i in indices])
        return [json.loads(r) if r is not None else None for r in raw]

    def has_results(self, job_id: str, indices: Collection[int]) -> set[int]:
        """Those of ``indices`` that have a result stored."""
        wanted = sorted(indices)
        if not wanted:
            return set()
        raw = self.client.hmget(_keys(job_id)[1], [str(i) for i in wanted])
        return {i for i, r in zip(wanted, raw, strict=True) if r is not None}

    def finished_indices(self, job_id: str) -> set[int]:
        return {int(k) for k in self.client.hkeys(_keys(job_id)[1])}

    def chunk_counts(self, job_id: str) -> tuple[int, int]:
        """``(done, failed)``: chunks with a result, and those whose result holds an error.

        Reads the results hash (kept until the job is collected), so ``distloop
        status`` sees what any producer or worker recorded.
        """
        results_key = _keys(job_id)[1]
        done = int(self.client.hlen(results_key))
        failed = 0
        for _, raw in self.client.hscan_iter(results_key, count=1000):
            result = json.loads(raw)
            failed += bool(result.get("errors") or result.get("fatal"))
        return done, failed

    def allow(self, patterns: list[str]) -> None:
        """Add ``patterns`` to the allow-list of workers with ``allow_from_store``."""
        if patterns:
            self.client.sadd(ALLOW_KEY, *patterns)

    def allowed(self) -> tuple[str, ...]:
        """The patterns :meth:`allow` added."""
        return tuple(sorted(_text(p) for p in self.client.smembers(ALLOW_KEY)))

    def record_plan(self, job_id: str, chunks: list[dict[str, Any]]) -> None:
        """Remember sent range chunks' boundaries (chunk sizes adapt, so resume cannot recompute them)."""
        if chunks:
            key = _plan_key(job_id)
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(key, mapping={str(c["index"]): json.dumps([c["start"], c["stop"], c["step"]]) for c in chunks})
            pipe.expire(key, self.expires)
            pipe.execute()

    def plan(self, job_id: str) -> dict[int, list[int]]:
        """Chunk index -> [start, stop, step] of every sent chunk not yet below the checkpoint."""
        return {int(k): json.loads(v) for k, v in self.client.hgetall(_plan_key(job_id)).items()}

    def checkpoint(self, job_id: str, state: dict[str, Any]) -> None:
        """Save the producer's checkpoint, then forget the results of chunks below ``state["next"]``."""
        meta_key, results_key, _, _ = _keys(job_id)
        before = self.client.hget(meta_key, "checkpoint")
        start = int(json.loads(before)["next"]) if before else 0
        pipe = self.client.pipeline()
        pipe.hset(meta_key, "checkpoint", json.dumps(state))
        pipe.expire(meta_key, self.expires)
        pipe.execute()
        below = list(range(start, int(state["next"])))
        for offset in range(0, len(below), 10_000):
            fields = [str(i) for i in below[offset : offset + 10_000]]
            self.client.hdel(results_key, *fields)
            # The plan keeps the last emitted chunk: resume continues after its stop.
            self.client.hdel(_plan_key(job_id), *[f for f in fields if int(f) != int(state["next"]) - 1])

    def delete(self, job_id: str, outcome: dict[str, Any] | None = None) -> list[int]:
        """Remove the job's ledger; the chunks that were running then (in one transaction).

        With ``outcome``, a ledger that was still there leaves that note behind
        (``state``, ``target``, ``items``...) until ``result_expires``.
        """
        pipe = self.client.pipeline(transaction=True)
        pipe.exists(_keys(job_id)[0])
        pipe.hkeys(_keys(job_id)[3])
        pipe.delete(*_keys(job_id), _plan_key(job_id), output_key(job_id), output_budget_key(job_id))
        existed, running, _ = pipe.execute()
        if existed and outcome is not None:
            note = {**outcome, "ended_at": time.time()}
            self.client.set(_outcome_key(job_id), json.dumps(note), ex=self.expires)
        return sorted(int(k) for k in running)

    def outcome(self, job_id: str) -> dict[str, Any] | None:
        """How a job whose ledger is gone ended, if its producer said so (see :meth:`delete`)."""
        raw = self.client.get(_outcome_key(job_id))
        return json.loads(raw) if raw else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
