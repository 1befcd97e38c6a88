"""Side effects once: within one delivery of a chunk, ``f`` runs exactly once per item, also when one fails.

The user's function appends a line per call to a file; one item in the middle
fails. Counted end to end from a user's project folder on every backend (real
prefork workers for celery), for ``--on-error raise`` and ``collect``, with and
without ``--reduce sum``, and through ``Pool.map`` (call-list chunks); and in the
kernel itself for every reduce op, range and call-list chunks, and values that
cannot travel.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from distloop.tasks.kernel import ChunkResult, ChunkSpec, run_chunk
from tests.conftest import Workers
from tests.user_project import build_project, run_in, user_env, venv_command

pytestmark = pytest.mark.integration

BACKENDS = ("serial", "thread", "process", "celery")
FAIL_AT = 15
ITEMS = range(40)
CHUNK = 10  # so the failing item is in the middle of chunk 1 (10..19)

SIDEFX = f"""
    import os


    def f(i):
        with open(os.environ["CALLS_FILE"], "a") as calls:
            calls.write(f"{{i}}\\n")
        if i == {FAIL_AT}:
            raise ValueError(f"bad item {{i}}")
        return i
"""

POOL_MAP = """
    import sys

    import distloop
    import sidefx

    if __name__ == "__main__":
        with distloop.Pool(backend=sys.argv[1]) as pool:
            try:
                pool.map(sidefx.f, range(40), chunksize=10)
            except ValueError as exc:
                print("raised", type(exc).__name__, exc)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_project(tmp_path_factory.mktemp("sidefx-home"), {"sidefx.py": SIDEFX, "pool_map.py": POOL_MAP})


def environment(request: pytest.FixtureRequest, project: Path, backend: str, calls: Path) -> dict[str, str]:
    """The user's shell for ``backend``: for celery, a real worker started in the project folder."""
    env = user_env(CALLS_FILE=str(calls))
    if backend == "celery":
        workers: Workers = request.getfixturevalue("workers")
        workers.start(concurrency=2, cwd=project, extra_env={"CALLS_FILE": str(calls), "DISTLOOP_ALLOW": "sidefx"})
        env["DISTLOOP_BROKER_URL"] = workers.settings.effective_broker_url
    return env


def counted(calls: Path) -> Counter[int]:
    return Counter(int(line) for line in calls.read_text().split())


def assert_once(calls: Counter[int], on_error: str) -> None:
    """Each item's line at most once; every item with collect; with raise, the failing chunk up to its failure."""
    assert max(calls.values()) == 1, {i: n for i, n in calls.items() if n > 1}
    failing_chunk = range(FAIL_AT - FAIL_AT % CHUNK, FAIL_AT - FAIL_AT % CHUNK + CHUNK)
    if on_error == "collect":
        assert sorted(calls) == list(ITEMS)
    else:
        assert [calls[i] for i in failing_chunk] == [1 if i <= FAIL_AT else 0 for i in failing_chunk], calls


@pytest.mark.parametrize("reduce", [None, "sum"])
@pytest.mark.parametrize("on_error", ["raise", "collect"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_each_item_runs_once_when_one_fails(
    request: pytest.FixtureRequest, project: Path, tmp_path: Path, backend: str, on_error: str, reduce: str | None
) -> None:
    calls = tmp_path / "calls.txt"
    env = environment(request, project, backend, calls)
    argv = [venv_command("distloop"), "run", "sidefx:f", "--range", f"{ITEMS.start}:{ITEMS.stop}", "--backend",
            backend, "--chunk-size", str(CHUNK), "--on-error", on_error, "--json", "--no-progress"]  # fmt: skip
    done = run_in(project, argv + (["--reduce", reduce] if reduce else []), env)
    assert done.returncode == 1, done.stderr
    assert f"bad item {FAIL_AT}" in done.stdout + done.stderr
    assert_once(counted(calls), on_error)
    if on_error == "collect":
        report = json.loads(done.stdout)
        good = [None if i == FAIL_AT else i for i in ITEMS]
        expected: Any = sum(i for i in good if i is not None) if reduce else good
        assert report["result"] == expected
        assert [e["index"] for e in report["errors"]] == [FAIL_AT]


@pytest.mark.parametrize("backend", BACKENDS)
def test_pool_map_call_list_chunks_run_each_call_once(
    request: pytest.FixtureRequest, project: Path, tmp_path: Path, backend: str
) -> None:
    calls = tmp_path / "calls.txt"
    done = run_in(project, [sys.executable, "pool_map.py", backend], environment(request, project, backend, calls))
    assert done.returncode == 0 and f"raised ValueError bad item {FAIL_AT}" in done.stdout, done.stdout + done.stderr
    assert_once(counted(calls), "collect")  # as multiprocessing's: every call made, the first error raised


# --- the kernel itself ----------------------------------------------------------------------


def strip(result: ChunkResult) -> dict[str, Any]:
    """A result without what differs between runs (time, traceback text)."""
    data = result.to_wire()
    data.pop("seconds", None)
    for error in data.get("errors", []):
        error["traceback"] = bool(error["traceback"])
    return data


KINDS = {
    "one fails": lambda i: 1 // (i - 5),
    "every third fails": lambda i: i if i % 3 else 1 // 0,
    "one cannot travel": lambda i: {i} if i == 7 else i,
    "a None": lambda i: None if i == 4 else i,
    "a str among ints": lambda i: "x" if i == 6 else i,
    "floats": lambda i: i * 0.1,
}


@pytest.mark.parametrize("form", ["range", "calls", "calls with kwargs"])
@pytest.mark.parametrize("on_error", ["raise", "collect"])
@pytest.mark.parametrize("reduce", [None, "sum", "min", "max", "count"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_kernel_calls_f_once_per_item_and_matches_the_item_by_item_path(
    kind: str, reduce: str | None, on_error: str, form: str
) -> None:
    made: list[int] = []

    def f(i: int, scale: int = 1) -> Any:
        made.append(i)
        return KINDS[kind](i * scale)

    chunk = {
        "range": ChunkSpec(3, 0, 12, 1),
        "calls": ChunkSpec(3, calls=[[[i], {}] for i in range(12)]),
        "calls with kwargs": ChunkSpec(3, calls=[[[i], {"scale": 1}] for i in range(12)]),
    }[form]
    reference = strip(run_chunk(f, chunk, reduce, on_error, fast=False))  # item by item: the semantics
    expected_calls = list(made)
    made.clear()
    assert strip(run_chunk(f, chunk, reduce, on_error, fast=True)) == reference
    assert len(made) == len(set(made)), f"f ran twice for {sorted(i for i in made if made.count(i) > 1)}"
    # With raise, a value that cannot travel or fold is found after the calls: the items after
    # it in the chunk ran (once each), which the item-by-item path does not reach.
    if on_error == "collect" or kind not in ("one cannot travel", "a str among ints"):
        assert made == expected_calls


def test_kernel_reduces_big_chunks_in_blocks_exactly() -> None:
    chunk = ChunkSpec(0, 0, 10_000, 1)
    folded = run_chunk(lambda i: i * 0.1, chunk, "sum", fast=False).partial
    assert run_chunk(lambda i: i * 0.1, chunk, "sum").partial == pytest.approx(folded, rel=1e-12)
    assert run_chunk(lambda i: -i, chunk, "min").partial == -9_999
    failed = run_chunk(lambda i: 1 // (i - 9_000), chunk, "sum", "collect")
    assert failed.partial == sum(1 // (i - 9_000) for i in range(10_000) if i != 9_000)
    assert [e["index"] for e in failed.errors] == [9_000] and failed.items == 10_000
