"""Chunk sizing from wall time and CPU time: the probe tells waiting from computing."""

from __future__ import annotations

import itertools

from distloop.sizing import ChunkPlanner
from distloop.tasks.core import defaults
from distloop.tasks.kernel import ChunkResult, ChunkSpec, run_chunk
from tests import workloads


def probe_result(items: int, seconds: float, cpu_seconds: float) -> ChunkResult:
    return ChunkResult(index=0, items=items, seconds=seconds, cpu_seconds=cpu_seconds)


def sizes_after_probes(planner: ChunkPlanner, probe: ChunkResult) -> list[int]:
    chunks = iter(planner)
    sizes = [len(next(chunks)) for _ in range(planner.window())]  # the probes, one per slot
    planner.observe(probe)
    return sizes + [len(c) for c in chunks]


def test_the_kernel_reports_cpu_time_apart_from_wall_time() -> None:
    from distloop.tasks.kernel import run_named_chunk

    # CPU time counts the work done, whatever else the machine runs: a sleep does none.
    waited = run_named_chunk("tests.workloads:sleep_ms", ChunkSpec(0, 0, 5))
    assert waited.seconds >= 0.1 and waited.cpu_seconds < waited.seconds * defaults.WAITING_CPU_SHARE
    computed = run_named_chunk("distloop.tasks.demo:crunch_numbers", ChunkSpec(0, 0, 3))
    assert 10 * waited.cpu_seconds < computed.cpu_seconds <= computed.seconds + 0.01


def test_probe_that_waits_gives_one_chunk_per_thread() -> None:
    waits = ChunkPlanner(range(2000), 64, 0.0, threaded=True)
    sizes = sizes_after_probes(waits, probe_result(16, 0.32, 0.0005))
    assert waits.waiting
    assert sizes == [16] * 64 + [16] * 61  # what remains, 976 items, once over the 64 threads
    computes = ChunkPlanner(range(2000), 64, 0.0, threaded=True)
    sizes = sizes_after_probes(computes, probe_result(16, 0.32, 0.3))
    assert not computes.waiting and max(sizes[64:]) <= 7  # the balance cap: four chunks per slot


def test_probe_that_waits_on_processes_keeps_the_guided_sizing() -> None:
    """Processes wait on one item at a time: nothing to gain, and a starved chunk can look idle."""
    planner = ChunkPlanner(range(400), 64, 0.0)
    sizes = sizes_after_probes(planner, probe_result(1, 0.02, 0.0001))
    assert planner.waiting
    assert sizes == [1] * 400  # the balance cap, four chunks per slot, as before


def test_probe_that_computes_keeps_cpu_sizing() -> None:
    planner = ChunkPlanner(range(400), 64, 0.0)
    sizes = sizes_after_probes(planner, probe_result(1, 0.02, 0.0195))
    assert not planner.waiting
    assert max(sizes) == 1  # the balance cap: four chunks per slot at least, as before


def test_probes_on_threads_share_the_range_among_them() -> None:
    sizes = [len(c) for c in ChunkPlanner(range(400), 64, 0.0, threaded=True)]
    assert sizes == [7] * 57 + [1]  # one chunk per thread at once, no probe round first
    assert len(list(ChunkPlanner(range(100_000), 64, 0.0, threaded=True))) > 64  # at most 16 items before sizing


def test_async_chunks_hold_at_least_the_io_concurrency() -> None:
    planner = ChunkPlanner(range(2000), 2, 0.0, io_concurrency=100)
    sizes = sizes_after_probes(planner, probe_result(100, 0.02, 0.001))
    assert sizes[:2] == [100, 100]  # the probes fill one event loop each
    assert sum(sizes) == 2000
    # Never under the bound while a worker's share is larger; the tail splits what is left.
    offset = 0
    for size in sizes:
        assert size >= min(100, -(-(2000 - offset) // 2), 2000 - offset)
        offset += size
    few = list(ChunkPlanner(range(120), 2, 0.0, io_concurrency=100))
    assert [len(c) for c in few] == [60, 60]  # at most an equal share per worker


def test_async_chunk_runs_its_items_concurrently_within_the_bound() -> None:
    result = run_chunk(workloads.async_in_flight, ChunkSpec(0, 0, 20), io_concurrency=8)
    assert max(result.values or []) == 8
    result = run_chunk(workloads.async_fail_at_7, ChunkSpec(0, 0, 20), on_error="raise")
    assert result.values == list(range(7)) and [e["index"] for e in result.errors] == [7]


def test_waiting_chunks_give_every_slot_the_same_number_of_chunks() -> None:
    # 8 processes awaiting 100 items each; 7,200 items left after the probes, 900 per process.
    # By the time target (0.5 s at 0.6 ms per awaited item) a chunk holds 833: one chunk per
    # process of 900, not 8 of 800 and a ninth that one process runs while the others wait.
    planner = ChunkPlanner(range(8000), 8, 0.0, io_concurrency=100)
    probes = list(itertools.islice(planner, planner.window()))  # as dispatch.run_chunks takes them
    assert (planner.sent, planner.offset) == (8, 800)  # counted as handed out, not one behind
    planner.observe(probe_result(100, 0.06, 0.001))
    assert planner.estimated_chunks() == 16  # run_job asks after each result, before the next chunk
    assert [len(c) for c in probes] + [len(c) for c in planner] == [100] * 8 + [900] * 8
    # Four times the cost: about four chunks per process, in whole rounds of the bound (300).
    planner = ChunkPlanner(range(8000), 8, 0.0, io_concurrency=100)
    sizes = sizes_after_probes(planner, probe_result(100, 0.24, 0.001))
    assert sizes == [100] * 8 + [300] * 24
    # Blocking waits on 64 threads: 1,976 items left, 31 per thread, a chunk each.
    threads = ChunkPlanner(range(3000), 64, 0.0, threaded=True)
    sizes = sizes_after_probes(threads, probe_result(16, 0.25, 0.0005))
    assert sizes[64:] == [31] * 63 + [23]
