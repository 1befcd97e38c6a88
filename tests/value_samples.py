"""One value of each kind that travels, and an exact comparison: the table of tests/test_values.py.

Self-contained (the standard library, and numpy when it is installed), because the
end-to-end tests copy this file into a user's project folder as ``valuesamples.py``:
its ``result_at`` and ``echo`` are then the project's own loop functions.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import struct
import uuid
from typing import Any

try:
    import numpy as np
except ImportError:  # numpy is optional: its rows are skipped, with the reason
    np = None  # type: ignore[assignment]

UTC = dt.UTC
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
NAMED = dt.timezone(dt.timedelta(hours=-3, minutes=-15, microseconds=7), "Somewhere")


def plain_samples() -> dict[str, Any]:
    """Values of the standard library's types, by row name."""
    return {
        "int 64-bit edge": [2**63 - 1, -(2**63), 2**64 - 1],
        "int past 64 bits": 2**64,
        "int of 5,000 digits": 10**4999 + 7,
        "negative int of 5,000 digits": -(10**4999),
        "float bits": [0.1 + 0.2, -0.0, 5e-324, math.inf, -math.inf],
        "tuple": (1, (2.5, "x"), [None]),
        "bytes": bytes(range(256)),
        "empty bytes": b"",
        "bytearray": bytearray(b"\x00\xffabc"),
        "set": {1, "a", (2, 3)},
        "frozenset": frozenset({1.5, frozenset({2})}),
        "empty set": set(),
        "complex": [1 + 2j, complex(-0.0, math.inf)],
        "Decimal": [decimal.Decimal("3.14159265358979323846264338327950288"), decimal.Decimal("-0")],
        "Decimal NaN and Infinity": [decimal.Decimal("NaN"), decimal.Decimal("-sNaN12"), decimal.Decimal("-Infinity")],
        "datetime naive": dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
        "datetime UTC": dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        "datetime fixed offset": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=IST),
        "datetime named offset, fold": dt.datetime(2024, 11, 3, 1, 30, tzinfo=NAMED, fold=1),
        "date": dt.date(1, 1, 1),
        "time with offset": dt.time(12, 30, 0, 5, tzinfo=IST),
        "timedelta": dt.timedelta(days=-3, seconds=5, microseconds=1),
        "UUID": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "dict with int keys": {1: "a", 2: "b"},
        "dict with mixed keys": {"s": 1, 2: [3], (4, 5): None, None: True, 1.5: "f", frozenset({1}): 0},
        "user dict shaped like a tag": {"__tuple__": [1, 2]},
        "user dicts shaped like tags": [{"__set__": [1]}, {"__dict__": {}}, {"__ndarray__": "x"}, {"__map__": []}],
        "user dict shaped like kombu's tag": {"__type__": "uuid", "__value__": "12345678123456781234567812345678"},
        "nested mix": {"rows": [(1, {2, 3}), {b"k": dt.date(2020, 1, 1)}], (1, 2): [decimal.Decimal("1.1")]},
    }


def numpy_samples() -> dict[str, Any]:
    """numpy scalars and arrays, by row name (empty without numpy)."""
    if np is None:
        return {}
    nan_payload = np.frombuffer(struct.pack("<QQ", 0x7FF8DEADBEEF0001, 0xFFF0000000000001), "<f8")
    grid = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    return {
        "numpy float64 scalar": np.float64(0.1),
        "numpy scalars of every kind": [
            np.bool_(True),
            np.int8(-5),
            np.uint64(2**64 - 1),
            np.float16(1.5),
            np.float32(-0.0),
            np.complex64(1 - 2j),
            np.longlong(7),
        ],
        "numpy datetime64 and timedelta64 scalars": [
            np.datetime64("2024-01-02T03:04:05.123456789"),
            np.datetime64("NaT"),
            np.timedelta64(-5, "ms"),
        ],
        "numpy str_ and bytes_ scalars": [np.str_("naïve ☃"), np.bytes_(b"\x00ab")],
        "numpy float64 array": np.linspace(0, 1, 7),
        "numpy NaN payloads": nan_payload,
        "numpy 0-d array": np.array(3.5),
        "numpy empty arrays": [np.zeros(0), np.zeros((3, 0, 2), dtype=np.uint8)],
        "numpy 3-d int32, C order": grid,
        "numpy Fortran order": np.asfortranarray(grid.astype(np.float64)),
        "numpy non-contiguous view": grid[:, ::2, 1::2],
        "numpy big-endian": np.arange(5, dtype=">i8"),
        "numpy bool, complex, float16": [np.array([True, False]), np.array([1j, -1]), np.arange(3, dtype=np.float16)],
        "numpy datetime64 array": np.array(["2020-01-01", "NaT"], dtype="datetime64[D]"),
        "numpy timedelta64 array": np.array([1, -2], dtype="timedelta64[us]"),
        "numpy unicode and bytes arrays": [np.array(["a", "bcd☃"]), np.array([b"x", b"yz"])],
        "numpy in containers": {"mean": np.float64(2.5), (1, np.int64(2)): [np.arange(3)]},
        # From 64 KiB up an array travels beside the JSON on celery (distloop.tasks.core.blobs).
        "numpy large arrays": [
            np.linspace(-1, 1, 20_000),
            np.asfortranarray(np.arange(40_000, dtype=">i4").reshape(200, 200)),
            np.arange(90_000, dtype=np.uint8).reshape(300, 300)[::2, 1::3],
            {"__blob__": "a user dict shaped like a reference", "x": np.zeros(9_000)},
            np.frombuffer(struct.pack("<Q", 0x7FF8DEADBEEF0001) * 9_000, "<f8"),
        ],
    }


def samples() -> dict[str, Any]:
    return {**plain_samples(), **numpy_samples()}


NUMPY_ROWS = (
    "numpy float64 scalar", "numpy scalars of every kind", "numpy datetime64 and timedelta64 scalars",
    "numpy str_ and bytes_ scalars", "numpy float64 array", "numpy NaN payloads", "numpy 0-d array",
    "numpy empty arrays", "numpy 3-d int32, C order", "numpy Fortran order", "numpy non-contiguous view",
    "numpy big-endian", "numpy bool, complex, float16", "numpy datetime64 array", "numpy timedelta64 array",
    "numpy unicode and bytes arrays", "numpy in containers", "numpy large arrays",
)  # fmt: skip
ROWS = (*plain_samples(), *NUMPY_ROWS)


def result_at(i: int) -> Any:
    """The loop function for results: item ``i`` returns row ``i``'s value (numpy rows last)."""
    return list(samples().values())[i]


def echo(value: Any) -> Any:
    """The loop function for arguments: what it is given, back."""
    return value


def fortran(a: Any) -> bool:
    """A Fortran-ordered array (that is not also C-ordered): it must come back as one."""
    return bool(a.flags.f_contiguous and not a.flags.c_contiguous)


def same(a: Any, b: Any) -> bool:  # a: what was sent, b: what came back
    """``a`` and ``b`` are the same type and value, down to every bit, memory order and time zone."""
    if type(a) is not type(b):
        return False
    if np is not None and isinstance(a, np.ndarray):
        return (
            a.dtype == b.dtype and a.dtype.type is b.dtype.type and a.shape == b.shape
            and a.tobytes() == b.tobytes() and fortran(a) == fortran(b) and b.flags.writeable
            and (b.flags.c_contiguous or b.flags.f_contiguous)
        )  # fmt: skip
    if np is not None and isinstance(a, np.generic):
        return a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, dt.datetime | dt.time):
        return a == b and a.fold == b.fold and repr(a.tzinfo) == repr(b.tzinfo)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        pairs = zip(a.items(), b.items(), strict=False)
        return len(a) == len(b) and all(same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in pairs)
    return bool(a == b)
