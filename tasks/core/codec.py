"""Values on the wire: JSON only, yet every value numerical code returns comes back as itself.

JSON carries None, bools, ints, floats (``repr`` round-trips every bit; ``nan``,
``inf`` and ``-inf`` travel as Python's JSON writes them), strings, lists and
dicts with string keys. Every other type that travels is a one-key dict whose key
is a tag (see :data:`TAGS`), holding plain data only:

=====================  ================================================================
``__tuple__``          ``[items]``
``__set__``            ``[items]``; ``__frozenset__`` the same
``__map__``            ``[[key, value], ...]``: a dict with a key that is not a string
``__dict__``           a str-keyed dict that would read as a tag (escaped)
``__int__``            hex digits: an int outside 64 bits (no decimal digit limit, linear)
``__bytes__``          base64; ``__bytearray__`` the same
``__complex__``        ``[real, imag]``
``__decimal__``        ``str(d)``: NaN, sNaN, Infinity and -0 included
``__datetime__``       ``[y, m, d, H, M, S, us, fold, tz]``; ``__date__`` ``[y, m, d]``;
                       ``__time__`` ``[H, M, S, us, fold, tz]``; ``__timedelta__``
                       ``[days, seconds, us]``. ``tz`` is None or ``[[days, seconds, us],
                       name]``: a :class:`datetime.timezone` (UTC, fixed offsets) only
``__uuid__``           32 hex digits
``__ndarray__``        ``[dtype, shape, "C"|"F", base64]``, or ``{"__blob__": name}`` in the
                       base64's place for raw bytes beside the JSON (:mod:`.blobs`);
                       ``__numpy__`` ``[dtype, base64]`` for a numpy scalar (:mod:`.codec_numpy`)
=====================  ================================================================

Exact types only: a subclass (an ``IntEnum``, a ``str`` subclass, a
``pandas.Timestamp``) and everything else is refused with :class:`NotJSONable`
naming the type, never pickled nor silently turned into its base type. So is a
value nested more than :data:`MAX_DEPTH` containers deep (:class:`TooDeep`).

Decoding builds plain data with the types' own constructors (``datetime(...)``,
``Decimal(str)``, ``numpy.frombuffer``); it never imports anything but numpy,
and that only for an array, and never runs user code. What it cannot read is a
:class:`DecodeError`. A user dict shaped like a tag is escaped, and so is one
shaped like kombu's own JSON tag (``{"__type__", "__value__"}``), which kombu's
decoder would otherwise turn into something else on the worker.
"""

from __future__ import annotations

import binascii
import datetime as dt
import json
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

_TUPLE = "__tuple__"
_DICT = "__dict__"
_MAP = "__map__"

#: How many containers (lists, tuples, dicts, sets) deep a value may nest. JSON readers
#: recurse per level (each tag adds a level or two), and a worker's stack already holds
#: Celery's frames: 100 stays far from Python's recursion limit on both ends.
MAX_DEPTH = 100

# Ints in [-2**63, 2**64) travel as JSON numbers; outside, as hex. Python refuses to write or
# read a decimal int of more than 4,300 digits, and readers other than Python (Redis's Lua,
# Flower, jq) round anything past 2**53 anyway.
_INT_LOW, _INT_HIGH = -(2**63), 2**64

#: What a refusal's message adds: what may travel.
WHAT_TRAVELS = (
    "arguments and results may be None, bool, int, float, complex, str, bytes, bytearray, Decimal, UUID, "
    "datetime/date/time/timedelta (UTC or fixed-offset tzinfo), numpy scalars and arrays (not object dtype), "
    "and lists, tuples, sets, frozensets and dicts of these"
)


class NotJSONable(TypeError):
    """A value of a type that cannot travel faithfully."""

    def __init__(self, type_name: str, hint: str = "") -> None:
        # Named as a user would import it: "object", "decimal.Decimal", "tests.Colour".
        self.type_name = type_name
        super().__init__(f"a value of type {type_name} cannot travel as JSON" + (f" ({hint})" if hint else ""))


class TooDeep(NotJSONable):
    """A value nested more than :data:`MAX_DEPTH` containers deep."""

    def __init__(self, *_: object) -> None:  # (pickle passes the message back)
        self.type_name = f"value nested more than {MAX_DEPTH} deep"
        TypeError.__init__(self, f"a value nested more than {MAX_DEPTH} containers deep cannot travel")


class DecodeError(ValueError):
    """Wire data that is not a value :func:`encode` writes (or needs numpy, which is missing here)."""


_SCALARS = frozenset({int, float, str, bool, type(None)})
_PLAIN = frozenset({float, str, bool, type(None)})  # ints are checked for size


def type_name(value: Any) -> str:
    """``value``'s type as a user would import it: ``set``, ``decimal.Decimal``."""
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def encode(value: Any) -> Any:
    """Return a JSON-ready form of ``value`` that :func:`decode` turns back into it."""
    return _encode(value, 0)


def encode_call(args: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
    """A call's ``[args, kwargs]``, encoded; each argument may nest :data:`MAX_DEPTH` deep itself."""
    return [[_encode(a, 0) for a in args], _encode_dict(kwargs, 0)]


def encode_all(values: Any) -> list[Any]:
    """``[encode(v) for v in values]``, without a call per plain scalar (the common case): a new list."""
    values = list(values)
    types = set(map(type, values))  # in C, as are min and max: a chunk of plain values costs no loop here
    if types <= _PLAIN or (types == {int} and min(values) >= _INT_LOW and max(values) < _INT_HIGH):
        return values
    plain, low, high = _PLAIN, _INT_LOW, _INT_HIGH
    # Ints first: the most common result of a cheap item, where this loop's cost shows.
    return [v if ((t := type(v)) is int and low <= v < high) or t in plain else _encode(v, 0) for v in values]


def _encode(value: Any, depth: int) -> Any:
    cls = type(value)
    if cls in _PLAIN:  # exact types only: subclasses are refused below
        return value
    if cls is int:
        return value if _INT_LOW <= value < _INT_HIGH else {"__int__": format(value, "x")}
    if cls is list:
        if depth >= MAX_DEPTH:
            raise TooDeep
        return [_encode(v, depth + 1) for v in value]
    if cls is dict:
        if depth >= MAX_DEPTH:
            raise TooDeep
        return _encode_dict(value, depth + 1)
    encoder = _ENCODERS.get(cls)
    if encoder is not None:
        if cls in _CONTAINERS and depth >= MAX_DEPTH:
            raise TooDeep
        return encoder(value, depth + 1)
    numpy = sys.modules.get("numpy")  # only a process that has numpy can hold its values
    if numpy is not None and isinstance(value, numpy.ndarray | numpy.generic):
        from distloop.tasks.core import codec_numpy

        return codec_numpy.encode(value)
    raise NotJSONable(type_name(value))


def _encode_dict(value: dict[Any, Any], depth: int) -> Any:
    out = {}
    for key, item in value.items():
        if type(key) is not str:
            return {_MAP: [[_encode(k, depth), _encode(v, depth)] for k, v in value.items()]}
        out[key] = _encode(item, depth)
    if _tag_shaped(out):
        return {_DICT: out}
    if len(out) == 2 and "__type__" in out and "__value__" in out:  # kombu's decoder would take it
        return {_MAP: [[k, v] for k, v in out.items()]}
    return out


def _tag_shaped(value: dict[str, Any]) -> bool:
    return len(value) == 1 and next(iter(value)) in TAGS


def _encode_tz(tz: dt.tzinfo | None) -> Any:
    if tz is None:
        return None
    if type(tz) is not dt.timezone:
        raise NotJSONable(
            f"datetime with tzinfo {type_name(tz)}",
            "only datetime.timezone offsets travel: convert with .astimezone(datetime.timezone.utc)",
        )
    offset = tz.utcoffset(None)
    name = tz.tzname(None)
    default = dt.timezone(offset).tzname(None)
    return [[offset.days, offset.seconds, offset.microseconds], None if name == default else name]


_TIME = ("hour", "minute", "second", "microsecond", "fold")
_DATETIME = ("year", "month", "day", *_TIME)


def _fields(value: Any, names: tuple[str, ...]) -> list[int]:
    return [getattr(value, name) for name in names]


def _b64(data: bytes | bytearray) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


_ENCODERS: dict[type, Callable[[Any, int], Any]] = {
    tuple: lambda v, d: {_TUPLE: [_encode(x, d) for x in v]},
    set: lambda v, d: {"__set__": [_encode(x, d) for x in v]},
    frozenset: lambda v, d: {"__frozenset__": [_encode(x, d) for x in v]},
    bytes: lambda v, d: {"__bytes__": _b64(v)},
    bytearray: lambda v, d: {"__bytearray__": _b64(v)},
    complex: lambda v, d: {"__complex__": [v.real, v.imag]},
    Decimal: lambda v, d: {"__decimal__": str(v)},
    dt.datetime: lambda v, d: {"__datetime__": [*_fields(v, _DATETIME), _encode_tz(v.tzinfo)]},
    dt.date: lambda v, d: {"__date__": [v.year, v.month, v.day]},
    dt.time: lambda v, d: {"__time__": [*_fields(v, _TIME), _encode_tz(v.tzinfo)]},
    dt.timedelta: lambda v, d: {"__timedelta__": [v.days, v.seconds, v.microseconds]},
    uuid.UUID: lambda v, d: {"__uuid__": v.hex},
}
_CONTAINERS = frozenset({tuple, set, frozenset})


# --- decoding ------------------------------------------------------------------------------


def decode(value: Any) -> Any:
    """Invert :func:`encode`; :class:`DecodeError` for what it never writes."""
    if type(value) in _SCALARS:
        return value
    try:
        return _decode(value, 0)
    except DecodeError:
        raise
    except (TypeError, ValueError, ArithmeticError) as exc:  # a constructor refused its payload
        raise DecodeError(f"not a value distloop's codec writes: {exc}") from None


def decode_all(values: Iterable[Any]) -> list[Any]:
    """``[decode(v) for v in values]``, without a call per plain scalar (the common case); a list
    of plain scalars only is returned as it is."""
    values = values if isinstance(values, list) else list(values)
    if _SCALARS.issuperset(map(type, values)):  # in C: nothing to decode, the list is the values
        return values
    scalars = _SCALARS
    return [v if type(v) in scalars else decode(v) for v in values]


def _decode(value: Any, depth: int) -> Any:
    cls = type(value)
    if cls in _SCALARS:
        return value
    # Encode never writes it: bound the recursion on what arrives. Two levels more than a value
    # may have: a call's argument list around it, and a tagged scalar (a Decimal) at its bottom.
    if depth > MAX_DEPTH + 2:
        raise DecodeError(f"nested more than {MAX_DEPTH} containers deep")
    if cls is list:
        return [_decode(v, depth + 1) for v in value]
    if cls is dict:
        if len(value) == 1:
            key = next(iter(value))
            decoder = _DECODERS.get(key)
            if decoder is not None:
                return decoder(value[key], depth + 1)
        return {k: _decode(v, depth + 1) for k, v in value.items()}
    raise DecodeError(f"not a JSON value: {type_name(value)}")


def _items(payload: Any, depth: int) -> list[Any]:
    if type(payload) is not list:
        raise DecodeError(f"expected a list, got {type_name(payload)}")
    return [_decode(v, depth) for v in payload]


def _ints(payload: Any, n: int) -> list[int]:
    if type(payload) is not list or len(payload) != n or any(type(x) is not int for x in payload):
        raise DecodeError(f"expected {n} ints, got {payload!r:.80}")
    return payload


def _text(payload: Any) -> str:
    if type(payload) is not str:
        raise DecodeError(f"expected a string, got {type_name(payload)}")
    return payload


def _unb64(payload: Any) -> bytes:
    return binascii.a2b_base64(_text(payload), strict_mode=True)


def _decode_map(payload: Any, depth: int) -> dict[Any, Any]:
    if type(payload) is not list or any(type(p) is not list or len(p) != 2 for p in payload):
        raise DecodeError("a map is a list of [key, value] pairs")
    # The pair is no level of the value's own (encode does not count it either).
    return {_decode(k, depth): _decode(v, depth) for k, v in payload}  # an unhashable key is a DecodeError


def _decode_tz(payload: Any) -> dt.timezone | None:
    if payload is None:
        return None
    if type(payload) is not list or len(payload) != 2 or not (payload[1] is None or type(payload[1]) is str):
        raise DecodeError("a timezone is [[days, seconds, us], name]")
    offset = dt.timedelta(*_ints(payload[0], 3))
    return dt.timezone(offset) if payload[1] is None else dt.timezone(offset, payload[1])


def _decode_datetime(payload: Any, depth: int) -> dt.datetime:
    if type(payload) is not list or len(payload) != 9:
        raise DecodeError("a datetime is [y, m, d, H, M, S, us, fold, tz]")
    y, mo, d, h, mi, s, us, fold = _ints(payload[:8], 8)
    return dt.datetime(y, mo, d, h, mi, s, us, tzinfo=_decode_tz(payload[8]), fold=fold)


def _decode_time(payload: Any, depth: int) -> dt.time:
    if type(payload) is not list or len(payload) != 6:
        raise DecodeError("a time is [H, M, S, us, fold, tz]")
    h, mi, s, us, fold = _ints(payload[:5], 5)
    return dt.time(h, mi, s, us, tzinfo=_decode_tz(payload[5]), fold=fold)


def _decode_complex(payload: Any, depth: int) -> complex:
    if type(payload) is not list or len(payload) != 2 or any(type(x) not in (int, float) for x in payload):
        raise DecodeError("a complex is [real, imag]")
    return complex(payload[0], payload[1])


def _decode_str_dict(payload: Any, depth: int) -> dict[str, Any]:
    if type(payload) is not dict:
        raise DecodeError(f"an escaped dict holds a dict, not {type_name(payload)}")
    return {k: _decode(v, depth) for k, v in payload.items()}


def _decode_numpy(payload: Any, scalar: bool) -> Any:
    try:
        from distloop.tasks.core import codec_numpy
    except ImportError:  # numpy is not installed in this process
        raise DecodeError("a numpy value arrived, but numpy is not installed here") from None
    return codec_numpy.decode(payload, scalar)


_DECODERS: dict[str, Callable[[Any, int], Any]] = {
    _TUPLE: lambda p, d: tuple(_items(p, d)),
    _DICT: _decode_str_dict,
    _MAP: _decode_map,
    "__set__": lambda p, d: set(_items(p, d)),
    "__frozenset__": lambda p, d: frozenset(_items(p, d)),
    "__int__": lambda p, d: int(_text(p), 16),
    "__bytes__": lambda p, d: _unb64(p),
    "__bytearray__": lambda p, d: bytearray(_unb64(p)),
    "__complex__": _decode_complex,
    "__decimal__": lambda p, d: Decimal(_text(p)),
    "__datetime__": _decode_datetime,
    "__date__": lambda p, d: dt.date(*_ints(p, 3)),
    "__time__": _decode_time,
    "__timedelta__": lambda p, d: dt.timedelta(*_ints(p, 3)),
    "__uuid__": lambda p, d: uuid.UUID(hex=_text(p)),
    "__ndarray__": lambda p, d: _decode_numpy(p, scalar=False),
    "__numpy__": lambda p, d: _decode_numpy(p, scalar=True),
}

#: The tags: a one-key dict with one of these keys is a tagged value.
TAGS = frozenset(_DECODERS)


# --- JSON for people (the CLI's stdout, --output files) --------------------------------------


def to_json(value: Any) -> str:
    """``value`` as JSON text for people and tools: lists, tuples (as lists) and str-keyed dicts as
    themselves, numpy bools, ints and floats as JSON's, every other value in its tagged form
    (:func:`decode` reads it back, tuples as lists)."""
    return json.dumps(_plain(value, 0))


def _plain(value: Any, depth: int) -> Any:
    cls = type(value)
    if cls in _PLAIN or (cls is int and _INT_LOW <= value < _INT_HIGH):
        return value
    if cls in (list, tuple) and depth < MAX_DEPTH:
        return [_plain(v, depth + 1) for v in value]
    if cls is dict and depth < MAX_DEPTH and all(type(k) is str for k in value) and not _tag_shaped(value):
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    if _numpy_number(value):  # np.mean's result reads as a number
        return _plain(value.item(), depth)
    return _encode(value, depth)


def _numpy_number(value: Any) -> bool:
    """A numpy bool, int or float (not a subclass) that ``.item()`` turns into Python's own exactly."""
    numpy = sys.modules.get("numpy")
    kinds = numpy.bool_ | numpy.integer | numpy.floating if numpy is not None else ()
    return bool(kinds) and isinstance(value, kinds) and value.dtype.itemsize <= 8 and type(value) is value.dtype.type
