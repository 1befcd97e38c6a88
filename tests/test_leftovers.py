"""Nothing left behind: however a job ends, Redis keeps only its documented status record.

The record is ``distloop:job:<id>:outcome`` (how the job ended, for `distloop status`),
which expires after ``result_expires`` (a day). Everything else of the job goes: its
ledger, its messages (queued, or taken by a worker that was killed and never
acknowledged: kombu's ``unacked``), and no ``celery-task-meta-*`` result of a revoked chunk.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from distloop.backends.queue import UNACKED_INDEX_KEY, UNACKED_KEY, job_chunk_indices
from distloop.tasks.core import defaults
from tests.conftest import Workers, wait_until
from tests.jobrun import Producer, open_gate

pytestmark = [pytest.mark.integration, pytest.mark.faults]

#: Keys that belong to no job: Celery's bindings, the workers' heartbeats.
NOT_A_JOB = ("_kombu.binding", "distloop:worker:")


def keys_of(client: redis.Redis) -> set[str]:
    return {key.decode() for key in client.scan_iter(count=1000)}


def assert_only_the_record_left(client: redis.Redis, job_id: str, before: set[str], ending: str) -> None:
    # Workers write asynchronously (an acknowledgement, a revoked chunk's state): let them.
    time.sleep(3)
    after = keys_of(client)
    new = sorted(k for k in after - before if not k.startswith(NOT_A_JOB))
    unacked = job_chunk_indices(client.hvals(UNACKED_KEY), job_id)
    ttl = client.ttl(f"distloop:job:{job_id}:outcome")
    print(f"\n{ending}: new keys {new}, unacked entries of the job {sorted(unacked)}, outcome TTL {ttl} s")
    assert new == [f"distloop:job:{job_id}:outcome"]
    assert 0 < ttl <= defaults.RESULT_EXPIRES
    assert not unacked
    assert not [k for k in after if k.startswith("celery-task-meta-")]
    assert client.zcard(UNACKED_INDEX_KEY) == client.hlen(UNACKED_KEY)


@pytest.fixture
def gated(workers: Workers, tmp_path: Path) -> Path:
    (tmp_path / "gate-at").write_text("16")
    return tmp_path


def run_args(*extra: str) -> list[str]:
    return ["tests.workloads:gated", "--range", "0:160", "--chunk-size", "4", "--no-progress", *extra]


@pytest.mark.parametrize("ending", ["done", "failed", "cancelled", "worker-killed"])
def test_a_finished_job_leaves_only_its_status_record(workers: Workers, gated: Path, ending: str) -> None:
    env = {"DISTLOOP_TEST_DIR": str(gated)}
    victim = workers.start(concurrency=2, hostname="victim@%h", extra_env=env)
    if ending in ("cancelled", "worker-killed"):  # two workers: a revoke reaches one not running the chunk
        workers.start(concurrency=2, hostname="survivor@%h", extra_env=env)
    client = workers.settings.redis_client()
    wait_until(lambda: list(client.scan_iter(match="distloop:worker:*")), 30, "workers announced")
    before = keys_of(client)
    target = "tests.workloads:fail_at_7" if ending == "failed" else None
    args = run_args() if target is None else [target, "--range", "0:160", "--chunk-size", "4", "--no-progress"]
    producer = Producer(workers, *args)
    try:
        job_id = producer.job_id()
        if ending in ("cancelled", "worker-killed"):
            running = f"distloop:job:{job_id}:running"
            wait_until(lambda: client.hlen(running) >= 2, 60, "chunks running")
            if ending == "cancelled":
                producer.signal(signal.SIGINT)
            else:
                hosts = {v.decode() for v in client.hvals(running)}
                assert any("victim@" in h for h in hosts), hosts
                victim.send_signal(signal.SIGKILL)  # holding chunks: their messages stay unacknowledged
                wait_until(lambda: client.hlen(UNACKED_KEY) >= 1, 10, "messages held")
                open_gate(gated)
        elif ending == "done":
            open_gate(gated)
        code, _ = producer.finish()
    finally:
        producer.stop()
    assert code == {"done": 0, "failed": 1, "cancelled": 130, "worker-killed": 0}[ending], producer.lines
    assert_only_the_record_left(client, job_id, before, ending)
