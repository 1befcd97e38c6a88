"""Start-up: a standing cluster (``distloop up``) found and reused, and the embedded cluster's own start.

A user's project folder (outside the repository) and a private HOME: ``distloop up``
runs there as a real subprocess, writes ``~/.distloop/up.env``, and ``distloop run``
and the facades from that folder use its workers without starting any; once it is
stopped they start the embedded cluster again.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from distloop.worker.discover import read_env_file
from distloop.worker.flower import ENV_FLOWER_AUTH, parse_basic_auth
from distloop.worker.processes import ManagedProcess
from tests.conftest import Workers, descendants, running, wait_until
from tests.user_project import API_EXPECTED, build_project, run_in, user_env, venv_command

pytestmark = pytest.mark.integration

#: A script of the project: each facade reports the hostname of the worker that ran its calls.
HOSTS_SCRIPT = """
    import json

    import joblib
    from celery import current_task

    import distloop


    def host(i):
        return current_task.request.hostname


    if __name__ == "__main__":
        out = {}
        with distloop.CeleryExecutor() as executor:
            out["executor"] = sorted(set(executor.map(host, range(8))))
        with distloop.Pool() as pool:
            out["pool"] = sorted(set(pool.map(host, range(8))))
        distloop.register_joblib()
        with joblib.parallel_config(backend="distloop"):
            out["joblib"] = sorted(set(joblib.Parallel(n_jobs=-1)(joblib.delayed(host)(i) for i in range(8))))
        print(json.dumps(out))
"""

USING = "distloop: using the standing cluster at redis://:***@127.0.0.1:"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return build_project(tmp_path / "myproject", {"hosts.py": HOSTS_SCRIPT})


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def started() -> Iterator[list[ManagedProcess]]:
    processes: list[ManagedProcess] = []
    yield processes
    for process in processes:
        process.stop()


def run_json(project: Path, env: dict[str, str], *args: str, target: str = "tasks:f") -> tuple[dict, str]:
    done = run_in(project, [venv_command("distloop"), "run", target, "--range", "0:12", *args, "--json"], env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def test_run_and_the_facades_reuse_distloop_up_then_fall_back_to_embedded(
    project: Path, home: Path, started: list[ManagedProcess], tmp_path: Path
) -> None:
    env = user_env(HOME=str(home))
    log_path = tmp_path / "up.log"
    with open(log_path, "ab") as log:  # no --allow: the project's modules are allowed as on the embedded cluster
        up = ManagedProcess("distloop up", [venv_command("distloop"), "up", "--workers", "2"], env=env,
                            cwd=str(project), log=log)  # fmt: skip
    started.append(up)
    up.wait_for(lambda: "Ctrl-C stops everything" in log_path.read_text(), 90, "up")
    env_file = home / ".distloop" / "up.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    password = re.search(r"DISTLOOP_BROKER_URL='redis://:([0-9a-f]+)@", env_file.read_text())
    assert password is not None
    up_pids = descendants(up.pid)
    standing = f"up-{up.pid}@"

    report, err = run_json(project, env)
    assert report["result"] == [["tasks", i + 100] for i in range(12)]
    assert report["hosts"] and all(h.startswith(standing) for h in report["hosts"]), report["hosts"]
    lines = [line for line in err.splitlines() if line.startswith("distloop: using")]
    assert len(lines) == 1 and lines[0].startswith(USING) and str(env_file) in lines[0], err
    assert password[1] not in err

    done = run_in(project, [sys.executable, "hosts.py"], env, timeout=180)
    assert done.returncode == 0, done.stderr
    hosts = json.loads(done.stdout)
    assert set(hosts) == {"executor", "pool", "joblib"}
    assert all(len(h) == 1 and h[0].startswith(standing) for h in hosts.values()), hosts
    assert USING in done.stderr and password[1] not in done.stderr
    done = run_in(project, [sys.executable, "run_api.py", "celery"], env, timeout=180)
    assert done.returncode == 0 and json.loads(done.stdout) == API_EXPECTED, done.stderr
    assert descendants(up.pid) == up_pids  # the same workers served every job

    # The switch: a private cluster all the same, without a word about the standing one.
    report, err = run_json(project, env, "--embedded")
    assert all(h.startswith("embedded-") for h in report["hosts"]) and "standing" not in err
    report, err = run_json(project, {**env, "DISTLOOP_STANDING": "0"})
    assert all(h.startswith("embedded-") for h in report["hosts"]) and "standing" not in err

    os.kill(up.pid, signal.SIGINT)  # Ctrl-C, by its pid
    assert up.popen.wait(timeout=30) == 0
    assert not env_file.exists()
    assert not [pid for pid in up_pids if running(pid)]
    report, err = run_json(project, env)
    assert all(h.startswith("embedded-") for h in report["hosts"]), report["hosts"]
    assert "standing" not in err


def write_env_file(path: Path, url: str, project: Path, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"export DISTLOOP_BROKER_URL='{url}'\nexport DISTLOOP_UP_PROJECT='{project}'\n")
    path.chmod(mode)


def test_an_env_file_others_may_write_is_ignored_with_one_warning(
    project: Path, home: Path, shared_workers: Workers
) -> None:
    url = shared_workers.settings.effective_broker_url
    env_file = home / "elsewhere.env"
    env = user_env(HOME=str(home), DISTLOOP_ENV_FILE=str(env_file))
    write_env_file(env_file, url, project, 0o644)
    demo = "distloop.tasks.demo:square"  # what the shared workers (started in the repository) can import
    report, err = run_json(project, env, target=demo)
    assert all(h.startswith("embedded-") for h in report["hosts"]), report["hosts"]
    assert [line for line in err.splitlines() if str(env_file) in line] == [
        f"distloop: ignoring {env_file}: its mode is 644, not 600: chmod 600 it"
    ]
    # The same file, its owner's alone: its (live) workers are used.
    env_file.chmod(0o600)
    report, err = run_json(project, env, target=demo)
    assert report["result"] == [i * i for i in range(12)]
    assert report["hosts"] and not any(h.startswith("embedded-") for h in report["hosts"]), report["hosts"]
    assert USING in err and (shared_workers.settings.broker_url or "").split("@")[0] not in err


def test_a_stale_env_file_falls_back_to_embedded_in_one_line(project: Path, home: Path) -> None:
    env_file = home / ".distloop" / "up.env"
    write_env_file(env_file, "redis://:secret@127.0.0.1:1/0", project, 0o600)  # nobody listens on port 1
    started = time.monotonic()
    report, err = run_json(project, user_env(HOME=str(home)))
    assert time.monotonic() - started < 60
    assert all(h.startswith("embedded-") for h in report["hosts"])
    assert [line for line in err.splitlines() if "standing" in line] == [
        f"distloop: the standing cluster of {env_file} does not answer (ConnectionError): starting an embedded cluster"
    ]
    assert "secret" not in err


def test_a_worker_that_dies_starting_fails_the_job_in_one_line_leaving_nothing(tmp_path: Path) -> None:
    # Celery's worker reads CELERY_WORKER_* options from the environment: this one it refuses.
    env = user_env(CELERY_WORKER_AUTOSCALE="not-a-number", DISTLOOP_STANDING="0")
    proc = subprocess.Popen([venv_command("distloop"), "run", "tasks:f", "--range", "0:10"],
                            cwd=build_project(tmp_path / "p"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    seen: set[int] = set()
    while proc.poll() is None:
        seen |= descendants(proc.pid)
        time.sleep(0.01)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distloop run: error: the embedded worker exited with code 2 before")
    assert seen and not [pid for pid in seen if running(pid)]


def test_ctrl_c_while_the_embedded_worker_starts_leaves_nothing_running(tmp_path: Path) -> None:
    proc = subprocess.Popen([venv_command("distloop"), "run", "tasks:f", "--range", "0:10", "--embedded"],
                            cwd=build_project(tmp_path / "p"), env=user_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        # redis-server and the worker's main process run; its pool is not there yet.
        def cluster_spawned() -> set[int] | None:
            found = descendants(proc.pid)
            return found if len(found) >= 2 else None

        spawned = wait_until(cluster_spawned, 30, "cluster spawned", interval=0.005)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        wait_until(lambda: not [pid for pid in spawned | descendants(proc.pid) if running(pid)], 10, "all gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_up_writes_the_flower_credentials_distloop_flower_reads(started: list[ManagedProcess], tmp_path: Path) -> None:
    env_file, log_path = tmp_path / "up.env", tmp_path / "up.log"
    argv = [
        venv_command("distloop"),
        "up",
        "--workers",
        "1",
        "--flower",
        "--flower-port",
        "0",
        "--env-file",
        str(env_file),
    ]
    with open(log_path, "ab") as log:
        up = ManagedProcess("distloop up", argv, env=user_env(HOME=str(tmp_path)), cwd=str(tmp_path), log=log)
    started.append(up)
    up.wait_for(lambda: "Ctrl-C stops everything" in log_path.read_text(), 90, "up")
    values = read_env_file(env_file)
    assert values is not None and "DISTLOOP_FLOWER_USER" not in values and "DISTLOOP_FLOWER_PASSWORD" not in values
    user, password = parse_basic_auth(values[ENV_FLOWER_AUTH])  # what `distloop flower` reads
    found = re.search(r"Flower at (http://\S+) \(user (\S+);", log_path.read_text())
    assert found is not None and found[2] == user and password not in log_path.read_text()

    def get(auth: str | None) -> int:
        request = urllib.request.Request(found[1] + "/api/workers")
        if auth:
            request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert get(values[ENV_FLOWER_AUTH]) == 200 and get(None) == 401
    os.kill(up.pid, signal.SIGINT)
    assert up.popen.wait(timeout=30) == 0
