"""``distloop run`` as a user runs it: results, JSON, exit codes, scripts, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, Workers, descendants, run_cli, running

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
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("distloop: job ")]
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
