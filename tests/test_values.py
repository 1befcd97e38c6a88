"""Values numerical code returns travel, end to end: as results and as arguments, on every backend.

A user's project folder (tests/user_project.py) gets ``valuesamples.py`` (a copy of
tests/value_samples.py: one value of each kind, and the loop functions ``result_at`` and
``echo``) and a script that sends the table through ``run_loop`` (results, and the values
as arguments), ``CeleryExecutor.map``, ``Pool.map`` and, on celery, joblib. ``distloop run``
prints the results from the command line. On celery the workers are real prefork workers
(the embedded cluster, started from the project folder). Each row is checked exactly
(tests.value_samples.same: type, value, bits, memory order, time zone).
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from distloop import CeleryExecutor, ChunkFailed, Pool, ResultNotSerializable, run_loop
from distloop.tasks.core import codec
from distloop.tasks.core.settings import Settings
from tests import workloads
from tests.conftest import Workers, run_cli, run_sent_chunk
from tests.user_project import build_project, run_in, user_env, venv_command
from tests.value_samples import NUMPY_ROWS, ROWS, np, same, samples

pytestmark = pytest.mark.integration

BACKENDS = ("serial", "thread", "process", "celery")

SCRIPT = """
    # The table's values through the Python API and the facades; prints the codec's lossless form.
    import json
    import sys

    import distloop
    import valuesamples
    from distloop.tasks.core import codec

    if __name__ == "__main__":
        backend = sys.argv[1]
        values = list(valuesamples.samples().values())
        out = {}
        out["run_loop results"] = distloop.run_loop(valuesamples.result_at, range(len(values)), backend=backend,
                                                    chunk_size=4)
        out["run_loop arguments"] = distloop.run_loop(valuesamples.echo, values, backend=backend, chunk_size=4)
        with distloop.CeleryExecutor(backend=backend) as executor:
            out["CeleryExecutor.map"] = list(executor.map(valuesamples.echo, values, chunksize=4))
            out["CeleryExecutor.submit results"] = [executor.submit(valuesamples.result_at, i).result()
                                                    for i in range(len(values))]
        with distloop.Pool(backend=backend) as pool:
            out["Pool.map"] = pool.map(valuesamples.echo, values, chunksize=4)
        if backend == "celery":
            import joblib

            distloop.register_joblib()
            with joblib.parallel_config(backend="distloop"):
                out["joblib"] = joblib.Parallel(n_jobs=2)(joblib.delayed(valuesamples.echo)(v) for v in values)
            out["Parallel"] = distloop.Parallel(n_jobs=2, batch_size=4)(distloop.delayed(valuesamples.echo)(v)
                                                                        for v in values)
        print(json.dumps(codec.encode(out)))
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    samples_source = (Path(__file__).parent / "value_samples.py").read_text()
    return build_project(
        tmp_path_factory.mktemp("values-home"), {"valuesamples.py": samples_source, "values_job.py": SCRIPT}
    )


@cache
def api_outputs(project: Path, backend: str) -> dict[str, list[Any]]:
    """What the project's script got back on ``backend``, decoded: path -> one value per row."""
    done = run_in(project, [sys.executable, "values_job.py", backend], user_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    return codec.decode(json.loads(done.stdout.strip().splitlines()[-1]))


@cache
def cli_output(project: Path, backend: str) -> list[Any]:
    """``distloop run valuesamples.py:result_at`` over every row, its --json result decoded."""
    argv = [venv_command("distloop"), "run", "valuesamples.py:result_at", "--range", f"0:{len(ROWS)}",
            "--backend", backend, "--chunk-size", "4", "--json"]  # fmt: skip
    done = run_in(project, argv, user_env())
    assert done.returncode == 0, done.stderr
    return codec.decode(json.loads(done.stdout)["result"])


def table_rows() -> list[Any]:
    params = []
    for backend in BACKENDS:
        for name in ROWS:
            marks = [pytest.mark.skipif(np is None, reason="numpy is not installed")] if name in NUMPY_ROWS else []
            params.append(pytest.param(backend, name, marks=marks, id=f"{backend}-{name}"))
    return params


@pytest.mark.slow
@pytest.mark.parametrize("backend, name", table_rows())
def test_value_travels_as_result_and_argument_from_a_user_project(project: Path, backend: str, name: str) -> None:
    expected = samples()[name]
    position = list(samples()).index(name)
    outputs = api_outputs(project, backend)
    expected_paths = {"run_loop results", "run_loop arguments", "CeleryExecutor.map", "CeleryExecutor.submit results",
                      "Pool.map"} | ({"joblib", "Parallel"} if backend == "celery" else set())  # fmt: skip
    assert set(outputs) == expected_paths
    for path, values in outputs.items():
        assert same(expected, values[position]), f"{path} on {backend}: {expected!r} came back as {values[position]!r}"
    # The command line prints JSON: tuples as lists (as it always did), every other type tagged.
    printed = codec.decode(json.loads(codec.to_json(expected)))
    assert same(printed, cli_output(project, backend)[position])


# --- big ints and over-deep values: travel, or a clear error at their item; nothing breaks --------

BIG = 10**5000 + 1


def nest_tuples(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = (value,)
    return value


def nest_maps(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {0: value}
    return value


DEEP = workloads.nested(500)


@pytest.fixture
def broker(shared_workers: Workers) -> str:
    assert shared_workers.settings.broker_url is not None
    return shared_workers.settings.broker_url


def settings_of(broker: str) -> Settings:
    return Settings(broker_url=broker)


def test_big_ints_travel_both_ways_through_celery(broker: str) -> None:
    with CeleryExecutor(broker=broker) as ex:
        assert ex.submit(workloads.echo, BIG).result(timeout=60) == BIG
        assert list(ex.map(workloads.echo, [1, -BIG, 2])) == [1, -BIG, 2]
    with Pool(broker=broker) as pool:
        assert pool.map(workloads.echo, [BIG, 3]) == [BIG, 3]
    assert run_loop(workloads.big_int, range(3), settings=settings_of(broker)) == [10**5000 + i for i in range(3)]
    assert run_loop(workloads.big_int, range(3), settings=settings_of(broker), reduce="sum") == 3 * 10**5000 + 3


def test_over_deep_values_are_refused_at_their_item_and_nothing_breaks(broker: str) -> None:
    with CeleryExecutor(broker=broker) as ex:
        with pytest.raises(ResultNotSerializable, match=r"\(item 1\): a value nested more than 100 containers deep"):
            ex.map(workloads.echo, [1, DEEP])
        with pytest.raises(ResultNotSerializable, match=r"result of tests\.workloads:too_deep\(4\): a value nested"):
            ex.submit(workloads.too_deep, 4).result(timeout=60)
        assert ex.submit(workloads.echo, BIG).result(timeout=60) == BIG  # the executor still works
        for deepest in (nest_tuples(codec.MAX_DEPTH), nest_maps(codec.MAX_DEPTH)):  # on a worker's stack too
            assert ex.submit(workloads.echo, deepest).result(timeout=60) == deepest
    with Pool(broker=broker) as pool:
        with pytest.raises(ResultNotSerializable, match="nested more than 100 containers deep"):
            pool.map(workloads.echo, [DEEP])
        assert pool.map(workloads.echo, [1, 2]) == [1, 2]
    with pytest.raises(ChunkFailed, match=r"result of f\(0\): a value nested more than 100 containers deep"):
        run_loop(workloads.too_deep, range(3), settings=settings_of(broker))
    with pytest.raises(ResultNotSerializable, match=r"cannot send item 1 \(\[\[\[.*nested more than 100 containers"):
        run_loop(workloads.echo, [1, DEEP], settings=settings_of(broker))
    assert run_loop(workloads.echo, [BIG, (1, 2)], settings=settings_of(broker)) == [BIG, (1, 2)]


def test_cli_prints_big_ints_tagged_and_never_hangs(broker: str) -> None:
    done = run_cli("run", "tests.workloads:big_int", "--range", "0:2", "--json", "--broker", broker)
    assert done.returncode == 0, done.stderr
    assert codec.decode(json.loads(done.stdout)["result"]) == [10**5000, 10**5000 + 1]


def test_a_chunk_whose_arguments_a_worker_cannot_read_fails_its_items_and_never_hangs(shared_workers: Workers) -> None:
    """A forged message (object dtype) reaches a real worker: its items fail; nothing is imported or run."""
    forged = {"__ndarray__": ["|O8", [1], "C", "AAAAAAAAAAA="]}
    result = run_sent_chunk(shared_workers.settings, {"index": 0, "calls": [[[forged], {}], [[1], {}]]})
    assert [e["index"] for e in result["errors"]] == [0, 1]
    assert all("arguments cannot be read on this worker: not a dtype that travels" in e["message"]
               for e in result["errors"])  # fmt: skip


@pytest.mark.skipif(np is None, reason="numpy is not installed")
def test_large_arrays_travel_beside_their_messages_and_leave_nothing_behind(shared_workers: Workers) -> None:
    """8 MB arrays as arguments and results on real workers: the message holds only names; each
    argument's bytes go once answered, a result's once read (run_loop's with its job)."""
    settings = shared_workers.settings
    client = settings.redis_client()
    array = workloads.million_floats(3)
    with CeleryExecutor(settings=settings) as ex:
        assert same(ex.submit(workloads.echo, array).result(timeout=60), array)
        assert same(ex.submit(workloads.million_floats, 3).result(timeout=60), array)
        # Arguments' bytes go once answered, results' once read: the executor's jobs keep none.
        assert not list(client.scan_iter("distloop:job:*:blobs"))
        results = list(ex.map(workloads.echo, [array[:20_000], array, 5], chunksize=1))
        assert [same(a, b) for a, b in zip(results, [array[:20_000], array, 5], strict=True)] == [True] * 3
    with Pool(settings=settings) as pool:
        assert same(pool.apply(workloads.echo, (array,)), array)
    assert same(run_loop(workloads.million_floats, range(3, 5), settings=settings)[0], array)
    assert not list(client.scan_iter("distloop:job:*:blobs"))
    client.close()


def test_an_array_argument_missing_beside_its_message_fails_its_item_and_never_hangs(shared_workers: Workers) -> None:
    """A message naming argument bytes that are not in the ledger (expired, forged): a clear item error."""
    ref = {"__ndarray__": ["<f8", [10_000], "C", {"__blob__": "gone"}]}
    result = run_sent_chunk(shared_workers.settings, {"index": 0, "calls": [[[ref], {}]], "blobs": ["gone"]})
    assert [e["message"] for e in result["errors"]] == [
        "arguments cannot be read on this worker: an array's data was not found beside the message "
        "(it expired, or was never stored)"
    ]
