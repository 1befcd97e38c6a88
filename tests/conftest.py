"""Fixtures that start real components on free ports and stop them by process id."""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Classic Celery fixtures (solo pool, in a thread) for unit-level tests; pytest-celery's
# own replace them with Docker-based ones, which these machines cannot run.
from celery.contrib.pytest import celery_app, celery_worker  # noqa: F401

from distloop.tasks.core.settings import Settings
from distloop.worker.celery_worker import start_worker
from distloop.worker.processes import ManagedProcess, stop_all
from distloop.worker.redis_server import RedisServer, start_redis

ROOT = Path(__file__).resolve().parent.parent
#: Test-only workloads the test workers may run (besides distloop.tasks.demo).
TEST_ALLOW = ("tests.workloads", "tests.cpython_workloads")


@pytest.fixture(scope="session", autouse=True)
def _redis_binary() -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run `make test`, which installs it")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh password-protected redis-server on a free port, stopped by pid after the test."""
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[RedisServer]:
    """One redis-server for the tests that only need a working broker."""
    server = start_redis()
    yield server
    server.stop()


def settings_for(server: RedisServer, allow: tuple[str, ...] = TEST_ALLOW) -> Settings:
    return Settings(broker_url=server.url, allow=allow)


class Workers:
    """Real Celery ``worker`` prefork processes against one Redis (``start_worker``: Celery's own command)."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.settings = settings
        self.tmp = tmp
        self.processes: list[ManagedProcess] = []

    def start(
        self, concurrency: int = 2, hostname: str | None = None, cwd: Path = ROOT, **kwargs: object
    ) -> ManagedProcess:
        """Start a worker in ``cwd`` (a project folder: what it imports), once it consumes tasks."""
        name = hostname or f"w{len(self.processes)}-{os.getpid()}@%h"
        process = start_worker(
            self.settings, concurrency=concurrency, hostname=name, cwd=str(cwd),
            log_path=str(self.log_path(len(self.processes))), **kwargs,
        )  # type: ignore[arg-type]  # fmt: skip
        self.processes.append(process)
        return process

    def log_path(self, n: int) -> Path:
        """The log of the ``n``-th worker started."""
        return self.tmp / f"worker-{n}.log"

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.tmp.glob("worker-*.log")))

    def stop(self) -> None:
        stop_all(self.processes)  # their warm shutdowns overlap
        self.processes.clear()


@pytest.fixture(scope="session")
def shared_workers(shared_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """Two prefork processes serving ``shared_redis``, for the whole session."""
    workers = Workers(settings_for(shared_redis), tmp_path_factory.mktemp("shared-workers"))
    workers.start(concurrency=2)
    yield workers
    workers.stop()


@pytest.fixture
def workers(redis_server: RedisServer, tmp_path: Path) -> Iterator[Workers]:
    """Workers on the test's own ``redis_server``; the test starts as many as it needs."""
    group = Workers(settings_for(redis_server), tmp_path)
    yield group
    group.stop()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not {what} after {timeout:.0f} s")


def run_sent_chunk(settings: Settings, spec: dict[str, Any], target: str = "tests.workloads:echo") -> Any:
    """Send one chunk message as a producer would (a forged one, say) to real workers; its stored result."""
    import uuid

    from distloop.tasks.app import make_app
    from distloop.tasks.core import defaults
    from distloop.tasks.store.jobs import JobStore

    store = JobStore(settings.redis_client(), expires=600)
    job_id = f"sent-{uuid.uuid4().hex}"
    store.create(job_id, {"target": target})
    app = make_app(settings)
    app.send_task(defaults.CHUNK_TASK, args=(job_id, target, spec, None, "collect"),
                  queue=defaults.QUEUE, ignore_result=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not store.pop_done(job_id, 1.0) and time.monotonic() < deadline:
        pass
    (result,) = store.results(job_id, [spec["index"]])
    app.close()
    store.delete(job_id)
    store.client.close()
    assert result is not None, "the chunk never reported"
    return result


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":  # a zombie waits for init to reap it; it no longer runs
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any process a test started is still running."""
    left = descendants(os.getpid())
    if left:
        names = [Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:100] for p in left
                 if Path(f"/proc/{p}/cmdline").exists()]  # fmt: skip
        print(f"\nLEAKED PROCESSES started by the tests: {names}", file=sys.stderr)
        session.exitstatus = 1


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``distloop ARGS`` as a user would, capturing stdout and stderr."""
    full_env = dict(os.environ)
    full_env.pop("DISTLOOP_BROKER_URL", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "distloop", *args],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd or ROOT,
    )  # fmt: skip


def assert_same(got: Any, expected: Any, where: str = "result") -> None:
    """Equal and of the same type all the way down (``1 == 1.0 == True`` does not count)."""
    assert type(got) is type(expected), f"{where}: {type(got).__name__} != {type(expected).__name__}"
    if isinstance(expected, float):
        assert struct.pack("<d", got) == struct.pack("<d", expected) or (math.isnan(got) and math.isnan(expected))
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for n, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_same(g, e, f"{where}[{n}]")
    elif isinstance(expected, dict):
        assert list(got) == list(expected), where
        for key in expected:
            assert_same(got[key], expected[key], f"{where}[{key!r}]")
    else:
        assert got == expected, where


class Gate:
    """A file the ``wait_for_file`` workload waits for: calls block until the test opens it."""

    def __init__(self, folder: Path) -> None:
        self.path = str(folder / "gate")

    def open(self) -> None:
        Path(self.path).touch()

    def ran(self) -> list[int]:
        """Items that started on a worker."""
        log = Path(self.path + ".ran")
        return sorted(int(line) for line in log.read_text().split()) if log.exists() else []


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    g = Gate(tmp_path)
    yield g
    g.open()  # never leave the shared workers blocked
