"""A user's own project, outside the repository: every form of target, every backend, every kind of worker.

The project folder (see :mod:`tests.user_project`) holds ``tasks.py``, ``worker.py``
and ``producer.py`` beside its package and scripts; distloop runs from there with
the console script on the PATH, as its user would run it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from distloop.tasks.store.workers import live_workers
from distloop.worker.processes import ManagedProcess
from distloop.worker.redis_server import RedisServer
from tests.user_project import ALLOW, API_EXPECTED, TARGETS, build_project, run_in, user_env, venv_command

pytestmark = pytest.mark.integration

BACKENDS = ("serial", "thread", "process", "celery")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_project(tmp_path_factory.mktemp("myproject-home"))


def run_target(project: Path, target: str, *args: str, env: dict[str, str] | None = None) -> dict:
    done = run_in(project, [venv_command("distloop"), "run", target, "--range", "0:6", *args, "--json"],
                  env or user_env())  # fmt: skip
    assert done.returncode == 0, f"{target} {args}: {done.stderr}"
    return json.loads(done.stdout)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("target", list(TARGETS))
def test_each_target_form_on_each_backend_from_the_project_folder(project: Path, target: str, backend: str) -> None:
    report = run_target(project, target, "--backend", backend, "--chunk-size", "2")
    assert report["result"] == [TARGETS[target](i) for i in range(6)]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_python_api_and_facades_from_a_script_in_the_project(project: Path, backend: str) -> None:
    done = run_in(project, [sys.executable, "run_api.py", backend], user_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    expected = dict(API_EXPECTED)
    if backend != "celery":
        del expected["joblib"], expected["Parallel"]  # joblib's calling convention runs on Celery workers
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected


@pytest.fixture(scope="module")
def remote_workers(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, list[str]]]:
    """Two workers started in the project folder: ``distloop worker``, and plain ``celery -A distloop.tasks worker``.

    One process each, so the same pool process runs one job's target after another's.
    """
    from distloop.worker.redis_server import start_redis

    server = start_redis()
    logs = tmp_path_factory.mktemp("remote-worker-logs")
    env = user_env(DISTLOOP_BROKER_URL=server.url, DISTLOOP_ALLOW=ALLOW)
    argvs = {
        "dl@%h": [venv_command("distloop"), "worker", "--concurrency", "1", "--hostname", "dl@%h"],
        "plain@%h": [venv_command("celery"), "-A", "distloop.tasks", "worker", "-c", "1", "-n", "plain@%h",
                     "-l", "warning"],
    }  # fmt: skip
    processes = []
    try:
        for name, argv in argvs.items():
            with open(logs / f"{name.split('@')[0]}.log", "ab") as log:
                processes.append(ManagedProcess(name, argv, env=env, cwd=str(project), log=log))
        client = server.client()
        for process, name in zip(processes, argvs, strict=True):
            prefix = name.split("@")[0] + "@"
            process.wait_for(lambda p=prefix: any(h.startswith(p) for h in live_workers(client)), 60, "heartbeating")
        hosts = sorted(live_workers(client))
        yield server, hosts
    finally:
        for process in processes:
            process.stop()
        server.stop()


@pytest.mark.slow
def test_every_form_on_remote_workers_started_in_the_project_folder(
    project: Path, remote_workers: tuple[RedisServer, list[str]]
) -> None:
    server, hosts = remote_workers
    env = user_env(DISTLOOP_BROKER_URL=server.url)
    # Scripts first: what they did to the pool processes' import path must not change
    # how the module targets after them resolve (scripts/tasks.py stays out of the way).
    for target in ("scripts/job.py:f", "jobs.py:f", "tasks:f", "myproject.jobs:f"):
        report = run_target(project, target, "--chunk-size", "1", env=env)
        assert report["result"] == [TARGETS[target](i) for i in range(6)], target
    spread = run_in(project, [venv_command("distloop"), "run", "myproject.jobs:slow", "--range", "0:60",
                              "--chunk-size", "2", "--json"], env)  # fmt: skip
    assert spread.returncode == 0, spread.stderr
    assert sorted(json.loads(spread.stdout)["hosts"]) == hosts  # both kinds of worker ran chunks
    done = run_in(project, [sys.executable, "run_api.py", "celery"], env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == API_EXPECTED


def test_nothing_of_distloop_is_importable_by_the_old_top_level_names(project: Path) -> None:
    probe = "import importlib.util as u; print([n for n in ('tasks', 'worker', 'producer') if u.find_spec(n)])"
    done = run_in(Path("/"), [sys.executable, "-c", probe], user_env())
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
    version = run_in(project, [venv_command("distloop"), "--version"], user_env())
    assert version.returncode == 0 and version.stdout.startswith("distloop "), version.stdout
    module = run_in(project, [sys.executable, "-m", "distloop", "--version"], user_env())
    assert module.stdout == version.stdout
