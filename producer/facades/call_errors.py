"""What a call looks like to its caller: its name, its encoded arguments, its errors.

Functions travel by name, arguments and results as JSON (:mod:`distloop.tasks.core.codec`).
A call that raised on a worker raises the same exception for its caller (its class,
args and ``str()``, rebuilt by :mod:`distloop.facades.originals`), with the worker's
traceback as ``__cause__``, as ``concurrent.futures`` does. Where the class cannot be
rebuilt safely, the caller gets :class:`~distloop.tasks.core.errors.CallFailed` naming
it; when the worker's exception is a built-in type, that error is also an instance of
it (``except ValueError`` still catches it).
"""

from __future__ import annotations

import builtins
import inspect
import reprlib
from collections.abc import Callable, Sequence
from typing import Any

from distloop.facades.originals import allowed_for, rebuild
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


def call_error(error: dict[str, Any], call: str, target: str = "") -> Exception:
    """The exception a caller sees for a failed call of ``target``, with the worker's traceback as ``__cause__``.

    The worker's own exception where it can be rebuilt (see :mod:`distloop.facades.originals`),
    else :func:`fallback_error`.
    """
    if error.get("type") == "NotJSONable" and error.get("module") in (None, codec.__name__):
        return ResultNotSerializable(f"result of {call}: {error['message']}; {TYPES_HINT}")
    exc = rebuild(error, allowed_for(target)) or fallback_error(error, call)
    traceback = error.get("traceback") or ""
    if traceback:
        exc.__cause__ = RemoteTraceback(traceback)
    return exc


def fallback_error(error: dict[str, Any], call: str) -> CallFailed:
    """A :class:`CallFailed` naming the worker's exception class (module included) and message.

    For a built-in exception type other than ``SystemExit``, ``KeyboardInterrupt`` and
    other ``BaseException``-only ones, it is also an instance of that type (an
    ``OSError``'s ``errno``, ``strerror`` and file names set where they travelled).
    """
    module, kind = error.get("module"), str(error.get("type"))
    name = kind if module in (None, "builtins") else f"{module}.{error.get('qualname') or kind}"
    base = getattr(builtins, kind, None) if module in (None, "builtins") else None
    exc: CallFailed
    if isinstance(base, type) and issubclass(base, Exception):
        try:
            exc = _remote_class(base)(call, name, error["message"], error.get("traceback", ""))
        except TypeError:  # a built-in type that cannot be a base (an ExceptionGroup)
            exc = CallFailed(call, name, error["message"], error.get("traceback", ""))
    else:
        exc = CallFailed(call, name, error["message"], error.get("traceback", ""))
    exc.exc_module, exc.exc_qualname = module, error.get("qualname")
    oserror = codec.decode(error["oserror"]) if "oserror" in error else None
    if isinstance(exc, OSError) and isinstance(oserror, list) and len(oserror) == 4:
        exc.errno, exc.strerror, exc.filename, exc.filename2 = oserror
    return exc


def encode_call(target: str, args: Sequence[Any], kwargs: dict[str, Any], position: int) -> list[Any]:
    try:
        return codec.encode_call(args, dict(kwargs))
    except codec.NotJSONable as exc:
        raise ResultNotSerializable(
            f"cannot send {describe(target, args, kwargs)} (item {position}): {exc}; {TYPES_HINT}"
        ) from None
