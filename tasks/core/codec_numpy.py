"""numpy scalars and arrays on the wire: dtype, shape, memory order and raw bytes, nothing else.

Imported only where a numpy value is met: on the sending side numpy is already loaded
(the value came from it), on the receiving side this import is the only one decoding
ever does. An array is ``[dtype.str, shape, "C"|"F", base64 of its bytes]``: every bit
travels (NaN payloads, ``-0.0``, NaT), in its own byte order, at 4/3 of its size; or,
inside :func:`.blobs.out_of_band` and from :data:`.blobs.MIN_BYTES` up, as raw bytes
beside the JSON, with ``{"__blob__": name}`` in the base64's place.
Decoding checks the dtype string against a pattern and an allow-set of kinds before
numpy parses it, never builds an object, void or structured dtype, and rebuilds the
array with ``numpy.frombuffer`` and ``reshape`` (into a writable buffer, as a local
call would return it). A Fortran-ordered array comes back Fortran-ordered; any other
layout (a strided view) comes back C-contiguous, with the same values.
"""

from __future__ import annotations

import binascii
import math
import re
from typing import Any

import numpy as np

from distloop.tasks.core import blobs
from distloop.tasks.core.codec import DecodeError, NotJSONable, type_name

#: dtype kinds that travel: bool, signed and unsigned ints, floats, complex, datetime64,
#: timedelta64, fixed-width bytes and unicode strings.
KINDS = frozenset("biufcmMSU")

# What dtype.str looks like for those kinds: byte order, kind, item size, datetime unit; or byte
# order and a numeric type's character code, for the types that share a layout (longlong, int64).
_DTYPE = re.compile(r"[<>|=]([biufcmMSU][0-9]{1,5}(\[[0-9]{0,9}[a-zA-Z]{1,3}\])?|[?bBhHiIlLqQefdgFDG])")
_MAX_DIMS = 64  # numpy's own limit


def encode(value: Any) -> Any:
    """The tagged form of a numpy array or scalar; :class:`NotJSONable` for what cannot travel."""
    dtype = value.dtype
    if dtype.kind not in KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise NotJSONable(f"{type_name(value)} of dtype {dtype}")
    if isinstance(value, np.generic):
        if type(value) is not dtype.type:  # a subclass of a numpy scalar type
            raise NotJSONable(type_name(value))
        return {"__numpy__": [_dtype_text(dtype), _b64(value.tobytes())]}
    if type(value) is not np.ndarray:  # np.matrix, masked arrays, memmaps: subclasses
        raise NotJSONable(type_name(value))
    order = "F" if value.ndim > 1 and value.flags.f_contiguous and not value.flags.c_contiguous else "C"
    # The bytes in that order without a copy where they already lie so (a Fortran array's
    # transpose is C-contiguous), as unsigned bytes, which every dtype can be viewed as.
    data = np.ascontiguousarray(value.T if order == "F" else value)
    raw = data.reshape(-1).view(np.uint8)
    # A large buffer beside the JSON, where the encoding is for a Redis (see .blobs).
    ref = blobs.stash(raw.data)
    return {"__ndarray__": [_dtype_text(dtype), list(value.shape), order, ref if ref is not None else _b64(raw)]}


def decode(payload: Any, scalar: bool) -> Any:
    """Rebuild what :func:`encode` wrote (``scalar``: a ``__numpy__`` payload, else ``__ndarray__``)."""
    if type(payload) is not list or len(payload) != (2 if scalar else 4):
        raise DecodeError("a numpy value is [dtype, base64] or [dtype, shape, order, base64]")
    dtype = _dtype(payload[0])
    if scalar:
        raw = _unb64(payload[1])
        if len(raw) != dtype.itemsize:
            raise DecodeError(f"a {dtype} scalar holds {dtype.itemsize} bytes, not {len(raw)}")
        return np.frombuffer(raw, dtype)[0]
    shape, order = payload[1], payload[2]
    if (
        type(shape) is not list
        or len(shape) > _MAX_DIMS
        or any(type(n) is not int or n < 0 for n in shape)
        or order not in ("C", "F")
    ):
        raise DecodeError("an array's shape is a list of sizes, its order C or F")
    data = _data(payload[3])
    if len(data) != math.prod(shape) * dtype.itemsize:
        raise DecodeError(f"an array of shape {tuple(shape)} and dtype {dtype} does not hold {len(data)} bytes")
    # A writable copy (frombuffer over bytes is read-only), as a local call would return.
    return np.frombuffer(bytearray(data), dtype).reshape(shape, order=order)


def _dtype_text(dtype: np.dtype[Any]) -> str:
    """``dtype.str`` ("<f8"); its character code where that names another type (np.longlong is not int64)."""
    text = dtype.str
    return text if np.dtype(text).type is dtype.type else text[0] + dtype.char


def _dtype(text: Any) -> np.dtype[Any]:
    if type(text) is not str or not _DTYPE.fullmatch(text):
        raise DecodeError(f"not a dtype that travels: {text!r:.40}")
    dtype = np.dtype(text)
    if dtype.kind not in KINDS or dtype.hasobject or dtype.fields is not None:
        raise DecodeError(f"not a dtype that travels: {text!r:.40}")
    return dtype


def _data(data: Any) -> bytes | bytearray | memoryview:
    """An array's bytes: base64 text, or raw bytes that :func:`.blobs.attach` put in place of a reference."""
    if type(data) in (bytes, bytearray, memoryview):
        return data
    if type(data) is dict and blobs.TAG in data:
        raise DecodeError("an array's data was not found beside the message (it expired, or was never stored)")
    return _unb64(data)


def _b64(data: Any) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _unb64(text: Any) -> bytes:
    if type(text) is not str:
        raise DecodeError("numpy data is a base64 string")
    return binascii.a2b_base64(text, strict_mode=True)
