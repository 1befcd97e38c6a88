"""``distloop run`` as a user runs it: results, JSON, exit codes, scripts, Ctrl-C."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distloop.backends import get_backend
from distloop.cli.options import join_negative_values
from distloop.ranges import range_length
from distloop.sizing import ChunkPlanner
from distloop.tasks.core import defaults
from distloop.tasks.core.errors import UsageError
from distloop.tasks.core.limits import check_workers, worker_cap
from distloop.tasks.core.settings import Settings
from distloop.worker.embedded import EmbeddedCluster
from distloop.worker.processes import ManagedProcess
from tests.conftest import ROOT, Workers, descendants, run_cli, running
from tests.netlab import distloop_argv

SUM_OF_SQUARES = 333328333350000  # sum(i * i for i in range(100_000))


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["serial", "thread", "process", "celery"])
def test_reduce_sum_json_on_every_backend(backend: str, shared_workers: Workers) -> None:
    broker = ["--broker", shared_workers.settings.effective_broker_url] if backend == "celery" else []
    done = run_cli(
        "run",
        "distloop.tasks.demo:square",
        "--range",
        "0:100000",
        "--reduce",
        "sum",
        "--backend",
        backend,
        "--json",
        *broker,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["result"] == SUM_OF_SQUARES
    assert report["backend"] == backend and report["items"] == 100_000 and report["errors"] == []
    assert {"job_id", "chunks", "wall_s"} <= report.keys()


@pytest.mark.integration
def test_every_backend_gives_the_same_list(shared_workers: Workers) -> None:
    broker = shared_workers.settings.effective_broker_url
    lists = {}
    for backend in ["serial", "thread", "process", "celery"]:
        done = run_cli(
            "run",
            "distloop.tasks.demo:calc_stuff",
            "--range",
            "10:-500:-7",
            "--backend",
            backend,
            "--json",
            "--broker",
            broker,
        )
        assert done.returncode == 0, done.stderr
        lists[backend] = json.loads(done.stdout)["result"]
    assert len(lists["serial"]) == len(range(10, -500, -7))
    assert all(values == lists["serial"] for values in lists.values())


@pytest.mark.integration
def test_output_file_is_json_lines_in_loop_order(shared_workers: Workers, tmp_path: Path) -> None:
    out = tmp_path / "squares.jsonl"
    done = run_cli("run", "distloop.tasks.demo:square", "--range", "0:1000:3", "--output", str(out),
                   "--chunk-size", "10", "--broker", shared_workers.settings.effective_broker_url,
                   "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == str(out)
    assert [json.loads(line) for line in out.read_text().splitlines()] == [i * i for i in range(0, 1000, 3)]


@pytest.mark.integration
def test_script_outside_the_project_on_the_embedded_cluster(tmp_path: Path) -> None:
    script = tmp_path / "myscript.py"
    script.write_text(
        "def triple(i):\n    return 3 * i\n\nif __name__ == '__main__':\n    raise SystemExit('not on import')\n"
    )
    done = run_cli("run", "myscript.py:triple", "--range", "0:50", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["backend"] == "celery" and report["result"] == [3 * i for i in range(50)]
    assert len(report["hosts"]) == 1 and next(iter(report["hosts"])).startswith("embedded-")


@pytest.mark.integration
def test_target_outside_allow_list_is_refused_with_exit_2(shared_workers: Workers) -> None:
    started = time.monotonic()
    done = run_cli(
        "run",
        "distloop.ranges:parse_range",
        "--range",
        "0:5",
        "--broker",
        shared_workers.settings.effective_broker_url,
    )
    assert done.returncode == 2
    assert time.monotonic() - started < 60
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "allow-list" in lines[0] and "distloop.tasks.demo" in lines[0]
    assert "Traceback" not in done.stderr


def test_failing_function_exits_1_with_index_and_remote_traceback() -> None:
    done = run_cli("run", "tests.workloads:fail_at_7", "--range", "0:20", "--backend", "process")
    assert done.returncode == 1
    assert "f(7) raised ValueError: bad item 7" in done.stderr.splitlines()[-1]
    assert "in fail_at_7" in done.stderr  # the remote traceback


@pytest.mark.integration
def test_ctrl_c_stops_everything_it_started_with_exit_130() -> None:
    env = dict(os.environ)
    env.pop("DISTLOOP_BROKER_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "distloop", "run", "tests.workloads:slow", "--range", "0:2000", "--chunk-size", "5"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        started: set[int] = set()
        while time.monotonic() < deadline:  # wait until redis-server and the worker pool run
            started = descendants(proc.pid)
            if len(started) >= 4:
                break
            time.sleep(0.2)
        assert len(started) >= 4, f"cluster did not start: {started}"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert time.monotonic() - sent < 5
        assert "interrupted" in err and "Traceback" not in err
        assert not [pid for pid in started if running(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_range_length_is_len_of_any_range_without_its_limit() -> None:
    for r in (range(10), range(0), range(5, 2), range(-5, 5, 2), range(10, 0, -3), range(0, 10, 3), range(3, -7, -2),
              range(7, 7, -1), range(-10, -20, -4)):  # fmt: skip
        assert range_length(r) == len(r), r
    huge = range(0, 10**20)
    assert range_length(huge) == 10**20
    assert range_length(range(10**20, 0, -7)) == -(-(10**20) // 7)
    assert range_length(range(-(10**30), 10**30, 3)) == -(-2 * 10**30 // 3)
    assert range(0, 10**20)[range_length(huge) - 1] == 10**20 - 1  # the last item is where the length says
    with pytest.raises(OverflowError):  # what range_length is for
        len(huge)


def test_planner_splits_a_range_beyond_2_63_items_lazily() -> None:
    planner = ChunkPlanner(range(0, 10**20), workers=2, cost=1e-7)
    first = list(itertools.islice(iter(planner), 3))
    assert [c.start for c in first] == [0, first[0].stop, first[1].stop]
    assert planner.estimated_chunks() > 10**12
    resumed = ChunkPlanner(range(10**19, 10**20, 5), workers=2, cost=0.0, fixed=1000)
    chunk = next(iter(resumed))
    assert (chunk.start, chunk.stop, chunk.step) == (10**19, 10**19 + 5000, 5)
    assert resumed.estimated_chunks() == -(-range_length(range(10**19, 10**20, 5)) // 1000)


def test_negative_range_values_are_joined_to_their_option() -> None:
    assert join_negative_values(["run", "t:f", "--range", "-5:5:2"]) == ["run", "t:f", "--range=-5:5:2"]
    assert join_negative_values(["run", "--range", "-5", "t:f"]) == ["run", "--range=-5", "t:f"]
    assert join_negative_values(["run", "--range", "0:5", "--json"]) == ["run", "--range", "0:5", "--json"]
    assert join_negative_values(["run", "--range", "--json"]) == ["run", "--range", "--json"]  # argparse says why
    assert join_negative_values(["run", "--", "--range", "-5"]) == ["run", "--", "--range", "-5"]
    assert join_negative_values(["run", "--range"]) == ["run", "--range"]


def test_worker_counts_are_capped_per_cpu_and_in_all() -> None:
    cap = worker_cap()
    assert cap == min(defaults.MAX_WORKERS, defaults.WORKERS_PER_CPU * (os.cpu_count() or 1))
    check_workers(cap)
    check_workers(None)
    for count in (0, -1, cap + 1, 100_000):
        with pytest.raises(UsageError):
            check_workers(count)
    with pytest.raises(UsageError, match="--workers 100000 is above"):
        get_backend("process", Settings(), 100_000)  # refused before a pool exists
    remote = Settings(broker_url="redis://127.0.0.1:1/0")
    assert get_backend("celery", remote, defaults.MAX_WORKERS).requested_workers == defaults.MAX_WORKERS
    with pytest.raises(UsageError, match="above the cap of 1024"):
        get_backend("celery", remote, defaults.MAX_WORKERS + 1)
    with pytest.raises(UsageError):
        EmbeddedCluster(100_000)


def test_negative_range_start_after_a_space_runs() -> None:
    done = run_cli("run", "distloop.tasks.demo:square", "--range", "-5:5:2", "--backend", "serial")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.split()] == [i * i for i in range(-5, 5, 2)]


def _progress_lines(err_path: Path) -> list[str]:
    return [line for line in err_path.read_text().splitlines() if "/100000000000000000000 items" in line]


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["serial", "celery"])
def test_range_beyond_2_63_items_reduces_shows_progress_and_stops_on_ctrl_c(backend: str, tmp_path: Path) -> None:
    """10**20 items: never to finish; it must start, report progress in flat memory, and stop on SIGINT."""
    env = {k: v for k, v in os.environ.items() if k != "DISTLOOP_BROKER_URL"}
    err_path = tmp_path / "stderr"
    argv = [sys.executable, "-m", "distloop", "run", "distloop.tasks.demo:square", "--range", "0:100000000000000000000",
            "--reduce", "sum", "--backend", backend, "--progress-every", "0.5"]  # fmt: skip
    with open(err_path, "w") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(_progress_lines(err_path)) < 3 and proc.poll() is None:
            time.sleep(0.2)
        early = _rss_kb(proc.pid)
        started = descendants(proc.pid)
        while time.monotonic() < deadline and len(_progress_lines(err_path)) < 8 and proc.poll() is None:
            time.sleep(0.2)
        lines = _progress_lines(err_path)
        assert proc.poll() is None and len(lines) >= 8, err_path.read_text()
        assert _rss_kb(proc.pid) - early < 20_000, "the producer's memory grows with the range"
        if backend == "celery":
            assert len(started) >= 3, f"the embedded cluster did not start: {started}"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        text = err_path.read_text()
        assert proc.returncode == 130, text
        assert text.strip().splitlines()[-1] == "distloop run: error: interrupted"
        assert "Traceback" not in text and out == ""
        assert not [pid for pid in started | descendants(proc.pid) if running(pid)]
        print(lines[0], lines[-1], sep="\n")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.integration
def test_up_flower_port_0_finds_a_free_port(tmp_path: Path) -> None:
    with socket.socket() as busy:  # a port in use: --flower-port 0 must not care
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISTLOOP_")}
        log_path = tmp_path / "up.log"
        args = ("up", "--workers", "1", "--flower", "--flower-port", "0", "--env-file", str(tmp_path / "up.env"))
        with open(log_path, "ab") as log:
            up = ManagedProcess("distloop up", distloop_argv(*args), env=env, cwd=str(ROOT), log=log)
        try:
            up.wait_for(lambda: "Ctrl-C stops everything" in log_path.read_text(), 90, "up")
            found = re.search(r"Flower at http://127\.0\.0\.1:(\d+) ", log_path.read_text())
            assert found is not None, log_path.read_text()
            assert int(found[1]) not in (0, taken)
            os.kill(up.pid, signal.SIGINT)
            assert up.popen.wait(timeout=30) == 0
        finally:
            up.stop()
