"""The wire is locked down: JSON only, functions by allowed name only, no password printed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from celery import Celery

from distloop import run_job
from distloop.tasks.app import make_app
from distloop.tasks.core import defaults
from distloop.tasks.store.jobs import JobStore
from distloop.worker.redis_server import RedisServer
from tests.conftest import Workers, run_cli

pytestmark = pytest.mark.integration


class OpensAFile:
    """Unpickling this creates a file: the side effect that must never happen on a worker."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def wait_for_log(workers: Workers, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in workers.logs():
            return workers.logs()
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the worker log:\n{workers.logs()}")


@pytest.fixture
def guarded_workers(workers: Workers, tmp_path: Path) -> Workers:
    workers.start(concurrency=1, extra_env={"DISTLOOP_TEST_DIR": str(tmp_path)})
    return workers


def test_pickle_message_is_rejected_and_nothing_in_it_runs(guarded_workers: Workers, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    attacker = Celery("attacker", broker=guarded_workers.settings.effective_broker_url, set_as_current=False)
    attacker.conf.update(accept_content=["pickle", "json"], task_serializer="pickle")
    attacker.send_task(defaults.CHUNK_TASK, args=(OpensAFile(str(marker)),), queue=defaults.QUEUE, serializer="pickle")
    attacker.close()
    log = wait_for_log(guarded_workers, "Refusing to deserialize untrusted content of type pickle")
    assert "ContentDisallowed" in log or "untrusted content" in log
    assert not marker.exists(), "the pickle was loaded on a worker"
    # The worker dropped the message and still serves.
    report = run_job("tests.workloads:slow", range(6), backend="celery", settings=guarded_workers.settings)
    assert report.result == list(range(6))


@pytest.mark.parametrize("target", ["os:system", "tests.evil_import:f"])
def test_message_naming_a_function_outside_the_allow_list_is_refused_unimported(
    guarded_workers: Workers, redis_server: RedisServer, tmp_path: Path, target: str
) -> None:
    store = JobStore(redis_server.client(), 600)
    store.create("intruder", {"target": target})
    app = make_app(guarded_workers.settings)
    touched = tmp_path / "touched"
    spec = {"index": 0, "calls": [[[f"touch {touched}"], {}]]}
    app.send_task(defaults.CHUNK_TASK, args=("intruder", target, spec, None, "raise"), queue=defaults.QUEUE)
    app.close()
    wait_for_log(guarded_workers, "refused chunk 0 of job intruder")
    result = store.results("intruder", [0])[0]
    assert result is not None and result["fatal"]["kind"] == "not_allowed"
    assert not touched.exists(), "os.system ran"
    assert not (tmp_path / "evil-imported").exists(), "the refused module was imported"


def test_passwords_are_never_printed(shared_workers: Workers, shared_redis: RedisServer) -> None:
    broker = shared_workers.settings.effective_broker_url
    assert shared_redis.password and shared_redis.password in broker
    done = run_cli("run", "distloop.tasks.demo:square", "--range", "0:20", "--broker", broker, "--json", "--progress")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == [i * i for i in range(20)]
    failed = run_cli(
        "run", "distloop.tasks.demo:square", "--range", "3", "--broker", broker.replace("/0", "/99999"), "--json"
    )
    assert failed.returncode != 0
    for text in (done.stdout, done.stderr, failed.stdout, failed.stderr, shared_workers.logs()):
        assert shared_redis.password not in text
