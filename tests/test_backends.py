"""Every backend gives the plain serial loop's results, for every demo workload and range shape."""

from __future__ import annotations

import pytest

from distloop import ChunkFailed, TargetNotAllowed, run_job, run_loop
from distloop.tasks import demo
from distloop.tasks.store.jobs import JobStore
from distloop.worker.redis_server import RedisServer
from tests.conftest import Workers

BACKENDS = ["serial", "thread", "process", "celery"]
RANGES = [range(0, 103, 5), range(40, -7, -3), range(5, 5), range(0, 250)]
WORKLOADS = ["calc_stuff", "crunch_numbers", "square", "cube", "skewed"]


@pytest.fixture(params=BACKENDS)
def backend_options(request: pytest.FixtureRequest) -> dict[str, object]:
    """Options for run_loop: the celery backend runs on real prefork workers."""
    if request.param == "celery":
        workers: Workers = request.getfixturevalue("shared_workers")
        return {"backend": "celery", "settings": workers.settings}
    return {"backend": request.param}


@pytest.mark.integration
@pytest.mark.parametrize("name", WORKLOADS)
@pytest.mark.parametrize("r", RANGES, ids=lambda r: f"{r.start}:{r.stop}:{r.step}")
def test_results_equal_serial_loop(backend_options: dict[str, object], name: str, r: range) -> None:
    fn = getattr(demo, name)
    if name == "crunch_numbers":
        r = r[:20]
    assert run_loop(f"distloop.tasks.demo:{name}", r, chunk_size=7, **backend_options) == [fn(i) for i in r]


@pytest.mark.integration
@pytest.mark.parametrize(
    "op, expected", [("sum", sum), ("min", min), ("max", max), ("count", lambda v: sum(map(bool, v)))]
)
def test_reduce_on_workers(backend_options: dict[str, object], op: str, expected: object) -> None:
    r = range(-50, 1000, 3)
    values = [demo.cube(i) for i in r]
    assert run_loop(demo.cube, r, reduce=op, chunk_size=13, **backend_options) == expected(values)  # type: ignore[operator]


@pytest.mark.integration
def test_auto_chunks_and_json_result(backend_options: dict[str, object]) -> None:
    report = run_job(demo.calc_stuff, range(0, 300), **backend_options)  # type: ignore[arg-type]
    assert report.result == [demo.calc_stuff(i) for i in range(300)]
    assert isinstance(report.result[0], tuple)
    assert report.chunks >= 4


@pytest.mark.integration
def test_first_failure_reports_index_and_traceback(backend_options: dict[str, object]) -> None:
    with pytest.raises(ChunkFailed) as info:
        run_loop("tests.workloads:fail_at_7", range(20), chunk_size=3, **backend_options)
    assert info.value.index == 7 and info.value.exc_type == "ValueError"
    assert "bad item 7" in info.value.remote_traceback


@pytest.mark.integration
def test_the_failure_reported_is_the_lowest_index_even_when_a_later_one_arrives_first(
    backend_options: dict[str, object],
) -> None:
    # Item 5 fails at once, item 1 a second later: a serial loop meets item 1 first.
    with pytest.raises(ChunkFailed) as info:
        run_loop("tests.workloads:fail_late_at_1_fast_at_5", range(8), chunk_size=1, **backend_options)
    assert (info.value.index, info.value.message) == (1, "slow failure at 1")


@pytest.mark.integration
def test_workers_refuse_targets_outside_allow_list(shared_workers: Workers) -> None:
    # The producer may import it; the workers must refuse it without importing it.
    with pytest.raises(TargetNotAllowed, match="allow-list"):
        run_loop("distloop.ranges:parse_range", range(3), backend="celery", settings=shared_workers.settings)
    assert "refused chunk" in shared_workers.logs()


@pytest.mark.integration
def test_a_ledger_whose_results_were_all_collected_reads_back_empty(redis_server: RedisServer) -> None:
    # What `distloop resume` meets when the producer died just after a checkpoint.
    store = JobStore(redis_server.client(), 600)
    store.create("collected", {"target": "distloop.tasks.demo:square"})
    assert store.finished_indices("collected") == set()
    assert store.results("collected", []) == []
