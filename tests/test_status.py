"""`distloop status`: workers, queue depth and a running job's chunks, read from Redis."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from distloop import ChunkFailed, run_job
from distloop.backends.queue import UNACKED_KEY, job_chunk_indices, job_queues, queue_depth, queue_keys
from distloop.tasks.app import make_app
from distloop.tasks.core import defaults
from distloop.tasks.core.settings import Settings
from distloop.tasks.store.jobs import JobStore
from distloop.worker.redis_server import RedisServer
from tests.conftest import Workers, run_cli, wait_until
from tests.jobrun import Producer, open_gate


def status(workers: Workers, *args: str) -> Any:
    return run_cli("status", *args, env={"DISTLOOP_BROKER_URL": workers.settings.effective_broker_url})


@pytest.mark.integration
def test_status_of_a_running_job_in_text_and_json(workers: Workers) -> None:
    workers.start(concurrency=2, hostname=f"status-w-{os.getpid()}@%h")
    job_id = f"statusjob{os.getpid()}"
    finished = threading.Event()

    def run() -> None:
        try:
            # 40 chunks of 10 items x 20 ms on 2 processes: about 4 s, most chunks queued at first.
            run_job("tests.workloads:sleep_ms", range(400), chunk_size=10, settings=workers.settings, job_id=job_id)
        finally:
            finished.set()

    threading.Thread(target=run, daemon=True).start()
    deadline = time.monotonic() + 60
    while True:
        result = status(workers, job_id, "--json")
        if result.returncode == 0:
            snapshot = json.loads(result.stdout)
            # Every chunk accounted for (a hand-off between queue and worker lasts microseconds).
            if snapshot["job"].get("done", 0) >= 1 and snapshot["job"].get("queued", 0) >= 1:
                break
        assert time.monotonic() < deadline and not finished.is_set(), result.stderr
        time.sleep(0.1)

    assert [(w["host"].split("@")[0], w["concurrency"]) for w in snapshot["workers"]] == [
        (f"status-w-{os.getpid()}", 2)
    ]
    assert snapshot["processes"] == 2
    job = snapshot["job"]
    assert (job["items"], job["chunks"], job["chunk_size"], job["failed"]) == (400, 40, 10, 0)
    # Every chunk is done, running, queued, or not yet sent (the dispatch window holds a few per process).
    assert job["done"] + job["running"] + job["queued"] + job["unsent"] == 40
    assert job["running"] <= 2 and job["queued"] >= 1 and job["done"] < 40
    # Depth is read just before the job's counts; no chunk was sent since, and at most one per process
    # is taken by the worker but not started (counted as queued, not in the queue lists).
    assert snapshot["queue"]["depth"] >= job["queued"] - 2

    text = status(workers, job_id)
    assert text.returncode == 0, text.stderr
    assert "workers  1 online, 2 processes" in text.stdout
    assert f"status-w-{os.getpid()}@" in text.stdout and "concurrency 2" in text.stdout
    assert "task events off" in text.stdout  # nobody watches: Flower would switch them on
    assert "400 items in 40 chunks of 10" in text.stdout
    assert "/40 done" in text.stdout and "queued" in text.stdout and "0 failed" in text.stdout
    assert finished.wait(120)

    # A collected job's ledger is gone from Redis; a note of how it ended stays.
    ended = status(workers, job_id)
    assert ended.returncode == 0, ended.stderr
    assert f"job      {job_id}  tests.workloads:sleep_ms  400 items: finished at " in ended.stdout
    assert json.loads(status(workers, job_id, "--json").stdout)["job"]["state"] == "done"
    gone = status(workers, "nosuchjob")
    assert gone.returncode == 2 and "unknown job 'nosuchjob'" in gone.stderr
    idle = json.loads(status(workers, "--json").stdout)
    assert idle["queue"]["depth"] == 0 and "job" not in idle


@pytest.mark.integration
def test_status_says_a_job_failed(shared_workers: Workers) -> None:
    with pytest.raises(ChunkFailed):
        run_job("tests.workloads:fail_at_7", range(20), chunk_size=5, settings=shared_workers.settings,
                job_id="failsjob")  # fmt: skip
    text = status(shared_workers, "failsjob")
    assert text.returncode == 0 and "20 items: stopped before its end (failed) at " in text.stdout, text


def test_status_without_a_broker_exits_3() -> None:
    result = run_cli("status", "--broker", "redis://:secret@127.0.0.1:1/0")
    assert result.returncode == 3
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in result.stderr and "secret" not in result.stderr


@pytest.mark.integration
def test_queue_depth_counts_every_priority_list(redis_server: RedisServer) -> None:
    # kombu keeps one Redis list per priority step; a chunk sent with a priority lands in a sub-list.
    settings = Settings(broker_url=redis_server.url)
    app = make_app(settings)
    try:
        for index, priority in enumerate((0, 4, 9)):
            app.send_task(defaults.CHUNK_TASK, args=("qjob", "distloop.tasks.demo:square", {"index": index}),
                          task_id=f"qjob-{index}", queue=defaults.QUEUE, priority=priority)  # fmt: skip
        app.send_task(defaults.CHUNK_TASK, task_id="otherjob-0", queue=defaults.QUEUE)
    finally:
        app.close()
    client = redis_server.client()
    lists = [key for key in queue_keys() if client.llen(key)]
    assert len(lists) == 3  # the messages really are spread over sub-lists
    assert queue_depth(client) == 4
    found = set().union(*(job_chunk_indices(client.lrange(key, 0, -1), "qjob") for key in queue_keys()))
    assert found == {0, 1, 2}


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["plain", "output", "reduce"])
def test_status_counts_every_chunk_exactly_mid_job(workers: Workers, tmp_path: Path, mode: str) -> None:
    # 1,500 chunks of 4 items. Items below 60 run at once (chunks 0-14); chunks 15 and 16 then hold
    # both worker processes until the gate opens, the rest wait in the queue or are not sent
    # yet (the dispatch window): a job that holds still.
    workers.start(concurrency=2, extra_env={"DISTLOOP_TEST_DIR": str(tmp_path)})
    (tmp_path / "gate-at").write_text("60")
    out = tmp_path / "out.jsonl"
    options = {"plain": [], "output": ["--output", str(out)], "reduce": ["--reduce", "sum"]}[mode]
    producer = Producer(workers, "tests.workloads:gated", "--range", "0:6000", "--chunk-size", "4", "--json",
                        "--no-progress", *options)  # fmt: skip
    try:
        job_id = producer.job_id()
        client = JobStore(workers.settings.redis_client(), 600).client

        def steady() -> bool:
            held = client.hlen(f"distloop:job:{job_id}:running") == 2
            done = int(client.hget(f"distloop:job:{job_id}:counts", "ok") or 0) == 15
            checkpoint = client.hget(f"distloop:job:{job_id}", "checkpoint")
            # --output and --reduce: a checkpoint has dropped the emitted chunks' results.
            trimmed = mode == "plain" or (checkpoint is not None and json.loads(checkpoint)["next"] == 15)
            return held and done and trimmed

        wait_until(steady, 60, "holding still")
        snapshot = json.loads(status(workers, job_id, "--json").stdout)["job"]
        # The ledger and the broker, read by hand: what each chunk is doing.
        keys = [k for q in job_queues() for k in queue_keys(q)]
        waiting = set().union(*(job_chunk_indices(client.lrange(k, 0, -1), job_id) for k in keys))
        waiting |= job_chunk_indices(client.hvals(UNACKED_KEY), job_id)
        running = {int(i) for i in client.hkeys(f"distloop:job:{job_id}:running")}
        sent = int(client.hget(f"distloop:job:{job_id}:counts", "sent"))
        assert running == {15, 16} and sent == max(waiting | running) + 1
        stored = client.hlen(f"distloop:job:{job_id}:results")
        counted = (snapshot["done"], snapshot["running"], snapshot["queued"], snapshot["unsent"], snapshot["failed"])
        print(f"\n{mode}: done, running, queued, not sent, failed = {counted}; results stored {stored}")
        assert counted == (15, 2, len(waiting - running), 1500 - sent, 0) and sent < 1500
        assert snapshot["chunks"] == 1500 and snapshot["lost"] == 0
        if mode != "plain":
            assert stored < 15  # what status counted before: the checkpoint trimmed the results hash
        listing = status(workers)
        print(listing.stdout)
        row = next(line for line in listing.stdout.splitlines() if line.strip().startswith(job_id))
        assert row.split()[1:3] == ["running", "15/1500"] and row.split()[-1] == "tests.workloads:gated", row
        open_gate(tmp_path)
        code, stdout = producer.finish()
        assert code == 0, producer.lines
    finally:
        producer.stop()
    report = json.loads(stdout)
    if mode == "plain":
        assert report["result"] == list(range(6000))
    elif mode == "reduce":
        assert report["result"] == sum(range(6000))
    else:
        assert [json.loads(line) for line in out.read_text().splitlines()] == list(range(6000))
    ended = json.loads(status(workers, job_id, "--json").stdout)["job"]
    assert (ended["state"], ended["done"], ended["chunks"], ended["failed"]) == ("done", 1500, 1500, 0)
