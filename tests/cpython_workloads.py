"""The functions CPython's concurrent.futures and multiprocessing.Pool tests send, as module-level functions.

The originals pass builtins (``pow``, ``divmod``, ``time.sleep``, ``int``...) and
functions of the test modules. Workers run functions by name from allowed modules
only (``tests.cpython_workloads`` is on the test workers' allow-list, ``builtins`` and
``time`` are not, and should not be), so each is wrapped here under a name that says
which it stands for. Adapted from CPython's ``Lib/test/test_concurrent_futures/`` and
``Lib/test/_test_multiprocessing.py`` (PSF license).
"""

from __future__ import annotations

import time
from typing import Any


def mul(x: Any, y: Any) -> Any:
    return x * y


def capture(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def pow_(base: Any, exp: Any) -> Any:
    """``pow``."""
    return pow(base, exp)


def divmod_(a: Any, b: Any) -> tuple[Any, Any]:
    """``divmod``."""
    return divmod(a, b)


def str_(value: Any) -> str:
    """``str``."""
    return str(value)


def int_(value: Any = 0) -> int:
    """``int``."""
    return int(value)


def abs_(value: Any) -> Any:
    """``abs``."""
    return abs(value)


def ident(value: Any) -> int:
    """``id``."""
    return id(value)


def sleep(seconds: float) -> None:
    """``time.sleep``."""
    time.sleep(seconds)


def sleep_and_raise(t: float) -> None:
    time.sleep(t)
    raise Exception("this is an exception")


def sleep_and_write(t: float, msg: str, path: str) -> None:
    """``sleep_and_print``, writing to ``path``: a worker's stdout is not the test's."""
    time.sleep(t)
    with open(path, "a") as out:
        out.write(msg + "\n")


# --- _test_multiprocessing.py ---


def sqr(x: Any, wait: float = 0.0) -> Any:
    time.sleep(wait)
    return x * x


def raise_large_valuerror(wait: float) -> None:
    time.sleep(wait)
    raise ValueError("x" * 1024**2)


def identity(x: Any) -> Any:
    return x


def raise_runtime_123() -> None:
    raise RuntimeError(123)  # some comment


def raise_runtime_foo() -> None:
    raise RuntimeError("foo")
