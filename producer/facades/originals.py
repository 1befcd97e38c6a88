"""The exception a worker raised, rebuilt on the caller's side from data, never unpickled.

A worker describes a failed call as JSON (:func:`distloop.tasks.kernel.item_error`):
its class's module and ``__qualname__``, its ``args``, its instance attributes and an
``OSError``'s ``errno``/``strerror``/``filename``/``filename2``. :func:`rebuild` turns
that back into the same exception::

    worker                                   caller
    raise FileNotFoundError(2, "gone", "p")  {"module": "builtins", "qualname": "FileNotFoundError",
                                              "args": [2, "gone"], "oserror": [2, "gone", "p", null], ...}
                                             -> FileNotFoundError(2, "gone", "p", None, None)

Nothing runs but the class's own constructor (and its ``__str__``, to check that the
rebuilt exception reads as the original did), and only for a class that is:

- an ``Exception`` subclass (``SystemExit``, ``KeyboardInterrupt`` and other
  ``BaseException``-only classes are never raised here: they would stop the caller),
- found in its module's namespace (no module ``__getattr__``, no dotted path through
  other objects, no dunder names) with a matching ``__qualname__`` and ``__module__``,
- in ``builtins`` (its exception classes, not its functions), or in a module on the
  caller's allow-list: ``DISTLOOP_ALLOW`` and the module of the function called
  (:func:`allowed_for`). A script's classes come from the script this process runs or
  already imported; a script is never imported here (that would run it again).

When any of that fails (or the constructor raises, or the args did not travel),
:func:`rebuild` returns None and the caller gets distloop's own error instead
(:mod:`distloop.facades.call_errors`).
"""

from __future__ import annotations

import builtins
import importlib
from collections.abc import Sequence
from typing import Any

from distloop.tasks.core import codec
from distloop.tasks.core.errors import TargetError
from distloop.tasks.core.settings import Settings
from distloop.tasks.targets import is_allowed, loaded_script, parse_target


def allowed_for(target: str) -> tuple[str, ...]:
    """Modules whose exception classes a failed call of ``target`` may be rebuilt from."""
    location = target.rpartition(":")[0]
    return Settings.from_env().allowed_patterns + ((location,) if location else ())


def exception_class(module: Any, qualname: Any, allow: Sequence[str]) -> type[Exception] | None:
    """The exception class ``module.qualname`` if the rules above let it be rebuilt, else None."""
    if not (isinstance(module, str) and isinstance(qualname, str)):
        return None
    if not qualname.isidentifier() or qualname.startswith("__"):
        return None
    namespace = _namespace(module, qualname, allow)
    if namespace is None:
        return None
    cls = vars(namespace).get(qualname)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        return None
    if cls.__qualname__ != qualname or cls.__module__ != namespace.__name__:
        return None  # defined elsewhere, only imported there
    return cls


def _namespace(module: str, qualname: str, allow: Sequence[str]) -> Any:
    if module == "builtins":
        return builtins
    try:
        target = parse_target(f"{module}:{qualname}")
    except TargetError:
        return None
    if not is_allowed(target, allow):
        return None
    if target.is_script:
        return loaded_script(module)
    try:
        return importlib.import_module(module)
    except Exception:
        return None


def rebuild(error: dict[str, Any], allow: Sequence[str]) -> Exception | None:
    """The exception ``error`` describes, with the same class, args and ``str()``; None if it cannot be."""
    cls = exception_class(error.get("module"), error.get("qualname"), allow)
    if cls is None or "args" not in error:
        return None
    args = codec.decode(error["args"])
    oserror = codec.decode(error["oserror"]) if "oserror" in error else None
    if not isinstance(args, list):
        return None
    try:
        exc = _construct(cls, args, oserror)
        if type(exc) is not cls:
            return None
        _restore_attributes(exc, codec.decode(error["attrs"]) if "attrs" in error else {})
        if str(exc) != error.get("message"):
            return None  # its constructor does not take back its own args (``super().__init__(f"...")``)
    except Exception:
        return None
    if isinstance(exc, OSError) and isinstance(oserror, list) and oserror != _os_fields(exc):
        return None
    return exc


def _os_fields(exc: OSError) -> list[Any]:
    return [exc.errno, exc.strerror, exc.filename, exc.filename2]


def _construct(cls: type[Exception], args: list[Any], oserror: Any) -> Exception:
    if issubclass(cls, OSError) and isinstance(oserror, list) and len(oserror) == 4:
        errno, strerror, filename, filename2 = oserror
        if errno is not None and (filename is not None or filename2 is not None) and len(args) == 2:
            # OSError keeps the file names out of .args: give them back (winerror: None).
            return cls(errno, strerror, filename, None, filename2)
    return cls(*args)


def _restore_attributes(exc: Exception, attrs: Any) -> None:
    """Instance attributes the worker's exception had (``self.code = code``), and its notes.

    Written to the instance's ``__dict__`` directly, as data: no ``__setattr__`` runs.
    """
    if not isinstance(attrs, dict):
        return
    for key, value in attrs.items():
        if key == "__notes__":
            if isinstance(value, list) and all(isinstance(note, str) for note in value):
                exc.__dict__[key] = value
        elif isinstance(key, str) and not key.startswith("__"):
            exc.__dict__[key] = value
