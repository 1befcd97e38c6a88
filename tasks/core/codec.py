"""Values on the wire: JSON only, yet tuples stay tuples.

JSON carries None, bools, ints of any size, floats (``repr`` round-trips every
bit; ``nan``, ``inf`` and ``-inf`` travel as Python's JSON writes them, and a
NaN comes back as the standard NaN), strings, lists and dicts with string keys.
Tuples are tagged so that ``zip(*pool.map(f, ...))`` sees what a local call
returns. Anything else, subclasses included (``numpy.float64``, an ``IntEnum``,
a ``str`` subclass), is refused with the type's name instead of being pickled or
silently turned into its base type.
"""

from __future__ import annotations

from typing import Any

_TUPLE = "__tuple__"
_DICT = "__dict__"


class NotJSONable(TypeError):
    """A value of a type JSON cannot carry faithfully."""

    def __init__(self, type_name: str) -> None:
        # Named as a user would import it: "set", "decimal.Decimal", "numpy.float64".
        self.type_name = type_name
        super().__init__(f"a value of type {type_name} cannot travel as JSON")


_SCALARS = frozenset({int, float, str, bool, type(None)})


def encode(value: Any) -> Any:
    """Return a JSON-ready form of ``value`` that :func:`decode` turns back into it."""
    if type(value) in _SCALARS:  # exact types only: subclasses are refused below
        return value
    if type(value) is list:
        return [encode(v) for v in value]
    if type(value) is tuple:
        return {_TUPLE: [encode(v) for v in value]}
    if type(value) is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise NotJSONable(f"dict with {type_name(key)} keys")
            out[key] = encode(item)
        return {_DICT: out} if (_TUPLE in out or _DICT in out) else out
    raise NotJSONable(type_name(value))


def type_name(value: Any) -> str:
    """``value``'s type as a user would import it: ``set``, ``decimal.Decimal``."""
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def encode_all(values: Any) -> list[Any]:
    """``[encode(v) for v in values]``, without a call per plain scalar (the common case)."""
    scalars = _SCALARS
    return [v if type(v) in scalars else encode(v) for v in values]


def decode(value: Any) -> Any:
    """Invert :func:`encode`."""
    if type(value) in _SCALARS:
        return value
    if type(value) is list:
        return [decode(v) for v in value]
    if type(value) is dict:
        if len(value) == 1 and _TUPLE in value:
            return tuple(decode(v) for v in value[_TUPLE])
        if len(value) == 1 and _DICT in value:
            return {k: decode(v) for k, v in value[_DICT].items()}
        return {k: decode(v) for k, v in value.items()}
    return value
