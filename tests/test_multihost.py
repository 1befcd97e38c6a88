"""Many hosts, simulated with network namespaces: Redis on one, workers on others.

Each worker host is its own namespace with its own address; the producer runs
in the root namespace and reaches Redis over the lab's bridge only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distloop.tasks.core.settings import ENV_BROKER
from distloop.tasks.store.jobs import JobStore
from tests.multihost import MultiHost, clean_env, scale_run
from tests.netlab import ROOT, NetLab, can_make_namespaces, distloop_argv
from tests.workloads import ENV_SLOWDOWN

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ITEM_S = 0.05  # tests.workloads:sleep_square sleeps this long per item


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[MultiHost]:
    """A lab with a password-protected Redis on its own host; tests add worker hosts."""
    reason = can_make_namespaces()
    if reason:
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    lab = NetLab().open()
    deployment = MultiHost(lab, tmp_path)
    try:
        deployment.start_redis()
        yield deployment
    finally:
        deployment.close()


def test_chunks_run_on_both_worker_hosts(cluster: MultiHost) -> None:
    a = cluster.start_worker()
    b = cluster.start_worker()
    report = cluster.run("tests.workloads:sleep_square", "--range", "0:200", "--chunk-size", "5")
    assert report["result"] == [i * i for i in range(200)]
    assert set(report["hosts"]) == {a, b}
    assert sum(h["chunks"] for h in report["hosts"].values()) == report["chunks"] == 40
    assert sum(h["items"] for h in report["hosts"].values()) == 200
    print(f"\nhosts: {json.dumps(report['hosts'])}")
    password = cluster.redis.password if cluster.redis else None
    assert password and password not in cluster.logs_text() + report["_stderr"]


def _running_on(store: JobStore, worker: str) -> tuple[str, set[int]] | None:
    """(job id, chunk indices) that ``worker`` is running now, if any."""
    for key in store.client.scan_iter(match="distloop:job:*:running"):
        job_id = key.decode().split(":")[2]
        mine = {i for i, info in store.running(job_id).items() if info.get("host") == worker}
        if mine:
            return job_id, mine
    return None


def test_job_survives_a_worker_host_killed_mid_job(cluster: MultiHost) -> None:
    victim, survivor = cluster.start_worker(), cluster.start_worker()
    items, chunk = 400, 10
    chunk_s = chunk * ITEM_S
    assert cluster.redis is not None
    store = JobStore(cluster.redis.client(), 3600)
    argv = distloop_argv("run", "tests.workloads:sleep_square", "--range", f"0:{items}", "--chunk-size", str(chunk))
    producer = subprocess.Popen(
        [*argv, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True,
        env=clean_env(**{ENV_BROKER: cluster.url}),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        running = None
        while running is None and time.monotonic() < deadline:
            # Mid-job: some chunks done, and the victim busy with others.
            running = _running_on(store, victim)
            if running is not None and len(store.finished_indices(running[0])) < 4:
                running = None
            time.sleep(0.02)
        assert running is not None, "the victim host never started a chunk"
        job_id, lost = running
        process = cluster.workers[victim][1]
        process.send_signal(signal.SIGKILL)  # the whole group: main process and its pool
        killed = time.monotonic()
        process.popen.wait(timeout=10)
        gone_by = time.monotonic() + 5  # the kernel finishes off the pool processes in a moment
        while _group_alive(process.pid) and time.monotonic() < gone_by:
            time.sleep(0.05)
        assert not _group_alive(process.pid), "a process of the killed worker survived"

        # Recovery: every chunk the dead host was running has a result again (or the
        # job finished, which needs them all; the producer then drops the ledger).
        bound = 60 + chunk_s

        def recovered() -> bool:
            return producer.poll() is not None or lost <= store.finished_indices(job_id)

        while not recovered() and time.monotonic() - killed < bound:
            time.sleep(0.05)
        recovered_s = time.monotonic() - killed
        assert recovered(), f"chunks {sorted(lost)} were lost with the host and not run again within {bound:.0f} s"
        out, err = producer.communicate(timeout=bound + items * ITEM_S)
        done_s = time.monotonic() - killed
    finally:
        if producer.poll() is None:
            os.killpg(producer.pid, signal.SIGKILL)
            producer.wait()
        store.client.close()
    assert producer.returncode == 0, err[-2000:]
    report = json.loads(out)
    assert report["result"] == [i * i for i in range(items)]
    assert survivor in report["hosts"]
    assert recovered_s <= bound
    print(
        f"\nkilled {victim} while it ran chunks {sorted(lost)}; they completed on {survivor}"
        f" {recovered_s:.1f} s after the kill; job done {done_s:.1f} s after the kill;"
        f" hosts {json.dumps(report['hosts'])}"
    )


def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs (zombies awaiting their reaper do not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_sleeping_chunks_scale_with_worker_hosts(cluster: MultiHost) -> None:
    """1, 2 and 4 worker hosts: wall time falls nearly in proportion (generous bounds)."""
    walls: dict[int, float] = {}
    for hosts in (1, 2, 4):
        while len(cluster.workers) < hosts:
            cluster.start_worker()
        report = scale_run(cluster)
        assert len(report["hosts"]) == hosts
        walls[hosts] = report["wall_s"]
    print(f"\nwall time by worker hosts (2 processes each): {walls}")
    assert walls[1] / walls[2] > 1.4
    assert walls[1] / walls[4] > 2.0


def test_a_straggling_chunk_is_sent_again_and_counted_once(cluster: MultiHost) -> None:
    """One host ten times slower: its chunk, still running when the fast host runs dry, goes again.

    12 chunks of 5 items: on the fast host 0.25 s each (2 processes drain the job in
    about 1.5 s), on the slow host 2.5 s each. The slow host's chunks are the job's
    stragglers; each is re-sent to the idle fast host, the first result is kept, the
    other copy revoked, and each chunk counted once.
    """
    fast = cluster.start_worker()
    slow = cluster.start_worker(env={ENV_SLOWDOWN: "10"})
    report = cluster.run("tests.workloads:sleep_square_host", "--range", "0:60", "--chunk-size", "5")
    assert report["result"] == [i * i for i in range(60)]
    assert report["chunks"] == 12
    # Counted once: every chunk has exactly one result, from one host or the other.
    assert sum(h["chunks"] for h in report["hosts"].values()) == 12
    assert sum(h["items"] for h in report["hosts"].values()) == 60
    assert set(report["hosts"]) <= {fast, slow}
    assert cluster.redis is not None
    client = cluster.redis.client()
    try:
        outcome = JobStore(client, 3600).outcome(report["job_id"])
        assert outcome is not None and outcome["state"] == "done"
        copies = outcome.get("copies", [])
        assert copies, f"no chunk was sent again; hosts {json.dumps(report['hosts'])}"
        # Revoked copies leave no Celery result behind (the chunks' results travel in the ledger).
        assert not list(client.scan_iter(match="celery-task-meta-*"))
    finally:
        client.close()
    print(f"\nchunks sent twice: {copies}; hosts {json.dumps(report['hosts'])}; wall {report['wall_s']:.2f} s")
