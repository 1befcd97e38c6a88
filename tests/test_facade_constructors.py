"""``Pool(processes, initializer, initargs, maxtasksperchild, context)`` and
``CeleryExecutor(max_workers, mp_context, initializer, initargs, max_tasks_per_child)``.

The standard library's checks and errors; an initializer that runs once in each
worker process before that process's first call of the pool, sent by name; and
what does not apply on Celery workers, accepted and documented.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import BrokenExecutor
from pathlib import Path
from typing import Any

import pytest

from distloop import CeleryExecutor, Pool, ResultNotSerializable, TargetError, TargetNotAllowed
from distloop.sizing import auto_chunk_size
from distloop.tasks.core.errors import InitializerFailed
from tests import workloads
from tests.conftest import Workers

UNREACHABLE = "redis://127.0.0.1:1/0"  # checks come first: none of these reaches a broker


class Opaque:
    """An instance of a user class: no JSON form."""


def local_initializer() -> None:  # importable, but tests.test_facade_constructors is not allowed on workers
    pass


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: Pool(0, broker=UNREACHABLE), ValueError, "Number of processes must be at least 1"),
        (lambda: Pool(-1, broker=UNREACHABLE), ValueError, "Number of processes must be at least 1"),
        (lambda: CeleryExecutor(0, broker=UNREACHABLE), ValueError, "max_workers must be greater than 0"),
        (lambda: Pool(2, initializer=5, broker=UNREACHABLE), TypeError, "initializer must be a callable"),
        (lambda: CeleryExecutor(initializer="f", broker=UNREACHABLE), TypeError, "initializer must be a callable"),
        (lambda: Pool(2, maxtasksperchild=0, broker=UNREACHABLE), ValueError, "maxtasksperchild must be a positive"),
        (lambda: Pool(2, maxtasksperchild="1", broker=UNREACHABLE), ValueError, "maxtasksperchild must be a positive"),
        (lambda: CeleryExecutor(max_tasks_per_child=0, broker=UNREACHABLE), ValueError, "max_tasks_per_child must be"),
        (lambda: Pool(2, context="fork", broker=UNREACHABLE), TypeError, "must be a multiprocessing context"),
        (lambda: CeleryExecutor(mp_context=object(), broker=UNREACHABLE), TypeError, "multiprocessing context"),
        (lambda: Pool(2, initializer=lambda: None, broker=UNREACHABLE), TargetError, "lambdas and closures"),
        (lambda: CeleryExecutor(initializer=lambda: None, broker=UNREACHABLE), TargetError, "no importable name"),
        (lambda: Pool(2, workloads.remember, (Opaque(),), broker=UNREACHABLE), ResultNotSerializable,
         r"cannot send the initializer tests\.workloads:remember\(<.*>\): a value of type "
         r"tests\.test_facade_constructors\.Opaque cannot travel"),
    ],
)  # fmt: skip
def test_bad_constructor_arguments_fail_at_construction(make: Callable[[], Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        make()


def pids_by_tag(path: Path) -> collections.Counter[tuple[int, str]]:
    """How many times the initializer ran, per (process, tag)."""
    lines = path.read_text().split("\n") if path.exists() else []
    return collections.Counter((int(pid), tag) for pid, tag in (line.split() for line in lines if line))


def test_initializer_runs_once_per_worker_process_before_its_first_call(
    shared_workers: Workers, tmp_path: Path
) -> None:
    log = tmp_path / "init.log"
    settings = shared_workers.settings
    with Pool(2, workloads.remember, ("first", str(log)), settings=settings) as pool:
        rows = pool.map(workloads.tagged, range(40), chunksize=2)
        rows += [pool.apply(workloads.tagged, (40,))]
    assert [r[0] for r in rows] == list(range(41))
    assert {r[2] for r in rows} == {"first"}  # every call ran after its process's initializer
    ran = pids_by_tag(log)
    assert {pid for pid, _ in ran} == {r[1] for r in rows}  # in each process that ran a call...
    assert set(ran.values()) == {1}  # ...exactly once
    worker_children = {child for p in shared_workers.processes for child in children_of(p.pid)}
    assert {r[1] for r in rows} <= worker_children and os.getpid() not in worker_children

    # Another executor with its own initializer: it runs again in each process, once.
    with CeleryExecutor(initializer=workloads.remember, initargs=("second", str(log)), settings=settings) as ex:
        rows = list(ex.map(workloads.tagged, range(40), chunksize=2))
    assert {r[2] for r in rows} == {"second"}
    ran = pids_by_tag(log)
    assert {pid for pid, tag in ran if tag == "second"} == {r[1] for r in rows}
    assert set(ran.values()) == {1}


def children_of(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_a_failing_initializer_breaks_the_executor_as_the_standard_library_does(shared_workers: Workers) -> None:
    ex = CeleryExecutor(initializer=workloads.failing_initializer, settings=shared_workers.settings)
    future = ex.submit(workloads.echo, 1)
    with pytest.raises(InitializerFailed, match="failing_initializer raised RuntimeError: no database here") as info:
        future.result(timeout=60)
    assert isinstance(info.value, BrokenExecutor)  # concurrent.futures' own base class
    assert "no database here" in str(info.value.__cause__)  # the worker's traceback
    with pytest.raises(InitializerFailed):
        ex.submit(workloads.echo, 2)
    ex.shutdown()
    with (
        Pool(2, initializer=workloads.failing_initializer, settings=shared_workers.settings) as pool,
        pytest.raises(InitializerFailed),
    ):
        pool.map(workloads.echo, range(10))


def test_an_initializer_outside_the_allow_list_is_refused(shared_workers: Workers) -> None:
    for initializer in (local_initializer, auto_chunk_size):
        with (
            Pool(2, initializer=initializer, settings=shared_workers.settings) as pool,
            pytest.raises(TargetNotAllowed, match="allow-list"),
        ):
            pool.apply(workloads.echo, (1,))


def test_mp_context_is_accepted_and_ignored(shared_workers: Workers) -> None:
    context = multiprocessing.get_context("spawn")
    with CeleryExecutor(2, context, settings=shared_workers.settings, max_tasks_per_child=5) as ex:
        assert list(ex.map(workloads.echo, range(5))) == list(range(5))
    with Pool(2, None, (), 3, context, settings=shared_workers.settings) as pool:
        assert pool.map(workloads.echo, range(5)) == list(range(5))


@pytest.mark.parametrize("backend", ["serial", "process"])
def test_initializer_on_the_local_backends(backend: str, tmp_path: Path) -> None:
    log = tmp_path / "init.log"
    with Pool(2, workloads.remember, (backend, str(log)), backend=backend) as pool:
        rows = pool.map(workloads.tagged, range(20), chunksize=2)
    assert {r[2] for r in rows} == {backend}
    assert set(pids_by_tag(log).values()) == {1}


@pytest.mark.slow
def test_maxtasksperchild_reaches_the_embedded_clusters_workers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no broker, the pool starts the workers: ``maxtasksperchild`` is theirs (one chunk = one task).

    The initializer's module is allowed on that cluster from the start; each new process runs it.
    """
    monkeypatch.delenv("DISTLOOP_BROKER_URL", raising=False)
    monkeypatch.delenv("DISTLOOP_ALLOW", raising=False)
    log = tmp_path / "init.log"
    with Pool(1, workloads.remember, ("embedded", str(log)), maxtasksperchild=1) as pool:
        rows = [pool.apply(workloads.tagged, (i,)) for i in range(3)]
    assert len({r[1] for r in rows}) == 3  # a new process for every task
    assert {r[2] for r in rows} == {"embedded"}
    assert pids_by_tag(log) == collections.Counter((r[1], "embedded") for r in rows)


def test_max_tasks_per_child_setting_reaches_celery_and_the_workers_environment() -> None:
    from distloop import UsageError
    from distloop.tasks.core.settings import Settings

    settings = Settings.from_env({"DISTLOOP_MAX_TASKS_PER_CHILD": "3"})
    assert settings.celery_config()["worker_max_tasks_per_child"] == 3
    assert Settings.from_env(settings.to_env()).max_tasks_per_child == 3  # what a started worker reads
    for bad in ("x", "0", "-2"):
        with pytest.raises(UsageError, match=r"DISTLOOP_MAX_TASKS_PER_CHILD=.*expected a whole number above 0"):
            Settings.from_env({"DISTLOOP_MAX_TASKS_PER_CHILD": bad})


def test_a_worker_count_above_the_cap_is_refused_in_the_constructors_own_words() -> None:
    """The cap is checked before anything forks, and the error names the argument the caller wrote."""
    from distloop.tasks.core.errors import UsageError

    with pytest.raises(UsageError, match=r"^processes=100000 is above this machine's cap of \d+"):
        Pool(100_000, backend="process")
    with pytest.raises(UsageError, match=r"^max_workers=100000 is above the cap of \d+"):
        CeleryExecutor(max_workers=100_000, backend="thread")
