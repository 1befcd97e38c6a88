"""What a call looks like to its caller: its name, its encoded arguments, its errors.

Functions travel by name, arguments and results as JSON (:mod:`distloop.tasks.core.codec`).
A call that raised on a worker comes back as :class:`~distloop.tasks.core.errors.CallFailed`
with the worker's traceback as ``__cause__``; when the worker's exception is a
built-in type, the error is also an instance of it (``except ValueError`` still
works after switching from a process pool).
"""

from __future__ import annotations

import builtins
import inspect
import reprlib
from collections.abc import Callable, Sequence
from typing import Any

from distloop.tasks.core import codec
from distloop.tasks.core.errors import CallFailed, RemoteTraceback, ResultNotSerializable, TargetError
from distloop.tasks.targets import target_of

#: What the error for a value that cannot travel adds.
TYPES_HINT = codec.WHAT_TRAVELS


def name_of(fn: Callable[..., Any]) -> str:
    """``fn``'s target name for the workers; a clear error for what cannot travel by name."""
    if inspect.ismethod(fn) and not isinstance(fn.__self__, type):
        raise TargetError(f"{fn!r} is a bound method: workers find functions by name, pass a module-level function")
    try:
        return target_of(fn)
    except TargetError as exc:
        raise TargetError(f"{exc} (workers find functions by name, so lambdas and closures cannot travel)") from None


def describe(target: str, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """``distloop.tasks.demo:cube(7)``: a call as error messages show it."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = 40
    parts = [short.repr(a) for a in args] + [f"{k}={short.repr(v)}" for k, v in kwargs.items()]
    return f"{target}({', '.join(parts)})"


_REMOTE_CLASSES: dict[type[Exception], type[CallFailed]] = {}


def _remote_class(base: type[Exception]) -> type[CallFailed]:
    """A ``CallFailed`` that is also a ``base`` (``except ValueError`` still catches it)."""
    if base not in _REMOTE_CLASSES:
        namespace = {"__str__": BaseException.__str__, "__module__": __name__}
        _REMOTE_CLASSES[base] = type(f"Remote{base.__name__}", (CallFailed, base), namespace)
    return _REMOTE_CLASSES[base]


def call_error(error: dict[str, Any], call: str) -> Exception:
    """The exception a caller sees for a failed call, with the worker's traceback as ``__cause__``."""
    if error.get("type") == "NotJSONable":
        return ResultNotSerializable(f"result of {call}: {error['message']}; {TYPES_HINT}")
    exc: CallFailed
    base = getattr(builtins, str(error.get("type")), None)
    try:
        if not (isinstance(base, type) and issubclass(base, Exception)) or issubclass(base, OSError):
            raise TypeError  # OSError's constructor reinterprets its arguments: keep the plain error
        exc = _remote_class(base)(call, error["type"], error["message"], error.get("traceback", ""))
    except TypeError:
        exc = CallFailed(call, error["type"], error["message"], error.get("traceback", ""))
    if exc.remote_traceback:
        exc.__cause__ = RemoteTraceback(exc.remote_traceback)
    return exc


def encode_call(target: str, args: Sequence[Any], kwargs: dict[str, Any], position: int) -> list[Any]:
    try:
        return codec.encode_call(args, dict(kwargs))
    except codec.NotJSONable as exc:
        raise ResultNotSerializable(
            f"cannot send {describe(target, args, kwargs)} (item {position}): {exc}; {TYPES_HINT}"
        ) from None
