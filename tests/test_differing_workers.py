"""Workers that differ, as during a rolling deploy: a chunk one worker cannot run goes to one that can.

Each worker serves its own copy of a user's project (:mod:`tests.user_project`): the
complete tree has ``myproject.jobs:sleep50b``, the older tree does not; a "strict"
worker serves the complete tree but leaves ``myproject`` off its allow-list. The
producer runs from the complete tree, so its own copy always has the function.
"""

from __future__ import annotations

import json
import socket
import textwrap
import time
from pathlib import Path

import pytest
from celery.utils.nodenames import worker_direct

from distloop import CeleryExecutor, Pool
from distloop.backends import recovery
from distloop.backends.recovery import LostChunks
from distloop.backends.refusals import Refusals
from distloop.resume import resume_job
from distloop.status import job_status
from distloop.tasks.kernel import ChunkResult, ChunkSpec
from distloop.tasks.store.jobs import JobStore
from distloop.tasks.store.workers import announce, live_workers
from distloop.worker.redis_server import RedisServer
from tests import workloads
from tests.conftest import Workers, wait_until
from tests.user_project import ALLOW, FILES, build_project, run_in, user_env, venv_command

TARGET = "myproject.jobs:sleep50b"
ITEMS = 20
#: The complete tree's myproject/jobs.py: the older tree's, and the function the job runs.
COMPLETE_JOBS = textwrap.dedent(FILES["myproject/jobs.py"]) + textwrap.dedent("""

    def sleep50b(i):
        time.sleep(0.05)
        return i * i
""")
MISSING = "'myproject.jobs' has no function 'sleep50b'"
NOT_ALLOWED = f"{TARGET} is not on the workers' allow-list ("


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of the project: complete, and older (no ``sleep50b``)."""
    return (
        build_project(tmp_path / "complete", {"myproject/jobs.py": COMPLETE_JOBS}),
        build_project(tmp_path / "older"),
    )


def start(workers: Workers, name: str, tree: Path, allow: str = ALLOW) -> tuple[str, Path]:
    """A one-process worker called ``name@<this host>`` serving ``tree``; its hostname and its log."""
    hostname = f"{name}@{socket.gethostname()}"
    log = workers.log_path(len(workers.processes))
    workers.start(concurrency=1, hostname=hostname, cwd=tree, extra_env={"DISTLOOP_ALLOW": allow})
    return hostname, log


def run_from(project: Path, workers: Workers) -> tuple[int, str, str, float]:
    """``distloop run TARGET`` in one-item chunks from ``project``: exit code, stdout, stderr, seconds."""
    argv = [venv_command("distloop"), "run", TARGET, "--range", f"0:{ITEMS}", "--chunk-size", "1", "--json"]
    started = time.monotonic()
    done = run_in(project, argv, user_env(DISTLOOP_BROKER_URL=workers.settings.effective_broker_url), timeout=120)
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def assert_handed_over(workers: Workers, project: Path, capable: str, refuser_log: Path, reason: str) -> None:
    code, out, err, _ = run_from(project, workers)
    assert code == 0, err
    report = json.loads(out)
    assert report["result"] == [i * i for i in range(ITEMS)]
    assert report["hosts"] == {capable: {"chunks": ITEMS, "items": ITEMS}}
    # The other worker did take chunks, and refused them: the hand-over happened.
    log = refuser_log.read_text()
    print(f"\nhosts {report['hosts']}; chunks refused by the other worker first: {log.count('refused chunk')}")
    assert "refused chunk" in log and reason in log, log


@pytest.mark.integration
def test_a_chunk_one_worker_cannot_import_runs_on_one_that_can(workers: Workers, trees: tuple[Path, Path]) -> None:
    complete, older = trees
    capable, _ = start(workers, "complete", complete)
    _, older_log = start(workers, "older", older)
    assert_handed_over(workers, complete, capable, older_log, MISSING)


@pytest.mark.integration
def test_a_chunk_one_worker_may_not_run_runs_on_one_that_may(workers: Workers, trees: tuple[Path, Path]) -> None:
    complete, _ = trees
    capable, _ = start(workers, "complete", complete)
    _, strict_log = start(workers, "strict", complete, allow="tasks")
    assert_handed_over(workers, complete, capable, strict_log, NOT_ALLOWED)


@pytest.mark.integration
def test_no_live_worker_can_run_it_fails_fast_naming_each_host(workers: Workers, trees: tuple[Path, Path]) -> None:
    complete, older = trees
    older_host, _ = start(workers, "older", older)
    strict_host, _ = start(workers, "strict", complete, allow="tasks")
    code, _, err, seconds = run_from(complete, workers)
    assert code == 2 and seconds < 30, (code, seconds, err)
    lines = [line for line in err.strip().splitlines() if not line.startswith("distloop: job ")]  # its id first
    assert len(lines) == 1 and "Traceback" not in err, err
    print(f"\nnobody can, {seconds:.1f} s: {lines[0]}")
    assert f"no live worker can run {TARGET}: " in lines[0]
    assert f"{older_host}: {MISSING}" in lines[0] and f"{strict_host}: {NOT_ALLOWED}" in lines[0], lines[0]
    # One worker left, which refuses: the job fails at once, and names it.
    workers.processes.pop(0).stop()
    wait_until(lambda: older_host not in live_workers(workers.settings.redis_client()), 10, "older gone")
    code, _, err, seconds = run_from(complete, workers)
    assert code == 2 and seconds < 30, (code, seconds, err)
    assert f"no live worker can run {TARGET}: {strict_host}: {NOT_ALLOWED}" in err and older_host not in err, err


@pytest.mark.integration
def test_the_facades_get_refused_calls_handed_over_too(workers: Workers) -> None:
    # The refuser allows only distloop's own demo module, not tests.workloads.
    workers.start(concurrency=1, hostname=f"strict@{socket.gethostname()}", extra_env={"DISTLOOP_ALLOW": ""})
    workers.start(concurrency=1, hostname=f"capable@{socket.gethostname()}")
    broker = workers.settings.effective_broker_url
    with CeleryExecutor(broker=broker) as executor:
        assert list(executor.map(workloads.sleep_ms, range(8))) == list(range(8))
    with Pool(broker=broker) as pool:
        assert pool.map(workloads.sleep_ms, range(8)) == list(range(8))
    assert "refused chunk" in workers.log_path(0).read_text()


@pytest.mark.integration
def test_resume_runs_again_a_chunk_whose_stored_result_is_a_refusal(
    workers: Workers, redis_server: RedisServer
) -> None:
    store = JobStore(redis_server.client(), 600)
    meta = {"target": "distloop.tasks.demo:square", "reduce": None, "on_error": "raise", "timeout": None,
            "state": "running", "range": [0, 4, 1], "chunk_size": 2, "items": 4, "chunks": 2}  # fmt: skip
    store.create("refusedjob", meta)
    store.record_plan("refusedjob", [{"index": i, "start": 2 * i, "stop": 2 * i + 2, "step": 1} for i in (0, 1)])
    refusal = ChunkResult(0, fatal={"kind": "target", "message": "no function 'square'"}, host="older@vm")
    store.put_result("refusedjob", 0, refusal.to_wire())
    store.put_result("refusedjob", 1, ChunkResult(1, items=2, values=[4, 9], host="complete@vm").to_wire())
    workers.start(concurrency=1)
    resumed = resume_job("refusedjob", workers.settings)
    assert resumed.report.result == [0, 1, 4, 9] and resumed.rerun_chunks == 1


@pytest.mark.integration
def test_a_chunk_in_a_live_workers_own_queue_is_queued_not_lost(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis_server.client()
    store = JobStore(client, 600)
    store.create("directjob", {"target": "distloop.tasks.demo:square", "chunks": 1})
    announce(client, "b@vm", 1)
    message = {"headers": {"id": "directjob-0"}, "body": ""}
    client.lpush(worker_direct("b@vm").name, json.dumps(message))
    monkeypatch.setattr(recovery, "ORPHAN_GRACE", 0.0)
    finder = LostChunks(store, client, "directjob", {})
    assert finder.find([0], ["b@vm"]) == []
    assert job_status(store, client, "directjob", ["b@vm"])["queued"] == 1
    # Its worker died: nobody will take it from there, so it goes again.
    assert finder.find([0], []) == [0]


def test_refusals_hand_a_chunk_to_a_worker_that_has_not_refused_it() -> None:
    refusals = Refusals(TARGET)
    chunk = ChunkSpec(3, 3, 4)
    refusals.sent([chunk])

    def refused(host: str, kind: str) -> list[ChunkResult]:
        return [ChunkResult(3, fatal={"kind": kind, "message": f"{kind} on {host}"}, host=host)]

    assert refusals.sort(refused("a@vm", "not_allowed")) == []
    assert refusals.hand_over(["a@vm", "b@vm", "c@vm"]) == ([], {"b@vm": [chunk]})
    refusals.sort(refused("b@vm", "not_allowed"))
    assert refusals.hand_over(["a@vm", "b@vm", "c@vm"]) == ([], {"c@vm": [chunk]})
    assert refusals.hosts == {"b@vm", "c@vm"}
    refusals.sort(refused("c@vm", "not_allowed"))
    (failed,), resend = refusals.hand_over(["a@vm", "b@vm", "c@vm"])
    assert resend == {} and failed.index == 3
    assert failed.fatal == {
        "kind": "not_allowed",
        "message": f"no live worker can run {TARGET}: a@vm: not_allowed on a@vm; b@vm: not_allowed on b@vm; "
        "c@vm: not_allowed on c@vm",
    }
    # Settled: a late duplicate refusal is dropped, and a chunk's own answer passes through.
    refusals.sort(refused("a@vm", "target"))
    assert refusals.hand_over(["a@vm"]) == ([], {})
    answer = ChunkResult(3, items=1, values=[9], host="d@vm")
    assert refusals.sort([answer]) == [answer]


def test_one_import_failure_among_the_refusals_makes_it_a_target_error() -> None:
    refusals = Refusals(TARGET)
    refusals.sent([ChunkSpec(0, 0, 1)])
    refusals.sort([ChunkResult(0, fatal={"kind": "not_allowed", "message": "m"}, host="a@vm")])
    refusals.sort([ChunkResult(0, fatal={"kind": "target", "message": "m"}, host="b@vm")])
    (failed,), _ = refusals.hand_over(["a@vm", "b@vm"])
    assert failed.fatal is not None and failed.fatal["kind"] == "target"
    # No live worker at all (heartbeats lapsed): the chunk goes back to the shared queue.
    refusals.sent([ChunkSpec(1, 1, 2)])
    refusals.sort([ChunkResult(1, fatal={"kind": "target", "message": "m"}, host="a@vm")])
    assert refusals.hand_over([]) == ([], {None: [ChunkSpec(1, 1, 2)]})


def test_refusals_prefer_a_host_that_ran_the_job_and_avoid_one_that_refused_it() -> None:
    refusals = Refusals(TARGET)
    chunks = [ChunkSpec(i, i, i + 1) for i in range(3)]
    refusals.sent(chunks)
    refusals.sort([ChunkResult(0, items=1, values=[0], host="c@vm")])
    refusals.sort([ChunkResult(1, fatal={"kind": "target", "message": "m"}, host="a@vm")])
    assert refusals.hand_over(["a@vm", "b@vm", "c@vm"]) == ([], {"c@vm": [chunks[1]]})
    # b never ran a chunk of the job, but a refused one: b is still the better guess than a.
    refusals.sort([ChunkResult(2, fatal={"kind": "target", "message": "m"}, host="c@vm")])
    assert refusals.hand_over(["a@vm", "b@vm", "c@vm"]) == ([], {"b@vm": [chunks[2]]})
