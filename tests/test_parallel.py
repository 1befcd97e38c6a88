"""``from distloop import Parallel, delayed``: joblib code switched by its import line.

On real prefork workers (``shared_workers``), and end to end from a user's
project folder on the embedded cluster, where the workers are kept between
``Parallel`` calls and stopped (by pid) when the script exits.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distloop import CeleryExecutor, Parallel, UsageError, delayed
from distloop.tasks.demo import calc_stuff, square
from tests import workloads
from tests.conftest import Gate, Workers, assert_same, running, wait_until
from tests.user_project import build_project, run_in, user_env

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(shared_workers: Workers) -> Iterator[str]:
    assert shared_workers.settings.broker_url is not None
    yield shared_workers.settings.broker_url
    Parallel.stop_workers()  # what the test's Parallel calls shared


def test_delayed_is_joblibs_call_triple_and_built_once_per_function() -> None:
    call = delayed(workloads.add)(1, b=2)
    assert call == (workloads.add, (1,), {"b": 2})
    assert delayed(workloads.add) is delayed(workloads.add)  # not rebuilt for every call
    assert delayed(workloads.add).__name__ == "add"


class _Unhashable:
    """A callable object that cannot be a dict key (``__eq__`` without ``__hash__``), as dataclasses are."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Unhashable)

    def __call__(self, x: int) -> int:
        return x + 1


def test_delayed_takes_unhashable_and_unnamed_callables_and_runs_them_here() -> None:
    unhashable, unnamed = _Unhashable(), functools.partial(workloads.add, 10)
    assert delayed(unhashable)(1) == (unhashable, (1,), {})
    assert delayed(unnamed)(b=2) == (unnamed, (), {"b": 2})
    assert Parallel(n_jobs=1)([delayed(unhashable)(1), delayed(unnamed)(b=2)]) == [2, 12]


def test_results_in_order_with_the_functions_and_arguments_mixed(broker: str) -> None:
    calls = [
        delayed(square)(3),
        delayed(workloads.add)(1, 2),
        delayed(workloads.scaled)(4, factor=3),
        delayed(square)(5),
        delayed(square)(6),
        delayed(workloads.add)(a=7, b=8),
        delayed(calc_stuff)(7),
    ]
    expected = [9, 3, 12, 25, 36, 15, calc_stuff(7)]
    assert_same(Parallel(n_jobs=2, broker=broker)(calls), expected)


def test_joblibs_own_delayed_calls_run_too(broker: str) -> None:
    joblib = pytest.importorskip("joblib", reason="joblib is in the dev extra: pip install -e '.[dev]'")
    got = Parallel(n_jobs=-1, broker=broker)(joblib.delayed(square)(i) for i in range(1000))
    assert_same(got, [i * i for i in range(1000)])


def test_many_small_calls_share_messages_and_come_back_whole(broker: str) -> None:
    with CeleryExecutor(broker=broker) as ex:
        got = Parallel(executor=ex)(delayed(square)(i) for i in range(50_000))
        assert got == [i * i for i in range(50_000)]
        assert ex._dispatcher.cost("distloop.tasks.demo:square") > 0  # they ran on the workers, timed there


def test_the_first_failing_call_raises_its_own_exception(broker: str) -> None:
    with pytest.raises(ValueError, match="bad item 7") as info:
        Parallel(n_jobs=2, broker=broker, batch_size=3)(delayed(workloads.fail_at_7)(i) for i in range(20))
    assert type(info.value) is ValueError
    assert "fail_at_7" in str(info.value.__cause__)  # the worker's traceback


def test_generators_yield_in_order_or_as_they_finish(broker: str) -> None:
    durations = [300, 0, 0, 0]
    ordered = Parallel(n_jobs=2, broker=broker, return_as="generator", batch_size=1)(
        delayed(workloads.sleep_ms)(i, ms) for i, ms in enumerate(durations)
    )
    assert not isinstance(ordered, list)
    assert list(ordered) == [0, 1, 2, 3]
    unordered = Parallel(n_jobs=2, broker=broker, return_as="generator_unordered", batch_size=1)(
        delayed(workloads.sleep_ms)(i, ms) for i, ms in enumerate(durations)
    )
    got = list(unordered)
    assert sorted(got) == [0, 1, 2, 3] and got[-1] == 0  # the slow call finishes last


def test_timeout_raises_timeout_error_and_drops_the_calls_not_sent(broker: str, gate: Gate) -> None:
    parallel = Parallel(n_jobs=2, broker=broker, timeout=0.5, batch_size=1)
    with pytest.raises(TimeoutError):
        parallel(delayed(workloads.wait_for_file)(gate.path, i) for i in range(40))
    gate.open()
    time.sleep(1.0)
    assert len(gate.ran()) < 40  # the calls not sent when it gave up never ran


def test_parallel_calls_share_their_workers(broker: str) -> None:
    first = Parallel(n_jobs=2, broker=broker)([delayed(workloads.where)(0)])
    second = Parallel(n_jobs=2, broker=broker)([delayed(workloads.where)(1)])
    from distloop.facades import parallel as module

    assert module._shared is not None
    executor = module._shared[1]
    third = Parallel(n_jobs=2, broker=broker)([delayed(workloads.where)(2)])
    assert module._shared[1] is executor  # the same executor, not one per call
    assert [first[0][0], second[0][0], third[0][0]] == [0, 1, 2]
    Parallel(n_jobs=3, broker=broker)([delayed(square)(2)])  # other options: another executor in its place
    assert module._shared[1] is not executor and executor._dispatcher.closed


def test_n_jobs_1_runs_here_as_joblib_does() -> None:
    import os

    got = Parallel(n_jobs=1)(delayed(workloads.where)(i) for i in range(3))
    assert [row[1] for row in got] == [os.getpid()] * 3


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"n_jobs": 0}, ValueError, "n_jobs == 0"),
        ({"return_as": "array"}, ValueError, "return_as must be one of"),
        ({"batch_size": 0}, ValueError, "batch_size must be"),
        ({"backend": "loky"}, UsageError, "for joblib's own backends use joblib.Parallel"),
        ({"require": "sharedmem"}, UsageError, "share no memory"),
    ],
)
def test_options_that_cannot_apply_are_refused_in_one_line(options: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        Parallel(**options)


def test_an_item_that_is_not_a_delayed_call_is_refused_before_anything_is_sent(broker: str) -> None:
    with pytest.raises(TypeError, match=r"expected delayed\(f\)\(...\) calls"):
        Parallel(n_jobs=2, broker=broker)([delayed(square)(1), 5])


def test_verbose_prints_joblibs_progress_lines(broker: str, capsys: pytest.CaptureFixture[str]) -> None:
    Parallel(n_jobs=2, broker=broker, verbose=10, batch_size=5)(delayed(square)(i) for i in range(20))
    err = capsys.readouterr().err
    assert "[Parallel(n_jobs=2)]: Done    20 out of    20" in err and "finished" in err


# --- end to end: a user's project, the embedded cluster ------------------------------

SCRIPT = """
    # joblib code with its import line changed, on the embedded cluster (no broker set).
    import json
    import os

    from distloop import Parallel, delayed     # was: from joblib import Parallel, delayed
    from mypkg.work import where


    if __name__ == "__main__":
        first = Parallel(n_jobs=2)(delayed(where)(i) for i in range(8))
        second = Parallel(n_jobs=2)(delayed(where)(i) for i in range(8))
        print(json.dumps({"me": os.getpid(), "first": first, "second": second}))
"""


def test_a_users_joblib_script_keeps_its_workers_between_calls_and_stops_them_at_exit(tmp_path: Path) -> None:
    project = build_project(
        tmp_path,
        {
            "mypkg/__init__.py": "",
            "mypkg/work.py": "import os\n\n\ndef where(i):\n    return [i * i, os.getpid(), os.getppid()]\n",
            "joblib_job.py": SCRIPT,
        },
    )
    done = run_in(project, [sys.executable, "joblib_job.py"], user_env(), timeout=180)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for rows in (out["first"], out["second"]):
        assert [row[0] for row in rows] == [i * i for i in range(8)]
        assert all(row[1] != out["me"] for row in rows)  # on worker processes
    workers = {row[1] for row in out["first"]} | {row[2] for row in out["first"]}
    assert {row[2] for row in out["second"]} <= workers  # the second call ran on the same cluster
    wait_until(lambda: not any(running(pid) for pid in workers), 10, "the cluster's processes to stop")
