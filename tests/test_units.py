"""Unit tests: ranges, chunk plans, sizing, the codec, the resolver, settings."""

from __future__ import annotations

import math

import pytest

from distloop.assemble import Assembler, ListSink
from distloop.ranges import as_range, parse_range
from distloop.sizing import ChunkPlanner, auto_chunk_size, call_chunk_size
from distloop.tasks.core import codec, defaults
from distloop.tasks.core.errors import ChunkFailed, TargetError, TargetNotAllowed, UsageError
from distloop.tasks.core.settings import Settings, mask_url
from distloop.tasks.kernel import ON_ERROR, REDUCERS, ChunkResult, ChunkSpec, run_chunk
from distloop.tasks.targets import is_allowed, parse_target, resolve


@pytest.mark.parametrize(
    "text, expected",
    [("0:10", range(0, 10)), ("10", range(10)), ("10:0:-3", range(10, 0, -3)), ("0:10:4", range(0, 10, 4)),
     ("5:5", range(5, 5)), (" -3 : 3 ", range(-3, 3))],
)  # fmt: skip
def test_parse_range_matches_python(text: str, expected: range) -> None:
    assert parse_range(text) == expected


@pytest.mark.parametrize("text", ["0:10:0", "a:b", "0:1:2:3", "", "1.5:3"])
def test_parse_range_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_range(text)


@pytest.mark.parametrize(
    "values, expected",
    [(list(range(10)), range(10)), (list(range(5, 500, 7)), range(5, 500, 7)),
     (list(range(10, -10, -3)), range(10, -10, -3)), ([4, 5], range(4, 6)), (range(3, 9, 2), range(3, 9, 2)),
     ([7], None), ([], None), ([1, 2, 4], None), ([0, 0, 0], None), ([0, 1, 2, 4, 4], None),
     ([0, True, 2], None), ([-1, 0, True, 2], None), ([0, 1, 2.0, 3], None),
     ([0, 1.0, 2], None), ([0.0, 1.0, 2.0], None), ([False, True], None),
     ((0, 1, 2), None), (["0", "1"], None), ([0, 2**63, 2**64], None), ([-(2**63) - 1, -(2**63)], None)],
)  # fmt: skip
def test_as_range_takes_exact_ints_one_step_apart_and_nothing_else(
    values: list[object], expected: range | None
) -> None:
    assert as_range(values) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("r", [range(0, 100), range(0, 101, 7), range(50, -50, -3), range(0), range(3, 4)])
@pytest.mark.parametrize("size", [1, 3, 10, 1000])
def test_fixed_chunks_cover_every_index_once_in_order(r: range, size: int) -> None:
    chunks = list(ChunkPlanner(r, 2, 0.0, fixed=size))
    assert [i for c in chunks for i in range(c.start, c.stop, c.step)] == list(r)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(len(c) == size for c in chunks[:-1])


@pytest.mark.parametrize("r", [range(0, 10_000), range(0, 2000, 3), range(500, -500, -1), range(0), range(1)])
@pytest.mark.parametrize("cost", [0.0, 1e-7, 0.003, 0.5])
def test_auto_chunks_cover_every_index_and_shrink_toward_the_end(r: range, cost: float) -> None:
    chunks = list(ChunkPlanner(r, 2, cost))
    assert [i for c in chunks for i in range(c.start, c.stop, c.step)] == list(r)
    sizes = [len(c) for c in chunks]
    assert sizes == sorted(sizes, reverse=True)
    if len(r) >= 100:
        assert len(chunks) >= 8  # at least 4 per worker


def test_tail_shrinks_even_when_the_cost_was_estimated_far_too_low() -> None:
    # Items that grow costlier (distloop.tasks.demo:skewed): the first estimate is tiny, and a floor
    # made from it alone (0.05 s / 1e-6 s = 50,000 items) would keep every chunk at the cap.
    planner = ChunkPlanner(range(3400), 2, 1e-6)
    sizes = [len(c) for c in planner]
    assert sizes[0] == planner.first_size == 425
    assert sizes[-2] <= 425 // 4 < sizes[0] and len(sizes) >= 12


def test_planner_learns_cost_from_finished_chunks() -> None:
    planner = ChunkPlanner(range(100_000), 2, 0.0)
    chunks = iter(planner)
    first = next(chunks)
    assert len(first) == 16  # nothing measured yet: a probe chunk, never run in the producer
    planner.observe(ChunkResult(index=0, items=len(first), seconds=len(first) * 0.01))  # 10 ms per item
    target = defaults.TARGET_CHUNK_SECONDS
    assert len(next(chunks)) == int(target / 0.01)
    planner.observe(ChunkResult(index=1, items=25, seconds=25 * 0.03))  # items grew costlier: recent weighs most
    assert len(next(chunks)) == int(target / 0.02)


def test_window_is_one_probe_per_worker_until_a_cost_is_known() -> None:
    planner = ChunkPlanner(range(100_000), 3, 0.0)
    assert planner.window() == 3
    planner.observe(ChunkResult(index=0, items=16, seconds=16 * 0.01))
    assert planner.window() == defaults.MIN_CHUNKS_PER_WORKER * 3
    assert ChunkPlanner(range(100_000), 3, 0.0, fixed=10).window() == defaults.MIN_CHUNKS_PER_WORKER * 3


def test_auto_chunk_size_balances_and_bounds_duration() -> None:
    # Cheap items: limited by balance (>= 4 chunks per worker).
    assert auto_chunk_size(1_000_000, 1e-7, 2) == 125_000
    # Costly items: limited by the target duration per chunk.
    assert auto_chunk_size(2000, 0.0026, 2) == int(defaults.TARGET_CHUNK_SECONDS / 0.0026)
    assert auto_chunk_size(3, 1.0, 8) == 1


def test_a_facade_map_of_calls_cheaper_than_a_message_goes_in_fewer_chunks() -> None:
    # Balanced chunks of 12,500 calls would each be 1.25 ms of work: 0.05 s each, a share at most.
    assert call_chunk_size(100_000, 1e-7, 2) == 50_000
    assert call_chunk_size(1_600_000, 2e-7, 4) == math.ceil(defaults.MIN_CHUNK_SECONDS / 2e-7)
    # Calls worth a chunk of their own, or not yet timed: as auto_chunk_size.
    assert call_chunk_size(1_000_000, 1e-6, 2) == auto_chunk_size(1_000_000, 1e-6, 2) == 125_000
    assert call_chunk_size(2000, 0.0026, 2) == auto_chunk_size(2000, 0.0026, 2)
    assert call_chunk_size(100_000, 0.0, 2) == auto_chunk_size(100_000, 0.0, 2)
    assert call_chunk_size(0, 1e-7, 2) == 1


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -(2**200), 0.1, math.pi, -0.0, "s", [1, (2, 3)], (1, 2.5, "x"), {"a": (1,)}, (), [],
     {"__tuple__": [1]}, {"__dict__": 1}],
)  # fmt: skip
def test_codec_round_trips_exactly(value: object) -> None:
    back = codec.decode(codec.encode(value))
    assert back == value and type(back) is type(value)


@pytest.mark.parametrize("value", [object(), range(3), {1: object()}, [1, (2, {3: iter([])})]])
def test_codec_refuses_what_json_cannot_carry(value: object) -> None:
    with pytest.raises(codec.NotJSONable):
        codec.encode(value)


def test_kernel_reduces_and_records_errors() -> None:
    chunk = ChunkSpec(0, 0, 10, 1)
    assert run_chunk(lambda i: i, chunk, "sum").partial == 45
    assert run_chunk(lambda i: i % 3 == 0, chunk, "count").partial == 4
    result = run_chunk(lambda i: 1 // (i - 5), chunk, None, "collect")
    assert [e["index"] for e in result.errors] == [5] and result.items == 10
    stopped = run_chunk(lambda i: 1 // (i - 5), chunk, None, "raise")
    assert stopped.items == 5 and stopped.errors[0]["type"] == "ZeroDivisionError"


def test_resolver_checks_allow_list_before_importing() -> None:
    with pytest.raises(TargetNotAllowed, match="allow-list"):
        resolve("os:system", ["distloop.tasks.demo"])
    with pytest.raises(TargetNotAllowed):
        resolve("tests.never_imported_module:f", ["distloop.tasks.demo"])
    assert resolve("distloop.tasks.demo:square", ["distloop.tasks.demo"])(3) == 9
    assert is_allowed(parse_target("pkg.sub.mod:f"), ["pkg.*"])
    assert not is_allowed(parse_target("pkgx:f"), ["pkg"])


@pytest.mark.parametrize(
    "target, message",
    [("nomodule_xyz:f", "cannot import"), ("distloop.tasks.demo:nope", "no function"),
     ("distloop.tasks.demo:math", "not a callable"), ("distloop.tasks.demo", "module:function"),
     ("missing.py:f", "not found")],
)  # fmt: skip
def test_resolver_errors_are_clear(target: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        resolve(target)


def test_settings_from_env_and_celery_config() -> None:
    settings = Settings.from_env({"DISTLOOP_BROKER_URL": "redis://:secret@h:1/0", "DISTLOOP_ALLOW": "a, b.*"})
    assert settings.allowed_patterns == ("distloop.tasks.demo", "a", "b.*")
    config = settings.celery_config()
    assert config["accept_content"] == ["json"] and config["task_acks_late"]
    assert config["broker_transport_options"]["visibility_timeout"] > config["task_time_limit"]
    assert config["task_time_limit"] > config["task_soft_time_limit"]
    assert Settings.from_env({}).broker_url is None
    assert mask_url("redis://:secret@h:1/0") == "redis://:***@h:1/0"
    assert mask_url("redis://user:pw@h/0") == "redis://user:***@h/0"


def test_assembler_raises_the_lowest_failure_once_every_chunk_before_it_is_in() -> None:
    def failed(index: int) -> ChunkResult:
        error = {"index": index, "type": "ValueError", "message": f"bad {index}", "traceback": ""}
        return ChunkResult(index=index, items=1, values=[], errors=[error])

    assembler = Assembler(None, "raise", ListSink())
    assembler.add(failed(5))  # arrives first, but chunks 0-4 are still out
    assembler.add(ChunkResult(index=2, items=1, values=[2]))
    assembler.add(failed(3))  # lower: this is the one to report
    assembler.add(ChunkResult(index=0, items=1, values=[0]))
    with pytest.raises(ChunkFailed) as info:
        assembler.add(ChunkResult(index=1, items=1, values=[1]))  # 0-2 in: chunk 3 is next
    assert info.value.index == 3


def test_the_command_lines_choices_are_the_kernels_ops() -> None:
    # `distloop run` offers defaults' names before it imports the kernel (its cluster starts first).
    assert tuple(REDUCERS) == defaults.REDUCE_OPS
    assert ON_ERROR == defaults.ON_ERROR
