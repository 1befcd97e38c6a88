"""Flower, started by distloop, shows real workers and a real job's chunks, behind basic auth."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from distloop import run_job
from distloop.tasks.app import make_app
from distloop.tasks.core.errors import UsageError
from distloop.tasks.core.settings import Settings
from distloop.tasks.store.workers import live_workers
from distloop.worker.flower import FlowerProcess, enable_task_events, parse_basic_auth, start_flower
from distloop.worker.processes import ManagedProcess
from tests.conftest import ROOT, Workers, run_cli, wait_until

TARGET = "tests.workloads:sleep_ms"


def fetch(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    """GET ``url`` with basic ``auth`` (user, password), or with no credentials; (status, body)."""
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def http_get(flower: FlowerProcess, path: str) -> tuple[int, str]:
    """GET ``path`` from Flower with its credentials."""
    return fetch(flower.url + path, (flower.username, flower.password))


def eventually(check: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    """Poll ``check`` until it returns something truthy (Flower learns from events, asynchronously)."""
    return wait_until(check, timeout, f"shown by Flower: {what}", interval=0.1)


def job_tasks(flower: FlowerProcess, job_id: str) -> dict[str, dict[str, Any]]:
    status, body = http_get(flower, "/api/tasks?limit=1000")
    assert status == 200
    return {uuid: task for uuid, task in json.loads(body).items() if uuid.startswith(f"{job_id}-")}


def flower_workers(flower: FlowerProcess) -> list[str]:
    status, body = http_get(flower, "/api/workers?refresh=1")
    return list(json.loads(body)) if status == 200 else []


def all_succeeded(tasks: dict[str, dict[str, Any]], count: int) -> dict[str, dict[str, Any]] | None:
    ok = len(tasks) == count and all(t["state"] == "SUCCESS" for t in tasks.values())
    return tasks if ok else None


class EventTap:
    """Every Celery event on a broker, as Flower would receive them (a real event receiver)."""

    def __init__(self, settings: Settings) -> None:
        self.app = make_app(settings)
        self.types: list[str] = []
        self.ready = threading.Event()
        self.receiver: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.app.connection_for_read() as conn:
            self.receiver = self.app.events.Receiver(conn, handlers={"*": lambda e: self.types.append(e["type"])})
            consume_ready = self.receiver.on_consume_ready

            def on_ready(*args: Any, **kwargs: Any) -> None:
                consume_ready(*args, **kwargs)
                self.ready.set()

            self.receiver.on_consume_ready = on_ready
            self.receiver.capture(limit=None, timeout=None, wakeup=False)  # until should_stop (checked each second)

    def __enter__(self) -> EventTap:
        self.thread.start()
        assert self.ready.wait(30), "the event receiver did not start"
        return self

    def __exit__(self, *_: object) -> None:
        self.receiver.should_stop = True
        self.thread.join(timeout=10)
        self.app.close()

    def task_events(self) -> set[str]:
        return {t for t in self.types if t.startswith("task-")}


@pytest.mark.integration
def test_task_events_flow_only_while_a_monitor_asks_for_them(workers: Workers) -> None:
    workers.start(concurrency=1, hostname=f"events-w-{os.getpid()}@%h")
    client = workers.settings.redis_client()
    with EventTap(workers.settings) as tap:
        # Nobody watches: no task events, from the worker or the producer (each would cost CPU per chunk).
        assert run_job("tests.workloads:sleep_ms", range(12), chunk_size=3, settings=workers.settings).chunks == 4
        assert [w["events"] for w in live_workers(client).values()] == [False]
        wait_until(lambda: "worker-heartbeat" in tap.types, 30, "a worker heartbeat event")
        assert tap.task_events() == set()
        # A monitor asks (what Flower does every few seconds, and distloop flower at once).
        assert enable_task_events(workers.settings)
        assert [w["events"] for w in live_workers(client).values()] == [True]
        run_job("tests.workloads:sleep_ms", range(12), chunk_size=3, settings=workers.settings)
        wanted = {"task-sent", "task-received", "task-started", "task-succeeded"}
        wait_until(lambda: wanted <= tap.task_events(), 30, f"task events {wanted}")
    client.close()


@pytest.fixture
def flower(workers: Workers) -> Iterator[FlowerProcess]:
    """A real Flower (free port, generated credentials) watching a real prefork worker."""
    workers.start(concurrency=2, hostname=f"flower-w-{os.getpid()}@%h")
    process = start_flower(workers.settings, port=0)
    yield process
    process.stop()


@pytest.mark.integration
def test_flower_shows_workers_and_every_chunk_of_a_job(flower: FlowerProcess, workers: Workers) -> None:
    hostname = f"flower-w-{os.getpid()}@"
    workers_seen = eventually(lambda: [w for w in flower_workers(flower) if w.startswith(hostname)], "the worker")
    assert len(workers_seen) == 1

    job_id = f"flowerjob{os.getpid()}"
    done = threading.Event()
    reports: list[Any] = []

    def run() -> None:
        try:
            # 24 chunks of 10 items x 20 ms on 2 processes: chunks wait in the queue for seconds.
            reports.append(run_job(TARGET, range(0, 240), chunk_size=10, settings=workers.settings, job_id=job_id))
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    # Task-sent events: a chunk shows as PENDING (sent, not yet received by a worker) while it waits.
    queued = eventually(
        lambda: [t for t in job_tasks(flower, job_id).values() if t["state"] == "PENDING" and t["sent"]],
        "a queued chunk",
    )
    assert queued and queued[0]["received"] is None
    thread.join(timeout=120)
    assert done.is_set() and reports, "the job did not finish"
    assert reports[0].result == list(range(240))

    tasks = eventually(lambda: all_succeeded(job_tasks(flower, job_id), 24), "24 successful chunks")
    expected = {f"range({10 * i}, {10 * i + 10}) of {TARGET}, chunk {i} of job {job_id}" for i in range(24)}
    assert {t["args"] for t in tasks.values()} == expected
    assert {t["name"] for t in tasks.values()} == {"distloop.chunk"}
    assert {t["worker"] for t in tasks.values()} == set(workers_seen)

    # /metrics (Prometheus, no credentials needed) counts the chunks sent and succeeded.
    with urllib.request.urlopen(flower.url + "/metrics", timeout=15) as response:
        metrics = response.read().decode()
    for event in ("task-sent", "task-succeeded"):
        pattern = rf'flower_events_total{{task="distloop.chunk",type="{event}",worker="[^"]+"}} ([\d.]+)'
        counts = re.findall(pattern, metrics)
        assert sum(float(c) for c in counts) == 24, (event, counts)


@pytest.mark.integration
def test_flower_api_refuses_requests_without_the_right_credentials(flower: FlowerProcess) -> None:
    assert http_get(flower, "/api/workers")[0] == 200
    for path in ("/api/workers", "/api/tasks", "/tasks", "/"):
        assert fetch(flower.url + path)[0] == 401, path
        assert fetch(flower.url + path, (flower.username, "wrong"))[0] == 401, path
    assert len(flower.password) >= 20


@pytest.mark.integration
def test_distloop_flower_command_prints_url_and_credentials_once(workers: Workers, tmp_path: Path) -> None:
    out = tmp_path / "flower.out"
    env = {**os.environ, "DISTLOOP_BROKER_URL": workers.settings.effective_broker_url}
    with open(out, "wb") as log:
        cli = ManagedProcess("distloop flower", [sys.executable, "-m", "distloop", "flower", "--port", "0"],
                             env=env, cwd=str(ROOT), log=log)  # fmt: skip
    try:
        text = eventually(lambda: "password:" in out.read_text() and out.read_text(), "its credentials", 60)
        url = re.search(r"Flower: (http://127\.0\.0\.1:\d+)", text)
        creds = re.search(r"user: (\S+)  password: (\S+)", text)
        assert url and creds, text
        assert urlsplit(workers.settings.effective_broker_url).password not in text
        assert fetch(url.group(1) + "/api/workers", (creds.group(1), creds.group(2)))[0] == 200
        assert fetch(url.group(1) + "/api/workers")[0] == 401
    finally:
        code = cli.stop(signal.SIGINT)  # Ctrl-C: how the command is meant to end
    with pytest.raises(OSError):  # stopped with the command: nothing answers any more
        urllib.request.urlopen(url.group(1) + "/healthcheck", timeout=5)
    assert code == 0 and "distloop flower: stopped" in out.read_text() and "error" not in out.read_text()


@pytest.mark.parametrize("text", ["nocolon", ":pass", "user:", "a:b,c:d"])
def test_malformed_basic_auth_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="USER:PASS"):
        parse_basic_auth(text)
    result = run_cli("flower", "--broker", "redis://127.0.0.1:1/0", "--basic-auth", text)
    assert result.returncode == 2 and "USER:PASS" in result.stderr
