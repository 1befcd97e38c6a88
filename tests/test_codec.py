"""The wire codec, unit level: every kind of value round-trips exactly, through JSON and kombu's JSON;
what cannot travel is refused by name; forged wire data is refused without importing anything;
a 10**6-element float64 array costs at most twice its bytes on the wire."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import pickle
import subprocess
import sys
import uuid
import zoneinfo
from typing import Any

import pytest
from kombu.utils import json as kombu_json

from distloop.tasks.core import blobs, codec
from distloop.tasks.core.settings import Settings
from distloop.tasks.kernel import ChunkSpec, run_chunk
from distloop.worker.redis_server import RedisServer
from tests import workloads
from tests.value_samples import NUMPY_ROWS, ROWS, np, same, samples

SAMPLES = samples()


def row(name: str) -> Any:
    """``pytest.param`` of a table row; numpy rows skip, with the reason, where numpy is missing."""
    marks = [pytest.mark.skipif(np is None, reason="numpy is not installed")] if name in NUMPY_ROWS else []
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", [row(n) for n in ROWS])
def test_value_round_trips_exactly_through_json_and_kombu_json(name: str) -> None:
    value = SAMPLES[name]
    wire = codec.encode(value)
    # As a result travels (the ledger's json), and as an argument does (kombu's json, whose
    # decoder turns {"__type__", "__value__"} dicts into other things).
    for dumps, loads in ((json.dumps, json.loads), (kombu_json.dumps, kombu_json.loads)):
        back = codec.decode(loads(dumps(wire)))
        assert same(value, back), f"{name}: {value!r} came back as {back!r}"
    assert codec.encode_all([value]) == [wire] or same([value], codec.decode(codec.encode_all([value])))


def test_big_ints_do_not_depend_on_the_decimal_digit_limit() -> None:
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        for value in (10**700, -(10**700) - 1, 2**64, -(2**63) - 1):
            assert codec.decode(json.loads(json.dumps(codec.encode(value)))) == value
        assert codec.encode(2**63) == 2**63 and codec.encode(-(2**63)) == -(2**63)  # 64 bits stay numbers
    finally:
        sys.set_int_max_str_digits(before)


class Colour(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    "value, type_name",
    [
        (object(), "object"),
        (Colour.RED, "tests.test_codec.Colour"),
        (range(3), "range"),
        ({1: [iter(())]}, "tuple_iterator"),
        (dt.datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")), "datetime with tzinfo zoneinfo.ZoneInfo"),
        (dt.time(1, tzinfo=zoneinfo.ZoneInfo("UTC")), "datetime with tzinfo zoneinfo.ZoneInfo"),
        (uuid.UUID, "type"),
    ],
)
def test_what_cannot_travel_is_refused_with_its_type_named(value: object, type_name: str) -> None:
    with pytest.raises(codec.NotJSONable) as info:
        codec.encode(value)
    assert info.value.type_name == type_name and type_name in str(info.value)


@pytest.mark.skipif(np is None, reason="numpy is not installed")
@pytest.mark.parametrize(
    "make, type_name",
    [
        (lambda: np.array([1, "a"], dtype=object), "numpy.ndarray of dtype object"),
        (lambda: np.zeros(2, dtype=[("a", "<i4")]), "numpy.ndarray of dtype [('a', '<i4')]"),
        (lambda: np.ma.array([1, 2]), "numpy.ma.MaskedArray"),
        (lambda: np.void(b"ab"), "numpy.void of dtype |V2"),
    ],
)
def test_numpy_values_that_cannot_travel_are_refused(make: Any, type_name: str) -> None:
    with pytest.raises(codec.NotJSONable) as info:
        codec.encode(make())
    assert info.value.type_name == type_name


def test_depth_limit_is_exact_and_its_error_is_its_own() -> None:
    assert codec.decode(codec.encode(workloads.nested(codec.MAX_DEPTH))) == workloads.nested(codec.MAX_DEPTH)
    for value in (workloads.nested(codec.MAX_DEPTH + 1), workloads.nested(500)):
        with pytest.raises(codec.TooDeep, match="nested more than 100 containers deep"):
            codec.encode(value)
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(codec.TooDeep):
        codec.encode(loop)
    deep_tuple: Any = ()
    for _ in range(200):
        deep_tuple = (deep_tuple,)
    with pytest.raises(codec.TooDeep):
        codec.encode({"k": deep_tuple})
    assert issubclass(codec.TooDeep, codec.NotJSONable)  # the kernel's refusal path catches it
    assert str(pickle.loads(pickle.dumps(codec.TooDeep()))) == str(codec.TooDeep())  # the process backend


def deepest(kind: str) -> Any:
    """A value exactly MAX_DEPTH containers deep, of tuples, or of int-keyed dicts (the costliest tags)."""
    value: Any = decimal.Decimal("1.5")  # a tagged value at the bottom
    for _ in range(codec.MAX_DEPTH):
        value = (value,) if kind == "tuples" else {0: value}
    return value


@pytest.mark.parametrize("kind", ["tuples", "int-keyed dicts"])
def test_the_deepest_value_that_travels_round_trips_as_value_and_as_argument(kind: str) -> None:
    value = deepest(kind)
    assert codec.decode(kombu_json.loads(kombu_json.dumps(codec.encode(value)))) == value
    by_position = kombu_json.loads(kombu_json.dumps(codec.encode_call([value], {})))
    by_name = kombu_json.loads(kombu_json.dumps(codec.encode_call([], {"value": value})))
    result = run_chunk(workloads.echo, ChunkSpec(0, calls=[by_position, by_name]))
    assert not result.errors and result.values == [codec.encode(value)] * 2
    with pytest.raises(codec.TooDeep):
        codec.encode_call([[value]], {})


def test_over_deep_result_is_its_own_item_error_not_a_recursion_error() -> None:
    for chunk in (ChunkSpec(0, 0, 3, 1), ChunkSpec(0, calls=[[[1], {}], [[2], {}]])):
        result = run_chunk(workloads.too_deep, chunk, None, "collect")
        assert [e["type"] for e in result.errors] == ["NotJSONable"] * len(chunk)
        assert all("nested more than 100 containers deep" in e["message"] for e in result.errors)


FORGED = [
    {"__ndarray__": ["|O8", [1], "C", "AAAAAAAAAAA="]},  # object dtype
    {"__ndarray__": ["[('a', 'O')]", [1], "C", ""]},  # a structured dtype string
    {"__ndarray__": ["<f8", [2], "C", "AAAAAAAAAAA="]},  # too few bytes for the shape
    {"__ndarray__": ["<f8", [-1], "C", ""]},
    {"__ndarray__": ["<f8", [1], "X", "AAAAAAAAAAA="]},
    {"__numpy__": ["<f8", "AAAA"]},
    {"__int__": 5},
    {"__int__": "zz"},
    {"__map__": [[[1], 2]]},  # an unhashable key
    {"__map__": [[1]]},
    {"__decimal__": "not a number"},
    {"__date__": [2024, 13, 1]},
    {"__datetime__": [2024, 1, 1, 0, 0, 0, 0, 0, [[2, 0, 0], None]]},  # a 48-hour offset
    {"__datetime__": [2024, 1, 1, 0, 0, 0, 0, 0, "Europe/Paris"]},  # a zone key: never looked up
    {"__uuid__": "xyz"},
    {"__bytes__": "not base64!"},
    {"__set__": [[1]]},
    {"__complex__": ["1", 2]},
    {"__dict__": [1]},
    workloads.nested(codec.MAX_DEPTH + 5),  # deeper than encode ever writes
]


@pytest.mark.parametrize("wire", FORGED, ids=[json.dumps(w)[:50] for w in FORGED])
def test_forged_wire_data_is_refused_without_importing_anything(wire: Any) -> None:
    if np is None and json.dumps(wire).startswith(('{"__ndarray__', '{"__numpy__')):
        pytest.skip("numpy is not installed")
    before = set(sys.modules)
    with pytest.raises(codec.DecodeError):
        codec.decode(json.loads(json.dumps(wire)))
    assert set(sys.modules) - before == set()


def test_to_json_writes_json_types_as_themselves_and_tags_the_rest() -> None:
    text = codec.to_json([(1, 2), {"a": (3,)}, {1, 2}, b"x", 10**5000])
    data = json.loads(text)
    assert data[:2] == [[1, 2], {"a": [3]}]  # as the CLI always wrote them
    assert codec.decode(data[2:]) == [{1, 2}, b"x", 10**5000]
    if np is not None:  # numpy's numbers read as numbers (np.mean's result); arrays stay exact
        assert json.loads(codec.to_json([np.float64(0.5), np.int64(-3), np.bool_(True)])) == [0.5, -3, True]
        assert codec.decode(json.loads(codec.to_json(np.arange(3)))).tolist() == [0, 1, 2]


# --- the size of a million float64s on the wire -------------------------------------------------


@pytest.mark.skipif(np is None, reason="numpy is not installed")
def test_million_float64_array_costs_at_most_twice_its_bytes_as_result() -> None:
    array = np.random.default_rng(0).random(10**6)
    assert len(json.dumps(codec.encode(array))) <= 2 * array.nbytes
    # What a worker writes to the ledger for a chunk of one call returning it.
    result = run_chunk(workloads.echo, ChunkSpec(0, calls=[[codec.encode([array]), {}]]))
    stored = json.dumps(result.to_wire())
    assert len(stored) <= 2 * array.nbytes, f"{len(stored) / array.nbytes:.2f}x"


@pytest.mark.integration
@pytest.mark.skipif(np is None, reason="numpy is not installed")
def test_million_float64_array_costs_at_most_twice_its_bytes_as_argument(redis_server: RedisServer) -> None:
    """The message in Redis as the producer publishes it: kombu's JSON, no second base64 layer."""
    from distloop.tasks.app import make_app
    from distloop.tasks.core import defaults

    array = np.random.default_rng(0).random(10**6)
    app = make_app(Settings(broker_url=redis_server.url))
    spec = ChunkSpec(0, calls=[[codec.encode([array]), {}]]).to_wire()
    with app.producer_or_acquire() as producer:
        app.send_task(defaults.CHUNK_TASK, args=("job", "tests.workloads:echo", spec), queue=defaults.QUEUE,
                      producer=producer, ignore_result=True)  # fmt: skip
    message = redis_server.client().lindex(defaults.QUEUE, 0)
    app.close()
    assert message is not None and len(message) <= 2 * array.nbytes, f"{len(message) / array.nbytes:.2f}x"
    assert json.loads(message)["properties"]["body_encoding"] == "utf-8"


def test_a_numpy_value_where_numpy_is_missing_is_a_clear_decode_error() -> None:
    """A worker without numpy gets an array argument: a DecodeError saying so (the item fails)."""
    wire = json.dumps({"__ndarray__": ["<f8", [1], "C", "AAAAAAAA8D8="]})
    script = (
        "import sys, json; sys.modules['numpy'] = None\n"  # as if numpy were not installed
        "from distloop.tasks.core import codec\n"
        f"try:\n    codec.decode(json.loads({wire!r}))\nexcept codec.DecodeError as e:\n    print(e)\n"
        "print(codec.decode(codec.encode({1, 2})))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == ["a numpy value arrived, but numpy is not installed here", "{1, 2}"], done.stderr


# --- large arrays beside the JSON (distloop.tasks.core.blobs) -------------------------------------

needs_numpy = pytest.mark.skipif(np is None, reason="numpy is not installed")


@needs_numpy
def test_large_arrays_encode_as_references_only_inside_out_of_band_and_attach_back() -> None:
    large, small = np.arange(blobs.MIN_BYTES // 8, dtype=np.float64), np.arange(blobs.MIN_BYTES // 8 - 1.0)
    value = {"large": [large, np.asfortranarray(large.reshape(64, -1))], "small": small}
    assert "__blob__" not in json.dumps(codec.encode(value))  # outside the block: inline base64
    with blobs.out_of_band() as buffers:
        wire = json.loads(json.dumps(codec.encode(value)))
    assert len(buffers) == 2 and all(len(b) == large.nbytes for b in buffers.values())
    assert len(json.dumps(wire["large"])) < 1000  # only names, dtype, shape and order travel in the JSON
    with pytest.raises(codec.DecodeError, match="not found beside the message"):
        codec.decode(wire)  # a reference nobody attached is refused, not guessed
    attached = blobs.attach(wire, {name: bytes(data) for name, data in buffers.items()})
    assert same(codec.decode(attached), value)
    assert "__blob__" in json.dumps(wire)  # attach copies: the wire form stays JSON (a chunk sent again)
    with blobs.out_of_band(enabled=False) as off:
        assert "__blob__" not in json.dumps(codec.encode(value)) and off == {}


@needs_numpy
def test_attach_touches_only_an_arrays_data_position() -> None:
    """A user's dict shaped like a reference, or an array tag's lookalike in an escaped dict, stays itself."""
    lookalike = {"__ndarray__": ["<f8", [1], "C", {"__blob__": "n"}]}
    user = {"__blob__": "n"}
    wire = codec.encode([lookalike, user])
    assert codec.decode(blobs.attach(wire, {"n": b"\0" * 8})) == [lookalike, user]
    genuine = {"__ndarray__": ["<f8", [1], "C", {"__blob__": "n"}]}  # as the encoder writes one
    assert codec.decode(blobs.attach(genuine, {"n": b"\0" * 8})).tolist() == [0.0]
    with pytest.raises(codec.DecodeError, match="does not hold 4 bytes"):
        codec.decode(blobs.attach(genuine, {"n": b"\0" * 4}))


@pytest.mark.integration
@needs_numpy
def test_the_ledger_keeps_a_chunks_first_copys_arrays_and_drops_every_other(redis_server: RedisServer) -> None:
    """A second copy's arrays, a result for a job that is gone and collected results leave no bytes behind."""
    from distloop.tasks.store.jobs import JobStore

    store = JobStore(redis_server.client(), expires=600)
    client = store.client
    store.create("j", {"target": "t"})
    array = np.arange(10_000, dtype=np.float64)
    for copy in (1, 2):  # a chunk delivered twice (a straggler's copy): the first result wins
        with blobs.out_of_band() as buffers:
            result = {"index": 0, "items": 1, "values": [codec.encode(array * copy)]}
        store.put_result("j", 0, result, buffers)
    assert client.hlen("distloop:job:j:blobs") == 1
    (back,) = store.results("j", [0])
    assert back is not None and same(codec.decode(back["values"][0]), array)  # the first copy's
    store.checkpoint("j", {"next": 1})  # collected: the result and its array go
    assert not client.exists("distloop:job:j:blobs")
    store.delete("j")
    with blobs.out_of_band() as buffers:
        result = {"index": 1, "items": 1, "values": [codec.encode(array)]}
    assert not store.put_result("j", 1, result, buffers)  # the job is gone: nothing stays
    assert not client.exists("distloop:job:j:blobs")


def test_decode_all_decodes_tagged_values_and_passes_plain_ones_through() -> None:
    plain = [1, 2.5, "x", None, True]
    assert codec.decode_all(plain) is plain  # nothing to decode: no copy, no call per item
    mixed = codec.encode_all([1, (2, 3), {4}, "y"])
    assert codec.decode_all(mixed) == [1, (2, 3), {4}, "y"]
    assert codec.decode_all(iter([1, {"__tuple__": [2]}])) == [1, (2,)]
    with pytest.raises(codec.DecodeError):
        codec.decode_all([1, {"__int__": "not hex"}])
