"""Loops that wait: ``async def`` targets on every backend, threads-pool workers and their queue.

Celery tests run real prefork (and threads-pool) workers; the user's own async code
runs from a project folder outside the repository.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distloop import CeleryExecutor, Pool, run_loop
from distloop.api import run_job
from distloop.tasks.core import defaults
from distloop.tasks.store.lease import lease_key
from distloop.tasks.store.workers import live_workers
from distloop.worker.processes import ManagedProcess
from distloop.worker.redis_server import RedisServer
from tests import workloads
from tests.conftest import ROOT, Workers, run_cli, settings_for, wait_until
from tests.multihost import clean_env
from tests.netlab import distloop_argv
from tests.user_project import build_project, run_in, user_env, venv_command

pytestmark = pytest.mark.integration

SQUARES = [i * i for i in range(40)]


def broker_env(workers: Workers) -> dict[str, str]:
    return {"DISTLOOP_BROKER_URL": workers.settings.effective_broker_url}


def run_json(workers: Workers, *args: str) -> tuple[int, dict]:
    done = run_cli("run", *args, "--json", env=broker_env(workers))
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


# --- item 1: async def targets on the celery backend, real workers ---


def test_async_target_results_in_loop_order_on_celery(shared_workers: Workers) -> None:
    code, report = run_json(shared_workers, "tests.workloads:async_square", "--range", "0:40", "--chunk-size", "8")
    assert code == 0
    assert report["result"] == SQUARES  # odd items finish first; results stay in loop order
    assert report["chunks"] == 5


def test_async_failing_item_fails_alone_on_celery(shared_workers: Workers) -> None:
    code, report = run_json(shared_workers, "tests.workloads:async_fail_at_7", "--range", "0:40",
                            "--chunk-size", "10", "--on-error", "collect")  # fmt: skip
    assert code == 1
    assert report["result"] == [None if i == 7 else i for i in range(40)]
    assert [(e["index"], e["type"], e["message"]) for e in report["errors"]] == [(7, "ValueError", "bad item 7")]
    assert "raise ValueError" in report["errors"][0]["traceback"]


def test_async_first_failure_raises_as_for_plain_functions_on_celery(shared_workers: Workers) -> None:
    done = run_cli("run", "tests.workloads:async_fail_at_7", "--range", "0:40", "--chunk-size", "10",
                   env=broker_env(shared_workers))  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "distloop run: error: f(7) raised ValueError: bad item 7"


def test_async_io_concurrency_bounds_the_items_awaited_at_once(shared_workers: Workers) -> None:
    code, report = run_json(shared_workers, "tests.workloads:async_in_flight", "--range", "0:60",
                            "--chunk-size", "30", "--io-concurrency", "5")  # fmt: skip
    assert code == 0
    assert max(report["result"]) == 5  # a chunk of 30 items, never more than 5 awaited at once


def test_async_reduce_and_output_on_celery(shared_workers: Workers, tmp_path: Path) -> None:
    code, report = run_json(shared_workers, "tests.workloads:async_square", "--range", "0:40", "--reduce", "sum")
    assert code == 0 and report["result"] == sum(SQUARES)
    out = tmp_path / "squares.jsonl"
    code, report = run_json(shared_workers, "tests.workloads:async_square", "--range", "0:40",
                            "--chunk-size", "7", "--output", str(out))  # fmt: skip
    assert code == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == SQUARES


def test_async_timeout_cancels_the_pending_coroutines(workers: Workers, tmp_path: Path) -> None:
    workers.start(concurrency=1, extra_env={"DISTLOOP_TEST_DIR": str(tmp_path)})
    code, report = run_json(workers, "tests.workloads:async_stuck_at_3", "--range", "0:10", "--chunk-size", "10",
                            "--timeout", "2", "--on-error", "collect")  # fmt: skip
    assert code == 1
    assert report["result"] == [None if i == 3 else i for i in range(10)]
    assert [(e["index"], e["type"]) for e in report["errors"]] == [(3, "Timeout")]
    # The stuck coroutine was cancelled (it wrote its marker on CancelledError), not left
    # for the hard limit to kill: the same process serves the next job on the same loop.
    assert (tmp_path / "cancelled-3").exists()
    code, report = run_json(workers, "tests.workloads:async_square", "--range", "0:40")
    assert code == 0 and report["result"] == SQUARES
    assert "hard time limit" not in workers.logs()


def test_cancelling_the_job_stops_its_pending_coroutines(workers: Workers, tmp_path: Path) -> None:
    """Ctrl-C on the producer revokes the running chunk: its coroutines never get to finish."""
    workers.start(concurrency=1, extra_env={"DISTLOOP_TEST_DIR": str(tmp_path)})
    producer = subprocess.Popen(
        [sys.executable, "-m", "distloop", "run", "tests.workloads:async_wait_then_mark", "--range", "0:20",
         "--chunk-size", "20", "--no-progress"],
        cwd=ROOT, env={**os.environ, **broker_env(workers)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: len(list(tmp_path.glob("started-*"))) == 20, 60, "every item of the chunk awaiting")
        producer.send_signal(signal.SIGINT)
        _, err = producer.communicate(timeout=30)
        assert producer.returncode == 130 and "interrupted" in err, err
    finally:
        if producer.poll() is None:
            producer.kill()
    # Past the point where the items would have finished: none did.
    time.sleep(6)
    assert not list(tmp_path.glob("done-*"))
    code, report = run_json(workers, "tests.workloads:async_square", "--range", "0:40")
    assert code == 0 and report["result"] == SQUARES  # the worker serves the next job


def test_async_job_resumed_after_its_producer_died_keeps_its_bound(
    workers: Workers, redis_server: RedisServer, tmp_path: Path
) -> None:
    workers.start(concurrency=2)
    out = tmp_path / "resumed.jsonl"
    producer = subprocess.Popen(
        [sys.executable, "-m", "distloop", "run", "tests.workloads:async_in_flight_slow", "--range", "0:48",
         "--chunk-size", "4", "--io-concurrency", "2", "--output", str(out), "--no-progress"],
        cwd=ROOT, env={**os.environ, **broker_env(workers)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis_server.client()
    try:

        def checkpointed_job() -> str | None:
            for key in client.scan_iter(match="distloop:job:*"):
                name = key.decode()
                state = client.hget(name, "checkpoint") if name.count(":") == 2 else None
                if state and json.loads(state)["next"] >= 1:
                    return name.split(":")[2]
            return None

        job_id = wait_until(checkpointed_job, 60, "a checkpoint written")
        producer.kill()
        producer.wait(10)
    finally:
        if producer.poll() is None:
            producer.kill()
    assert json.loads(client.hget(f"distloop:job:{job_id}", "io_concurrency")) == 2
    # One producer per job: the killed one's lease must expire before another takes the job.
    wait_until(lambda: not client.exists(lease_key(job_id)), 30, "the killed producer's lease expired")
    resumed = run_cli("resume", job_id, env=broker_env(workers), timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    values = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(values) == 48 and max(values) == 2  # every item, never more than 2 awaited at once
    assert "re-ran" in resumed.stderr


def test_executor_submit_and_map_and_pool_map_take_coroutine_functions(shared_workers: Workers) -> None:
    broker = shared_workers.settings.effective_broker_url
    with CeleryExecutor(broker=broker) as ex:
        assert ex.submit(workloads.async_square, 9).result(timeout=60) == 81
        assert list(ex.map(workloads.async_square, range(40))) == SQUARES
        with pytest.raises(ValueError, match="bad item 7"):
            ex.submit(workloads.async_fail_at_7, 7).result(timeout=60)
    with Pool(2, broker=broker) as pool:
        assert pool.map(workloads.async_square, range(40)) == SQUARES


# --- item 1: the same on the local backends ---


@pytest.mark.parametrize("backend", ["serial", "thread", "process"])
def test_async_target_on_local_backends(backend: str) -> None:
    assert run_loop(workloads.async_square, range(40), backend=backend) == SQUARES
    assert run_loop(workloads.async_square, range(40), backend=backend, reduce="sum") == sum(SQUARES)
    report = run_job(workloads.async_fail_at_7, range(40), backend=backend, on_error="collect")
    assert report.result == [None if i == 7 else i for i in range(40)]
    assert [e["index"] for e in report.errors] == [7]
    bound = run_loop(workloads.async_in_flight, range(30), backend=backend, chunk_size=30, io_concurrency=4)
    assert max(bound) == 4


def test_users_async_function_from_their_project(tmp_path: Path) -> None:
    """``async def`` in the user's own module, run from their folder: embedded cluster and thread backend."""
    project = build_project(tmp_path, {"fetcher.py": """
        import asyncio

        async def fetch(i):
            await asyncio.sleep(0.01)  # Simulating network delay
            return f"Data from item {i}"
    """})  # fmt: skip
    for backend in ("celery", "thread"):
        argv = [venv_command("distloop"), "run", "fetcher:fetch", "--range", "0:30", "--backend", backend, "--json"]
        done = run_in(project, argv, user_env())
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"] == [f"Data from item {i}" for i in range(30)]


# --- item 2: a threads-pool worker and its own queue ---


@pytest.fixture
def cli_workers() -> Iterator[list[ManagedProcess]]:
    started: list[ManagedProcess] = []
    yield started
    for process in started:
        process.stop()


def test_threads_worker_takes_the_jobs_sent_to_its_queue_and_prefork_the_others(
    redis_server: RedisServer, cli_workers: list[ManagedProcess], tmp_path: Path
) -> None:
    env = clean_env()
    for name, options in (("threads", ("--pool", "threads", "--concurrency", "16")), ("prefork", ())):
        argv = distloop_argv("worker", "--broker", redis_server.url, "--hostname", f"{name}@%h",
                             "--allow", "tests.workloads", *options)  # fmt: skip
        with open(tmp_path / f"{name}.log", "ab") as log:
            cli_workers.append(ManagedProcess(f"distloop worker {name}", argv, env=env, cwd=str(ROOT), log=log))
    client = redis_server.client()
    wait_until(lambda: len(live_workers(client)) == 2, 60, "both workers heartbeating")
    pools = {host.split("@")[0]: info["pool"] for host, info in live_workers(client).items()}
    assert pools == {"threads": "threads", "prefork": "prefork"}
    assert "16 threads (threads, queue distloop.threads)" in (tmp_path / "threads.log").read_text()
    url = {"DISTLOOP_BROKER_URL": redis_server.url}

    done = run_cli("run", "tests.workloads:sleep_ms", "--range", "0:64", "--pool", "threads", "--json", env=url)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["result"] == list(range(64))
    assert [h.split("@")[0] for h in report["hosts"]] == ["threads"]  # the prefork worker took none

    done = run_cli("run", "tests.workloads:sleep_ms", "--range", "0:16", "--json", env=url)
    assert done.returncode == 0, done.stderr
    assert [h.split("@")[0] for h in json.loads(done.stdout)["hosts"]] == ["prefork"]


def test_run_pool_threads_starts_an_embedded_threads_worker() -> None:
    done = run_cli("run", "tests.workloads:sleep_ms", "--range", "0:40", "--pool", "threads", "--json",
                   env={"DISTLOOP_ALLOW": "tests.workloads"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["result"] == list(range(40))
    assert report["chunks"] > 2  # spread over the threads, not one chunk per core


def test_a_threads_pool_runs_each_blocking_chunks_items_at_once_in_loop_order() -> None:
    """Fewer messages than threads: a chunk per THREAD_FAN_OUT threads, its items that many at once."""
    env = {"DISTLOOP_ALLOW": "tests.workloads"}
    done = run_cli("run", "tests.workloads:blocking_in_flight", "--range", "0:128", "--pool", "threads", "--json",
                   env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [i for i, _ in report["result"]] == list(range(128))
    slots = defaults.THREAD_WORKERS // defaults.THREAD_FAN_OUT
    assert report["chunks"] >= slots  # the first round: one chunk per THREAD_FAN_OUT threads
    seen = max(n for _, n in report["result"])
    # More than one item per chunk at once (items of one chunk ran side by side), never more than the pool's threads.
    assert slots < seen <= defaults.THREAD_WORKERS, seen

    done = run_cli("run", "tests.workloads:blocking_fail_at_7", "--range", "0:32", "--pool", "threads",
                   "--on-error", "collect", "--json", env=env)  # fmt: skip
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["result"] == [None if i == 7 else i for i in range(32)]
    assert [(e["index"], e["type"]) for e in report["errors"]] == [(7, "ValueError")]

    done = run_cli("run", "tests.workloads:blocking_fail_at_7", "--range", "0:32", "--pool", "threads", "--json",
                   env=env)  # fmt: skip
    assert done.returncode == 1 and "f(7) raised ValueError: bad item 7" in done.stderr, done.stderr


def test_pool_and_io_concurrency_are_refused_clearly() -> None:
    done = run_cli("run", "tests.workloads:sleep_ms", "--range", "0:4", "--pool", "forks")
    assert done.returncode == 2 and "invalid choice: 'forks'" in done.stderr
    done = run_cli("run", "tests.workloads:async_square", "--range", "0:4", "--backend", "serial",
                   "--io-concurrency", "100000")  # fmt: skip
    assert done.returncode == 2 and "--io-concurrency must be between 1 and 1000" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_cli("worker", "--pool", "threads", "--concurrency", "5000", "--broker", "redis://127.0.0.1:1/0")
    assert done.returncode == 2 and "--concurrency 5000 is above the cap of 1000" in done.stderr


def test_threads_backend_thread_count(redis_server: RedisServer) -> None:
    from distloop.backends import get_backend

    assert get_backend("thread").workers == 64
    assert get_backend("thread", workers=3).workers == 3
    assert get_backend("process").workers >= 1
    assert settings_for(redis_server).replace(pool="threads").queue == "distloop.threads"


# --- item 3: distloop bench reports CPU utilisation per backend ---


def test_bench_reports_cpu_utilisation_low_for_waiting_loops(shared_workers: Workers) -> None:
    done = run_cli("bench", "distloop.tasks.demo:fetch_data_blocking", "--range", "0:64",
                   "--backends", "thread,process", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)["backends"]
    for name in ("serial", "thread", "process"):
        assert runs[name]["cores"] >= 1 and runs[name]["cpu_s"] >= 0
        # A sleep uses no CPU however loaded the machine: far under one core's worth.
        assert runs[name]["cpu_util"] < 0.2
    done = run_cli("bench", "distloop.tasks.demo:fetch_data", "--range", "0:200", "--backends", "celery",
                   env=broker_env(shared_workers))  # fmt: skip
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[1].split()
    assert header[-1] == "cpu" and "cpu: CPU time of the threads running f" in done.stdout
