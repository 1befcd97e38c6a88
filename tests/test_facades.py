"""Code written for multiprocessing, concurrent.futures or joblib, switched by one line.

Everything runs on real prefork workers (``shared_workers``), or on the embedded
cluster where a test says so. "Same" means equal values of the same types, floats
bit for bit.
"""

from __future__ import annotations

import decimal
import enum
import math
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, as_completed, wait
from pathlib import Path
from typing import Any

import pytest

from distloop import CallFailed, CeleryExecutor, Pool, ResultNotSerializable, TargetError, run_loop
from distloop.facades.call_errors import call_error
from distloop.tasks.core import codec
from distloop.tasks.demo import calc_stuff, cube, square
from tests import workloads
from tests.conftest import Gate, Workers, assert_same, run_sent_chunk, running, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(shared_workers: Workers) -> str:
    assert shared_workers.settings.broker_url is not None
    return shared_workers.settings.broker_url


# --- the seed articles, with only the pool line changed -------------------------------


def test_seed_calc_stuff_with_pool(broker: str) -> None:
    offset = 7
    # was: pool = multiprocessing.Pool(4)
    pool = Pool(4, broker=broker)
    out1, out2, out3 = zip(*pool.map(calc_stuff, range(0, 10 * offset, offset)), strict=True)
    serial = [calc_stuff(p) for p in range(0, 10 * offset, offset)]
    assert_same((out1, out2, out3), tuple(zip(*serial, strict=True)))
    assert_same(pool.map(calc_stuff, range(0, 10 * offset, offset)), serial)  # tuples stay tuples
    pool.terminate()


def test_seed_calc_stuff_with_executor(broker: str) -> None:
    offset = 7
    # was: with concurrent.futures.ProcessPoolExecutor() as pool:
    with CeleryExecutor(broker=broker) as pool:
        out1, out2, out3 = zip(*pool.map(calc_stuff, range(0, 10 * offset, offset)), strict=True)
        raw = list(pool.map(calc_stuff, range(0, 10 * offset, offset)))
    serial = [calc_stuff(p) for p in range(0, 10 * offset, offset)]
    assert_same((out1, out2, out3), tuple(zip(*serial, strict=True)))
    assert_same(raw, serial)  # tuples stay tuples


def test_seed_square_with_pool(broker: str) -> None:
    # was: with Pool(4) as p:
    with Pool(4, broker=broker) as p:
        results = p.map(square, [1, 2, 3, 4, 5])
    assert_same(results, [square(x) for x in [1, 2, 3, 4, 5]])


def test_seed_cube_with_executor(broker: str) -> None:
    # was: with ProcessPoolExecutor(max_workers=4) as executor:
    with CeleryExecutor(max_workers=4, broker=broker) as executor:
        results = list(executor.map(cube, [1, 2, 3, 4, 5]))
    assert_same(results, [cube(x) for x in [1, 2, 3, 4, 5]])


@pytest.mark.slow
def test_seed_on_embedded_cluster_and_functions_from_two_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """No broker configured: the executor starts its own cluster and stops it (by pid) on shutdown."""
    monkeypatch.delenv("DISTLOOP_BROKER_URL", raising=False)
    monkeypatch.delenv("DISTLOOP_ALLOW", raising=False)  # tests.workloads is allowed only as it comes
    offset = 7
    with CeleryExecutor() as pool:  # was: concurrent.futures.ProcessPoolExecutor()
        out1, out2, out3 = zip(*pool.map(calc_stuff, range(0, 10 * offset, offset)), strict=True)
        # A second module, met after the cluster started: allowed as it comes.
        _, worker_pid, worker_parent = pool.submit(workloads.where, 1).result(timeout=60)
    assert_same((out1, out2, out3), tuple(zip(*[calc_stuff(p) for p in range(0, 10 * offset, offset)], strict=True)))
    assert worker_pid != os.getpid()
    for pid in (worker_pid, worker_parent):  # the pool child and the celery worker are gone
        assert not running(pid)


# --- concurrent.futures.Executor, as the standard library documents it ----------------


def test_map_yields_in_order_whatever_finishes_first(broker: str) -> None:
    with CeleryExecutor(max_workers=2, broker=broker) as ex:
        durations = [80, 60, 40, 20, 0, 0]
        assert_same(list(ex.map(workloads.sleep_ms, range(6), durations, chunksize=1)), list(range(6)))


def test_map_timeout_raises_timeout_error(broker: str, gate: Gate) -> None:
    with CeleryExecutor(max_workers=2, broker=broker) as ex:
        results = ex.map(workloads.wait_for_file, [gate.path] * 3, range(3), timeout=0.5)
        with pytest.raises(TimeoutError):
            next(results)
        gate.open()


def test_map_raises_the_calls_exception_at_its_item(broker: str) -> None:
    got = []
    with CeleryExecutor(broker=broker) as ex, pytest.raises(ValueError, match="bad item 7") as info:
        for value in ex.map(workloads.fail_at_7, range(20), chunksize=3):
            got.append(value)
    assert got == list(range(7))
    assert type(info.value) is ValueError and str(info.value) == "bad item 7"  # the worker's own exception
    assert "fail_at_7" in str(info.value.__cause__)  # the worker's traceback


def test_shutdown_cancel_futures_cancels_pending_work(broker: str, gate: Gate) -> None:
    ex = CeleryExecutor(max_workers=2, broker=broker)
    futures = [ex.submit(workloads.wait_for_file, gate.path, i) for i in range(20)]
    ex.shutdown(wait=False, cancel_futures=True)
    cancelled = [n for n, f in enumerate(futures) if f.cancelled()]
    assert len(cancelled) >= 20 - ex._dispatcher.window  # at most a window was sent
    gate.open()
    ex.shutdown(wait=True)
    ran = [n for n, f in enumerate(futures) if not f.cancelled()]
    assert [futures[n].result() for n in ran] == ran
    assert gate.ran() == ran  # cancelled calls never started


def test_future_cancel_before_it_starts(broker: str, gate: Gate) -> None:
    with CeleryExecutor(max_workers=2, broker=broker) as ex:
        futures = [ex.submit(workloads.wait_for_file, gate.path, i) for i in range(12)]
        last = futures[-1]
        assert last.cancel() and last.cancelled()
        gate.open()
        assert [f.result(timeout=60) for f in futures[:-1]] == list(range(11))
    assert 11 not in gate.ran()


def test_as_completed_yields_each_future_as_it_finishes(broker: str, gate: Gate) -> None:
    with CeleryExecutor(max_workers=2, broker=broker) as ex:
        blocked = ex.submit(workloads.wait_for_file, gate.path, 99)
        fast = [ex.submit(square, i) for i in range(3)]
        order = []
        for future in as_completed([blocked, *fast], timeout=60):
            order.append(future)
            if len(order) == 3:
                gate.open()
    assert set(order[:3]) == set(fast) and order[3] is blocked
    assert sorted(f.result() for f in fast) == [0, 1, 4] and blocked.result() == 99


def test_wait_first_completed(broker: str, gate: Gate) -> None:
    with CeleryExecutor(max_workers=2, broker=broker) as ex:
        blocked = ex.submit(workloads.wait_for_file, gate.path)
        fast = ex.submit(workloads.scaled, 6, factor=7)
        done, not_done = wait([blocked, fast], timeout=60, return_when=FIRST_COMPLETED)
        assert done == {fast} and not_done == {blocked}
        assert fast.result() == 42
        gate.open()


def test_done_callbacks_and_submit_after_shutdown(broker: str) -> None:
    seen: list[Future[Any]] = []
    with CeleryExecutor(broker=broker) as ex:
        future = ex.submit(cube, 3)
        future.add_done_callback(seen.append)
    assert seen == [future] and future.result() == 27
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(cube, 3)


# --- values survive the trip -----------------------------------------------------------

VALUES = [
    2**200, -(3**100), 0, True, None, "naïve ☃",
    0.1 + 0.2, -0.0, 5e-324, 1.7976931348623157e308, math.inf, -math.inf, math.nan,
    (1, (2.5, "x"), [None]), [[], {}, ()], {"a": (1, 2), "__tuple__": [1], "b": {"c": [1.5]}},
]  # fmt: skip


def test_values_come_back_as_a_local_call_returns_them(broker: str) -> None:
    with CeleryExecutor(broker=broker) as ex:
        got = list(ex.map(workloads.echo, VALUES, chunksize=4))
    assert_same(got, [workloads.echo(v) for v in VALUES])


def test_other_types_get_a_clear_error_naming_type_and_item(broker: str) -> None:
    with CeleryExecutor(broker=broker) as ex:
        with pytest.raises(ResultNotSerializable, match=r"echo\(range\(0, 3\)\) \(item 2\): a value of type range"):
            ex.map(workloads.echo, [1, 2, range(3)])
        with pytest.raises(
            ResultNotSerializable, match=r"result of tests\.workloads:unpicklable_result\(5\): a value of type object"
        ):
            ex.submit(workloads.unpicklable_result, 5).result(timeout=60)
        with pytest.raises(TargetError, match="lambda"):
            ex.submit(lambda x: x, 1)


# --- multiprocessing.Pool semantics ----------------------------------------------------


def test_pool_chunksize_keeps_a_chunk_in_one_process(broker: str) -> None:
    with Pool(broker=broker) as pool:
        rows = pool.map(workloads.where, range(20), chunksize=5)
    assert [r[0] for r in rows] == list(range(20))
    for start in range(0, 20, 5):
        assert len({r[1] for r in rows[start : start + 5]}) == 1
    assert all(r[1] != os.getpid() for r in rows)


def test_pool_map_and_starmap_raise_the_first_failing_item(broker: str) -> None:
    with Pool(broker=broker) as pool:
        assert pool.starmap(workloads.add, [(1, 2), (3, 4)]) == [3, 7]
        with pytest.raises(ValueError, match="bad item 7"):
            pool.map(workloads.fail_at_7, range(20), chunksize=3)


def values_and_errors(results: Any) -> list[object]:
    """Every value of an ``imap`` iterator read by ``next(timeout)``, a ValueError's message in its place."""
    got: list[object] = []
    while True:
        try:
            got.append(results.next(timeout=60))
        except ValueError as exc:
            got.append(str(exc))
        except StopIteration:
            return got


def test_pool_imap_yields_in_order_raises_at_the_item_and_goes_on(broker: str) -> None:
    with Pool(broker=broker) as pool:
        got = values_and_errors(pool.imap(workloads.fail_at_7, iter(range(10)), chunksize=2))
        assert got[:7] == list(range(7)) and "bad item 7" in str(got[7]) and got[8:] == [8, 9]
        assert sorted(pool.imap_unordered(square, range(30), chunksize=4)) == [square(i) for i in range(30)]


def test_a_map_over_a_range_sends_its_bounds_and_raises_at_the_right_item(broker: str) -> None:
    with CeleryExecutor(broker=broker) as ex:
        batch = ex._dispatcher.map_calls(square, list(range(5, 500, 7)), chunksize=10)
        assert [v for slot in range(batch.size) for v in (batch.wait(slot, 60), *batch.values(slot))[1:]] == [
            square(i) for i in range(5, 500, 7)
        ]
        assert all(c.spec is not None and c.spec.is_range for c in batch.chunks)
        assert [c.spec.start for c in batch.chunks if c.spec] == list(range(5, 500, 70))
        # Values equal to a range's but of other types travel as they are.
        assert_same(list(ex.map(workloads.echo, [-1, 0, True, 2])), [-1, 0, True, 2])
        assert_same(list(ex.map(workloads.echo, [0.0, 1.0])), [0.0, 1.0])
    with Pool(broker=broker) as pool:
        # Items 1, 3, 5 | 7, 9, 11 | ...: 7 is the first item of the second chunk, not its eighth.
        with pytest.raises(ValueError, match="bad item 7"):
            pool.map(workloads.fail_at_7, range(1, 20, 2), chunksize=3)
        got = values_and_errors(pool.imap(workloads.fail_at_7, range(1, 20, 2), chunksize=3))
        assert got == [1, 3, 5, "bad item 7", *range(9, 20, 2)]


def test_pool_imap_for_loops_and_next_take_turns_without_losing_or_repeating_an_item(broker: str) -> None:
    """A ``for`` loop takes a chunk's values in bulk; it shares the iterator's place with ``next()``."""
    with Pool(broker=broker) as pool:
        results = pool.imap(square, range(50), chunksize=7)
        got = [next(results), results.next(timeout=60)]
        for value in results:  # stopped mid-chunk
            got.append(value)
            if len(got) == 20:
                break
        got += [next(results) for _ in range(5)]
        got += list(results)
        assert got == [square(i) for i in range(50)]
        # A for loop's iterator left mid-chunk, then next() past the end of that chunk, then
        # the old iterator again: it goes on from where next() stopped.
        results = pool.imap(square, range(30), chunksize=7)
        old = iter(results)
        got = [next(old) for _ in range(3)] + [next(results) for _ in range(9)] + [next(old)]
        got += list(results)
        assert got == [square(i) for i in range(30)]
        failing = pool.imap(workloads.fail_at_7, range(10), chunksize=4)
        seen: list[int] = []
        with pytest.raises(ValueError, match="bad item 7"):
            for value in failing:
                seen.append(value)
        assert seen == list(range(7)) and list(failing) == [8, 9]  # the rest still comes, as in multiprocessing


def test_pool_close_lets_a_running_imap_finish_its_input(broker: str) -> None:
    pool = Pool(2, broker=broker)
    results = pool.imap(square, iter(range(100)))  # read lazily: far more than is in flight
    pool.close()
    pool.join()
    assert list(results) == [square(i) for i in range(100)]


def test_pool_apply_async_callbacks_and_timeout(broker: str, gate: Gate) -> None:
    values: list[object] = []
    errors: list[BaseException] = []
    with Pool(2, broker=broker) as pool:
        assert pool.apply(workloads.scaled, (4,), {"factor": 3}) == 12
        ok = pool.apply_async(cube, (3,), callback=values.append)
        bad = pool.apply_async(workloads.fail_at_7, (7,), error_callback=errors.append)
        mapped = pool.map_async(square, range(5), callback=values.append)
        assert ok.get(timeout=60) == 27 and mapped.get(timeout=60) == [0, 1, 4, 9, 16]
        bad.wait(60)
        assert not bad.successful() and isinstance(errors[0], ValueError)
        assert values in ([27, [0, 1, 4, 9, 16]], [[0, 1, 4, 9, 16], 27])
        slow = pool.apply_async(workloads.wait_for_file, (gate.path,))
        with pytest.raises(multiprocessing.TimeoutError):
            slow.get(timeout=0.3)
        with pytest.raises(ValueError, match="not ready"):
            slow.successful()
        gate.open()
        assert slow.get(timeout=60) == 0


def test_pool_close_join_and_terminate(broker: str, gate: Gate) -> None:
    pool = Pool(2, broker=broker)
    pending = pool.map_async(square, range(10))
    with pytest.raises(ValueError, match="still running"):
        pool.join()
    pool.close()
    with pytest.raises(ValueError, match="not running"):
        pool.apply_async(square, (1,))
    pool.join()
    assert pending.ready() and pending.get() == [i * i for i in range(10)]

    pool = Pool(2, broker=broker)
    blocked = [pool.apply_async(workloads.wait_for_file, (gate.path, i)) for i in range(10)]
    pool.terminate()
    pool.join()
    gate.open()
    for result in blocked:
        assert result.ready() and not result.successful()
    assert len(gate.ran()) < 10  # queued work was dropped, not run


def test_pool_terminate_stops_calls_already_running(shared_workers: Workers, broker: str, gate: Gate) -> None:
    pool = Pool(2, broker=broker)
    blocked = [pool.apply_async(workloads.wait_for_file, (gate.path, i)) for i in range(2)]
    wait_until(lambda: len(gate.ran()) == 2, 60, "both calls running")
    pool.terminate()
    pool.join()
    # The gate never opens (the calls would wait 120 s): only stopping their processes
    # frees both worker processes for the next job.
    started = time.monotonic()
    assert run_loop(square, range(8), backend="celery", settings=shared_workers.settings) == [i * i for i in range(8)]
    assert time.monotonic() - started < 30
    assert not any(result.successful() for result in blocked)


def test_executor_calls_survive_their_ledger_vanishing(shared_workers: Workers, broker: str, gate: Gate) -> None:
    # As after a Redis restart without persistence, or a ledger expired under a long-lived
    # executor: the running call's result has nowhere to go. The executor sends it again.
    with CeleryExecutor(broker=broker) as ex:
        future = ex.submit(workloads.wait_for_file, gate.path, 0, 60)
        wait_until(lambda: gate.ran(), 60, "the call running")
        client = shared_workers.settings.redis_client()
        for job in ex._dispatcher._jobs.by_target.values():
            client.delete(*[key for key in client.scan_iter(match=f"distloop:job:{job.job_id}*")])
        client.close()
        gate.open()
        assert future.result(timeout=60) == 0


# --- joblib ------------------------------------------------------------------------------


def test_joblib_parallel_runs_on_the_celery_workers(shared_workers: Workers, broker: str) -> None:
    joblib = pytest.importorskip("joblib", reason="joblib is in the dev extra: pip install -e '.[dev]'")
    from distloop import register_joblib

    register_joblib()
    with joblib.parallel_config(backend="distloop", broker=broker):
        rows = joblib.Parallel(n_jobs=2)(joblib.delayed(workloads.where)(i) for i in range(40))
        stuff = joblib.Parallel(n_jobs=-1)(joblib.delayed(calc_stuff)(p) for p in range(0, 70, 7))
    assert [r[0] for r in rows] == list(range(40))
    worker_pids = {p.pid for p in shared_workers.processes}
    assert {r[2] for r in rows} <= worker_pids  # each call ran in a child of a celery worker
    assert os.getpid() not in {r[1] for r in rows}
    assert_same(stuff, [calc_stuff(p) for p in range(0, 70, 7)])


def test_joblib_missing_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from distloop import UsageError, register_joblib

    monkeypatch.setitem(__import__("sys").modules, "joblib", None)
    with pytest.raises(UsageError, match=r"pip install 'distloop\[joblib\]'"):
        register_joblib()


# --- the same facades on every backend, and the allow-list --------------------------------


@pytest.mark.parametrize("backend", ["serial", "thread", "process"])
def test_facades_run_on_the_local_backends_too(backend: str) -> None:
    """One backend interface: the facades pick a backend by name, like run_loop."""
    with CeleryExecutor(2, backend=backend) as ex:
        assert_same(list(ex.map(calc_stuff, range(0, 70, 7))), [calc_stuff(p) for p in range(0, 70, 7)])
    with Pool(2, backend=backend) as pool:
        assert_same(pool.starmap(workloads.add, [(1, 2), (3, 4)]), [3, 7])


def test_an_unreachable_broker_fails_at_construction_with_one_clear_error() -> None:
    from distloop import BrokerUnavailable

    with pytest.raises(BrokerUnavailable, match=r"cannot reach Redis at redis://127\.0\.0\.1:1/0"):
        CeleryExecutor(broker="redis://127.0.0.1:1/0")
    with pytest.raises(BrokerUnavailable):
        Pool(broker="redis://127.0.0.1:1/0")


def test_workers_refuse_functions_outside_their_allow_list(broker: str) -> None:
    from distloop import TargetNotAllowed
    from distloop.sizing import auto_chunk_size

    with CeleryExecutor(broker=broker) as ex, pytest.raises(TargetNotAllowed, match="allow-list"):
        ex.submit(auto_chunk_size, 10, 0.1, 3).result(timeout=60)


# --- units: the codec's refusals, and the errors a caller sees ------------------------------


class Colour(enum.IntEnum):
    RED = 1


class Name(str):
    pass


class Dec(decimal.Decimal):
    pass


@pytest.mark.parametrize(
    "value, type_name",
    [(range(2), "range"), (object(), "object"), (Colour.RED, "tests.test_facades.Colour"),
     (Name("a"), "tests.test_facades.Name"), (Dec(1), "tests.test_facades.Dec"), ({1: iter(())}, "tuple_iterator"),
     ([1, (2, {3: Ellipsis})], "ellipsis")],
)  # fmt: skip
def test_codec_refuses_other_types_by_name(value: object, type_name: str) -> None:
    with pytest.raises(codec.NotJSONable) as info:
        codec.encode(value)
    assert info.value.type_name == type_name


def test_call_errors_keep_builtin_types_and_the_worker_traceback() -> None:
    error = {"type": "KeyError", "message": "'k'", "traceback": "Traceback ...\nKeyError: 'k'"}
    exc = call_error(error, "m:f(1)")
    assert isinstance(exc, KeyError) and isinstance(exc, CallFailed)
    assert str(exc) == "m:f(1) raised KeyError: 'k'" and "KeyError" in str(exc.__cause__)
    odd = call_error({"type": "FileNotFoundError", "message": "gone"}, "m:f(2)")  # from a worker that sent no args
    assert isinstance(odd, FileNotFoundError) and isinstance(odd, CallFailed)
    assert str(odd) == "m:f(2) raised FileNotFoundError: gone"
    own = call_error({"type": "MyError", "message": "x"}, "m:f(3)")
    assert type(own) is CallFailed and own.exc_type == "MyError"


# --- chunks of calls: each call runs once, short calls share messages -----------------------


def test_a_failing_call_in_a_chunk_runs_once_and_the_rest_of_its_chunk_still_runs(broker: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    with Pool(2, broker=broker) as pool, pytest.raises(ValueError, match="bad item 3"):
        pool.starmap(workloads.log_and_fail_at_3, [(str(log), i) for i in range(10)], chunksize=10)
    assert sorted(int(line) for line in log.read_text().split()) == list(range(10))  # each call exactly once


def test_a_burst_of_short_submits_shares_messages(broker: str) -> None:
    with CeleryExecutor(broker=broker) as ex:
        assert ex.submit(square, 0).result(timeout=60) == 0  # the workers time square once
        futures = [ex.submit(square, i) for i in range(2000)]
        assert [f.result(timeout=60) for f in futures] == [square(i) for i in range(2000)]
        job = ex._dispatcher._jobs.by_target["distloop.tasks.demo:square"]
        messages = ex._dispatcher._jobs.next_index[job.target]
    assert messages < 100  # 2001 calls; alone, each would have been a message


def test_a_compact_chunk_whose_arguments_a_worker_cannot_read_fails_every_call(shared_workers: Workers) -> None:
    """``{"each": [...]}`` (map's form) with a forged argument: every call fails, none runs."""
    spec = {"index": 0, "each": [1, {"__ndarray__": ["|O8", [1], "C", "AAAAAAAAAAA="]}, 3]}
    result = run_sent_chunk(shared_workers.settings, spec)
    assert [e["index"] for e in result["errors"]] == [0, 1, 2]
    assert all("arguments cannot be read on this worker" in e["message"] for e in result["errors"])


# --- long lists of calls travel beside their message (distloop.backends.arguments.pack) ---


def test_a_long_list_of_calls_is_packed_beside_its_message_and_a_short_one_is_not() -> None:
    from distloop.backends.arguments import PACK_ITEMS, pack
    from distloop.tasks.kernel import ChunkSpec

    values = list(range(20_000))
    long = pack(ChunkSpec(index=7, each=values))
    assert long.each is None and long.packed == {"field": "each", "name": "calls:7", "items": len(values)}
    assert long.blobs is not None and json_list(long.blobs["calls:7"]) == values
    assert len(long) == len(values) and not long.is_range
    wire = long.to_wire()
    assert "each" not in wire and wire["blobs"] == ["calls:7"] and len(str(wire)) < 200  # names only
    assert pack(long) is long  # already packed: the same blob, sent again
    short = ChunkSpec(index=1, each=list(range(PACK_ITEMS - 1)))
    assert pack(short) is short
    calls = pack(ChunkSpec(index=2, calls=[[[i, "x" * 80], {}] for i in range(PACK_ITEMS)]))
    assert calls.calls is None and calls.packed is not None and calls.packed["field"] == "calls"


def json_list(data: bytes) -> list[Any]:
    import json

    return list(json.loads(data))


def test_values_of_a_long_map_come_back_the_same_through_its_packed_list(broker: str) -> None:
    np = pytest.importorskip("numpy", reason="numpy is in the dev extra")
    big = np.arange(20_000, dtype=np.float64)  # its own blob, referenced from inside the packed list
    values: list[Any] = [i if i % 3 else (float(i), decimal.Decimal(i), {i: "int key"}) for i in range(3000)]
    values[1500] = big
    with CeleryExecutor(broker=broker) as ex:
        got = list(ex.map(workloads.echo, values, chunksize=len(values)))  # one chunk: packed
    assert len(got) == len(values)
    assert np.array_equal(got[1500], big) and got[1500].dtype == big.dtype
    for position, (g, e) in enumerate(zip(got, values, strict=True)):
        if position != 1500:
            assert_same(g, e, f"item {position}")


@pytest.mark.parametrize(
    "packed, why",
    [
        ({"field": "each", "name": "calls:0", "items": 3}, "is gone from the job's ledger"),
        ({"field": "start", "name": "calls:0", "items": 3}, "is gone from the job's ledger"),
    ],
)
def test_a_chunk_whose_packed_calls_cannot_be_read_fails_every_call(
    shared_workers: Workers, packed: dict[str, Any], why: str
) -> None:
    spec = {"index": 0, "packed": packed, "blobs": ["calls:0"]}
    result = run_sent_chunk(shared_workers.settings, spec)
    assert [e["index"] for e in result["errors"]] == [0, 1, 2]
    assert all(why in e["message"] for e in result["errors"]), result["errors"]
