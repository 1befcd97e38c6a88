"""A job's tail: straggling chunks sent again, the first result kept, slower hosts' chunks shrunk.

The multi-host run with a slower host is in tests/test_multihost.py
(``test_a_straggling_chunk_is_sent_again_and_counted_once``).
"""

from __future__ import annotations

import pytest

from distloop.backends.stragglers import Stragglers
from distloop.sizing import ChunkPlanner
from distloop.tasks.kernel import ChunkResult, ChunkSpec
from distloop.tasks.store.jobs import JobStore
from distloop.worker.redis_server import RedisServer

WORKERS = {"fast@a": {"concurrency": 2}, "slow@b": {"concurrency": 2}}


def _measured(tail: Stragglers) -> None:
    """fast@a: 10 ms per item; slow@b: 20 ms per item."""
    tail.observe(ChunkResult(0, items=10, seconds=0.1, host="fast@a"))
    tail.observe(ChunkResult(1, items=10, seconds=0.2, host="slow@b"))


def test_the_longest_running_chunk_goes_again_to_an_idle_host() -> None:
    tail = Stragglers()
    _measured(tail)
    in_flight = {5: ChunkSpec(5, 50, 60), 6: ChunkSpec(6, 60, 70)}
    running = {5: {"host": "slow@b", "at": 99.95}, 6: {"host": "slow@b", "at": 99.9}}
    # The copy on fast@a takes 0.1 s (+ overhead); chunk 6 has 0.1 s left of its 0.2 s, chunk 5 0.15 s.
    assert tail.pick(in_flight, running, WORKERS, now=100.0) == [(in_flight[5], "fast@a")]
    assert tail.copies == {5: ("slow@b", "fast@a")}
    assert tail.hosts == {"fast@a"}
    # Sent again at most once.
    assert tail.pick(in_flight, running, WORKERS, now=100.0) == []


def test_an_overrunning_chunk_goes_again_and_queued_chunks_come_first() -> None:
    tail = Stragglers()
    _measured(tail)
    in_flight = {7: ChunkSpec(7, 70, 80), 8: ChunkSpec(8, 80, 90)}
    running = {7: {"host": "fast@a", "at": 90.0}}  # 10 s on a 0.1 s chunk; chunk 8 still queued
    assert tail.pick(in_flight, running, WORKERS, now=100.0) == []
    running[8] = {"host": "fast@a", "at": 100.0}
    assert tail.pick(in_flight, running, WORKERS, now=100.0) == [(in_flight[7], "slow@b")]


def test_nothing_goes_again_without_measurements_or_idle_workers() -> None:
    in_flight = {1: ChunkSpec(1, 10, 20)}
    running = {1: {"host": "slow@b", "at": 0.0}}
    assert Stragglers().pick(in_flight, running, WORKERS, now=100.0) == []  # nothing measured
    tail = Stragglers()
    _measured(tail)
    busy = {"slow@b": {"concurrency": 1}}  # the only worker runs it
    assert tail.pick(in_flight, running, busy, now=100.0) == []


def test_a_copy_goes_only_to_a_host_that_ran_a_chunk_of_the_job() -> None:
    tail = Stragglers()
    _measured(tail)
    in_flight = {4: ChunkSpec(4, 40, 50)}
    running = {4: {"host": "slow@b", "at": 99.99}}  # 0.19 s left; a copy on fast@a takes 0.15 s
    # new@c never answered this job (it may not even have its function): not a target.
    workers = {"slow@b": {"concurrency": 2}, "new@c": {"concurrency": 4}}
    assert tail.pick(in_flight, running, workers, now=100.0) == []
    assert tail.pick(in_flight, running, {**workers, **WORKERS}, now=100.0) == [(in_flight[4], "fast@a")]


def test_the_tail_shrinks_for_the_slowest_host() -> None:
    def tail_sizes(by_host: bool) -> list[int]:
        planner = ChunkPlanner(range(10_000), 4, 0.001)
        planner.by_host = by_host
        planner.observe(ChunkResult(0, items=100, seconds=0.1, host="fast@a"))
        planner.observe(ChunkResult(1, items=100, seconds=0.2, host="slow@b"))
        planner.cost = 0.001
        return [planner.next_size(n) for n in (2000, 800, 400)]

    even, shrunk = tail_sizes(False), tail_sizes(True)
    # The slowest host runs at 2/3 of the mean host speed (1 of 1.5 items per ms).
    assert shrunk == [167, 67, 50] and even == [250, 100, 50]  # 50: the floor (MIN_CHUNK_SECONDS)


@pytest.mark.integration
def test_the_ledger_keeps_a_chunks_first_result(redis_server: RedisServer) -> None:
    store = JobStore(redis_server.client(), 600)
    store.create("twice", {"target": "distloop.tasks.demo:square"})
    assert store.put_result("twice", 0, ChunkResult(0, items=1, values=[0], host="first@a").to_wire())
    assert store.put_result("twice", 0, ChunkResult(0, items=1, values=[0], host="second@b").to_wire())
    assert store.pop_done("twice", 0.1) == [0]  # announced once
    assert store.pop_done("twice", 0.1) == []
    (stored,) = store.results("twice", [0])
    assert stored is not None and stored["host"] == "first@a"
    # A copy that starts after the first result has nothing to do, and leaves no "running" entry.
    assert not store.mark_started("twice", 0, "late@c")
    assert store.running("twice") == {}
