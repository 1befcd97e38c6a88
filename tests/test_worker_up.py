"""`distloop worker` (one host's worker) and `distloop up` (a standing local cluster)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distloop.tasks.store.workers import live_workers
from distloop.worker.processes import ManagedProcess
from distloop.worker.redis_server import RedisServer
from tests.conftest import ROOT, run_cli
from tests.netlab import distloop_argv

pytestmark = pytest.mark.integration


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTLOOP_")}
    env.update(extra)
    return env


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[ManagedProcess]]:
    """Processes a test starts; each stopped by pid afterwards."""
    processes: list[ManagedProcess] = []
    yield processes
    for process in processes:
        process.stop()


def test_worker_serves_jobs_and_prints_masked_broker_and_allow_list(
    redis_server: RedisServer, started: list[ManagedProcess], tmp_path: Path
) -> None:
    log_path = tmp_path / "worker.log"
    options = ("--concurrency", "2", "--hostname", "cli@%h", "--allow", "tests.workloads")
    argv = distloop_argv("worker", "--broker", redis_server.url, *options)
    with open(log_path, "ab") as log:
        worker = ManagedProcess("distloop worker", argv, env=clean_env(), cwd=str(ROOT), log=log)
    started.append(worker)
    client = redis_server.client()
    worker.wait_for(lambda: any(h.startswith("cli@") for h in live_workers(client)), 60, "heartbeating")
    done = run_cli(
        "run", "tests.workloads:sleep_square", "--range", "0:40", "--chunk-size", "4", "--json",
        env={"DISTLOOP_BROKER_URL": redis_server.url},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["result"] == [i * i for i in range(40)]
    assert [h.split("@")[0] for h in report["hosts"]] == ["cli"]
    text = log_path.read_text()
    assert f"broker redis://:***@127.0.0.1:{redis_server.port}/0" in text
    assert "may run distloop.tasks.demo, tests.workloads" in text
    assert redis_server.password and redis_server.password not in text + done.stderr
    # It became the Celery worker itself: the process we started is the one serving.
    assert live_workers(client)[next(iter(report["hosts"]))]["pid"] == worker.pid


def test_worker_with_a_wrong_password_exits_3_in_one_line(redis_server: RedisServer) -> None:
    url = redis_server.url.replace(redis_server.password or "", "wrong")
    started = time.monotonic()
    done = run_cli("worker", "--broker", url, env=clean_env(), timeout=30)
    assert done.returncode == 3
    assert time.monotonic() - started < 10
    assert (
        done.stderr.strip() == f"distloop worker: error: Redis at {url.replace('wrong', '***')} refused the credentials"
    )


def test_up_runs_jobs_until_ctrl_c_then_stops_everything(started: list[ManagedProcess], tmp_path: Path) -> None:
    env_file, log_path = tmp_path / "up.env", tmp_path / "up.log"
    with open(log_path, "ab") as log:
        up = ManagedProcess(
            "distloop up", distloop_argv("up", "--workers", "2", "--env-file", str(env_file)),
            env=clean_env(), cwd=str(ROOT), log=log,
        )  # fmt: skip
    started.append(up)
    up.wait_for(lambda: "Ctrl-C stops everything" in log_path.read_text(), 60, "up")
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    url = re.search(r"DISTLOOP_BROKER_URL='([^']+)'", env_file.read_text())
    assert url is not None
    for _ in range(2):  # repeated runs on the same cluster
        done = run_cli(
            "run",
            "distloop.tasks.demo:square",
            "--range",
            "0:500",
            "--reduce",
            "sum",
            env={"DISTLOOP_BROKER_URL": url[1]},
        )
        assert done.returncode == 0 and json.loads(done.stdout) == sum(i * i for i in range(500)), done.stderr
    text = log_path.read_text()
    password = url[1].split(":")[2].split("@")[0]
    assert "broker redis://:***@127.0.0.1:" in text and password not in text
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", text)]
    assert len(pids) == 2

    os.kill(up.pid, signal.SIGINT)  # Ctrl-C
    assert up.popen.wait(timeout=30) == 0
    assert "distloop up: stopped" in log_path.read_text()
    assert not env_file.exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_up_with_flower(started: list[ManagedProcess], tmp_path: Path) -> None:
    args = ("up", "--workers", "1", "--flower", "--env-file", str(tmp_path / "up.env"))
    log_path = tmp_path / "up.log"
    with open(log_path, "ab") as log:
        up = ManagedProcess("distloop up", distloop_argv(*args), env=clean_env(), cwd=str(ROOT), log=log)
    started.append(up)
    up.wait_for(lambda: "Ctrl-C stops everything" in log_path.read_text(), 90, "up")
    assert re.search(r"Flower at http://\S+ \(user \S+; password in ", log_path.read_text())
    os.kill(up.pid, signal.SIGINT)
    assert up.popen.wait(timeout=30) == 0


def test_flower_missing_is_one_line_with_the_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import distloop.worker.flower as flower_module
    from distloop.tasks.core.errors import UsageError
    from distloop.tasks.core.settings import Settings
    from distloop.worker.standing import StandingCluster

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flower" else real(name, *a))
    with pytest.raises(UsageError, match=r"^Flower is not installed: pip install 'distloop\[flower\]'$"):
        flower_module.start_flower(Settings())
    cluster = StandingCluster(Settings(), concurrency=1, env_file=tmp_path / "up.env", flower=True)
    with pytest.raises(UsageError, match="Flower is not installed"):
        cluster.start()  # refused before Redis or a worker starts
    assert cluster.redis is None and cluster.worker is None
