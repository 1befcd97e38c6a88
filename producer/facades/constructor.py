"""The constructor arguments of ``multiprocessing.Pool`` and ``ProcessPoolExecutor``, checked as they are.

Same errors as the standard library for the same mistakes (``ValueError`` for a
count below one, ``TypeError`` for an initializer that is not callable), plus what
distribution adds: an initializer must travel by name (module-level, importable),
and its arguments as JSON, both refused here, at construction, with one clear line.
"""

from __future__ import annotations

import multiprocessing.context
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from distloop.facades.call_errors import TYPES_HINT, describe, name_of
from distloop.tasks.core import codec
from distloop.tasks.core.errors import ResultNotSerializable


def check_count(count: int | None, message: str) -> None:
    """``processes`` / ``max_workers``: None or at least 1 (``ValueError``, the standard library's message)."""
    if count is not None and count <= 0:
        raise ValueError(message)


def check_max_tasks(count: int | None, message: str) -> None:
    """``maxtasksperchild`` / ``max_tasks_per_child``: None or a positive int."""
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise ValueError(message)


def mp_context_ignored(context: Any) -> None:
    """``context`` / ``mp_context``: a ``multiprocessing`` context or None; it does not apply.

    The processes that run the calls are a Celery worker's prefork pool, started
    by that worker (on its own host), not by this process: there is no start
    method to choose here.
    """
    if context is not None and not isinstance(context, multiprocessing.context.BaseContext):
        raise TypeError(f"mp_context must be a multiprocessing context, not {type(context).__name__}")


def initializer_spec(initializer: Callable[..., object] | None, initargs: Iterable[Any]) -> dict[str, Any] | None:
    """The initializer's wire form (``distloop.tasks.initializer``): its name, JSON arguments, a pool id."""
    if initializer is None:
        return None
    if not callable(initializer):
        raise TypeError("initializer must be a callable")
    target = name_of(initializer)  # a lambda or a closure: TargetError, here and now
    args = list(initargs)
    try:
        encoded = codec.encode(args)
    except codec.NotJSONable as exc:
        raise ResultNotSerializable(
            f"cannot send the initializer {describe(target, args, {})}: {exc}; {TYPES_HINT}"
        ) from None
    return {"target": target, "args": encoded, "pool": uuid.uuid4().hex[:12]}
