"""distloop's exceptions.

Every error a user can meet is a :class:`DistloopError`; its ``exit_code`` is
what the command line exits with, and ``str(error)`` is the one line it prints.
Living in ``tasks`` (the lowest layer) lets workers and the producer share them.
"""

from __future__ import annotations

from concurrent.futures import BrokenExecutor
from typing import Any


class DistloopError(Exception):
    """Base class for every error distloop reports to its user."""

    exit_code = 2


class UsageError(DistloopError):
    """A bad argument: a malformed range, an unknown option value, a bad path."""

    exit_code = 2


class TargetError(DistloopError):
    """The loop's function cannot be used: missing module or function, not callable."""

    exit_code = 2


class TargetNotAllowed(TargetError):
    """The function's module is not on the workers' allow-list, so it was not imported."""

    exit_code = 2


class ResultNotSerializable(DistloopError):
    """A value (argument or result) that JSON cannot carry; names the type and the item."""

    exit_code = 2


class BrokerUnavailable(DistloopError):
    """Redis cannot be reached, refuses the credentials, or no worker is serving."""

    exit_code = 3


class ChunkFailed(DistloopError):
    """The loop's own function raised for an item.

    Carries the loop index, the exception type and message, and the traceback
    from the process that ran it (also attached as ``__cause__`` where possible).
    """

    exit_code = 1
    #: Where the exception's class lives on the worker (a module name, or a script's
    #: path) and its ``__qualname__``, when the worker said.
    exc_module: str | None = None
    exc_qualname: str | None = None

    def __init__(self, index: Any, exc_type: str, message: str, traceback: str = "") -> None:
        self.index = index
        self.exc_type = exc_type
        self.message = message
        self.remote_traceback = traceback
        super().__init__(f"f({index}) raised {exc_type}: {message}")


class CallFailed(ChunkFailed):
    """A call made through the Executor, Pool or joblib facade raised an exception that cannot be rebuilt.

    The caller gets the worker's own exception wherever its class can be rebuilt
    safely (``distloop.facades.originals``); this is the fallback. ``call`` describes
    the call (``distloop.tasks.demo:cube(7)``) and ``exc_type`` names the class (with
    its module unless built-in). When the worker's exception is a built-in type, the
    error is also an instance of that type, so ``except ValueError:`` keeps working;
    ``SystemExit`` and ``KeyboardInterrupt`` never are (they would stop the caller).
    """

    def __init__(self, call: str, exc_type: str, message: str, traceback: str = "") -> None:
        super().__init__(call, exc_type, message, traceback)
        self.call = call
        self.args = (f"{call} raised {exc_type}: {message}",)


class InitializerFailed(DistloopError, BrokenExecutor):
    """A Pool's or Executor's ``initializer`` raised on a worker: the pool is broken.

    As ``concurrent.futures``' ``BrokenProcessPool``: the calls waiting fail with it,
    and new calls are refused. Also a ``concurrent.futures.BrokenExecutor``.
    """

    exit_code = 1


class Interrupted(DistloopError):
    """The user interrupted the job (Ctrl-C or SIGTERM)."""

    exit_code = 130


class RemoteTraceback(Exception):
    """Holds a worker's traceback text so it prints as the ``__cause__`` of an error."""

    def __init__(self, tb: str) -> None:
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'
