"""Functions travel by name: ``package.module:function`` or ``path/to/script.py:function``.

A worker imports a target only when its module (or script path) matches the
allow-list, so a message naming ``os:system`` is refused before anything is
imported. What it then runs must be a plain function *defined* there: the function
part is one name (no dotted path through another object, no dunder name), the
object is a ``def`` function (no class, module, builtin, ``functools.partial`` or
other callable), and its own ``__module__`` is allowed too (a function an allowed
module imported from elsewhere is refused). A script's real path (symlinks and
``..`` resolved) must match the allow-list, so no path trick leaves the allowed files.

Names resolve as ``python -m`` would from the project folder, :data:`PROJECT_ROOT`
(the working directory this process started in: the producer's, and each worker's,
where it was started): ``myproject.jobs`` and ``tasks`` (a user's own ``tasks.py``)
are imported from there first, and a relative script path is read from there. What
ran before in the process does not change that: a script's folder is on the import
path while the script runs, and after the project folder afterwards.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from distloop.tasks.core.errors import TargetError, TargetNotAllowed


@dataclass(frozen=True)
class Target:
    """A parsed target: where the function lives and its (dotted) name there."""

    location: str  # a module name, or a script path
    function: str
    is_script: bool

    def __str__(self) -> str:
        return f"{self.location}:{self.function}"


def parse_target(text: str) -> Target:
    """Parse ``module:function`` or ``script.py:function``."""
    if not text.isprintable():
        raise TargetError(f"target {text!r} has control characters")
    location, sep, function = text.rpartition(":")
    if not sep or not location or not function:
        raise TargetError(f"target {text!r} is not module:function or path/to/script.py:function")
    is_script = location.endswith(".py") or os.sep in location
    if not is_script and not all(part.isidentifier() for part in location.split(".")):
        raise TargetError(f"target {text!r}: {location!r} is not a module name or a .py path")
    if not all(part.isidentifier() for part in function.split(".")):
        raise TargetError(f"target {text!r}: {function!r} is not a function name")
    return Target(location, function, is_script)


def _refused(target: Target | str, reason: str) -> TargetNotAllowed:
    return TargetNotAllowed(f"{target} is refused: {reason}; workers run only functions defined in an allowed module")


def check_name(target: Target) -> None:
    """Refuse, before anything is imported, a name that reaches past a module's own functions.

    The function part is one name (``os.system``, ``f.__globals__.clear`` and
    ``SomeClass.method`` are refused), and no part of the target is a dunder or
    name-mangled name (``__builtins__``, ``pkg.__main__``).
    """
    if "." in target.function:
        raise _refused(target, f"{target.function!r} is a dotted path, not one function's name")
    parts = [target.function] if target.is_script else [*target.location.split("."), target.function]
    for part in parts:
        if part.startswith("__"):
            raise _refused(target, f"{part!r} is a dunder name")
    if not target.is_script and target.location.startswith(_SCRIPT_PREFIX):
        raise _refused(target, f"{target.location!r} is distloop's internal name for a script")


def is_allowed(target: Target, patterns: Sequence[str]) -> bool:
    """Whether ``target``'s module or script path matches one of ``patterns``.

    A pattern matches a module name exactly, or with shell wildcards
    (``mypkg.*``). For scripts, the script's real path (symlinks and ``..``
    resolved) is matched against each pattern made absolute from
    :data:`PROJECT_ROOT` (its folders resolved likewise), so ``allowed/../evil.py``
    or a symlink out of an allowed folder matches only where the file really lies.
    """
    if not target.is_script:
        return module_allowed(target.location, patterns)
    real = os.path.realpath(script_path(target.location))
    return any(fnmatch.fnmatchcase(real, _real_pattern(pattern)) for pattern in patterns)


def module_allowed(module: str, patterns: Sequence[str]) -> bool:
    """Whether the module name ``module`` matches one of ``patterns``."""
    return any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns)


def _real_pattern(pattern: str) -> str:
    """``pattern`` as an absolute path, with the folders before its first wildcard resolved."""
    full = os.path.join(PROJECT_ROOT, pattern)
    wild = [full.find(c) for c in "*?[" if c in full]
    if not wild:
        return os.path.realpath(full)
    head = os.path.dirname(full[: min(wild)])
    return os.path.join(os.path.realpath(head), os.path.relpath(full, head))


#: Where module targets are imported from and relative script paths are read, as
#: ``python -m`` would do from this folder.
PROJECT_ROOT = os.path.abspath(os.getcwd())


def _ensure_project_root() -> None:
    """Put :data:`PROJECT_ROOT` on the import path, first, unless it is there already."""
    if PROJECT_ROOT not in sys.path and "" not in sys.path[:1]:
        sys.path.insert(0, PROJECT_ROOT)


def script_path(path: str) -> str:
    """The absolute path of a script target (relative paths are read from :data:`PROJECT_ROOT`)."""
    return os.path.normpath(os.path.join(PROJECT_ROOT, path))


def target_of(fn: Callable[..., Any]) -> str:
    """The name by which a worker can find ``fn`` (functions defined in a script included)."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname or "." in qualname:
        raise TargetError(f"{fn!r} has no importable name: define it at module level")
    location = location_of(module)
    if location is None:
        raise TargetError(f"{qualname} lives in an interactive session: put it in a .py file")
    return f"{location}:{qualname}"


def location_of(module: str) -> str | None:
    """Where a worker finds the module named ``module``: its name, or for a script its path.

    None for ``__main__`` without a file (an interactive session).
    """
    if module == "__main__" or module.startswith(_SCRIPT_PREFIX):
        path = getattr(sys.modules.get(module), "__file__", None)
        if not path:
            return None
        full = script_path(path)
        # Relative to the project folder when it lies there, so that a worker started in
        # the same folder on another host finds it too.
        inside = os.path.commonpath([full, PROJECT_ROOT]) == PROJECT_ROOT
        return os.path.relpath(full, PROJECT_ROOT) if inside else full
    return module


def loaded_script(path: str) -> Any:
    """The module this process already runs or imported from the script ``path`` (never imports it)."""
    full = script_path(path)
    for module in (sys.modules.get("__main__"), sys.modules.get(_script_module_name(full))):
        file = getattr(module, "__file__", None)
        if file and script_path(file) == full:
            return module
    return None


def _script_module_name(full: str) -> str:
    return _SCRIPT_PREFIX + hashlib.sha1(full.encode()).hexdigest()[:12]


_SCRIPT_PREFIX = "distloop_script_"


def _import_script(path: str) -> Any:
    full = os.path.realpath(script_path(path))  # the file is_allowed checked, not a link to it
    name = _script_module_name(full)
    if name in sys.modules:
        return sys.modules[name]
    if not os.path.isfile(full):
        raise TargetError(f"script {path!r} not found (project folder {PROJECT_ROOT})")
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot load {path!r} as a Python script")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # Let the script import its neighbours, as it would when run directly: its folder
    # comes first while it runs, then goes after the project folder, so that module
    # targets resolve the same whichever scripts ran before.
    folder = os.path.dirname(full)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        if added:
            sys.path.remove(folder)
            sys.path.append(folder)
    return module


def _import(target: Target) -> Any:
    try:
        _ensure_project_root()
        if target.is_script:
            return _import_script(target.location)
        return importlib.import_module(target.location)
    except TargetError:
        raise
    except ModuleNotFoundError as exc:
        raise TargetError(f"cannot import {target.location!r}: {exc}") from exc
    except Exception as exc:
        raise TargetError(f"importing {target.location!r} failed: {type(exc).__name__}: {exc}") from exc


def resolve(text: str, allow: Sequence[str] | None = None) -> Callable[..., Any]:
    """Return the plain function ``text`` names.

    With ``allow`` given (workers), the target must match it before anything is
    imported, and the function's own module must match it too; ``None`` (the
    producer's own process) allows every module. Either way the name must be one
    function's, not a path through other objects, and the object a ``def``
    function (:func:`check_name`, :func:`check_function`).
    """
    target = parse_target(text)
    check_name(target)
    if allow is not None and not is_allowed(target, allow):
        what = (
            f"its path (the real one: {os.path.realpath(script_path(target.location))})"
            if target.is_script
            else "its module"
        )
        raise TargetNotAllowed(
            f"{target} is not on the workers' allow-list ({', '.join(allow)}); add {what} to DISTLOOP_ALLOW or --allow"
        )
    module = _import(target)
    try:
        obj = getattr(module, target.function)
    except AttributeError:
        raise TargetError(f"{target.location!r} has no function {target.function!r}") from None
    check_function(target, obj, module, allow)
    return obj


def check_function(target: Target, obj: Any, module: Any, allow: Sequence[str] | None) -> None:
    """Refuse anything but a ``def`` function defined in ``module`` or in another allowed module."""
    if not callable(obj):
        raise _refused(target, f"it is a {_kind(obj)}, not a callable")
    if type(obj) is not types.FunctionType:
        raise _refused(target, f"it is a {_kind(obj)}, not a function defined with def")
    home = obj.__module__
    if allow is None or home == module.__name__:
        return
    if not isinstance(home, str) or not module_allowed(home, allow):
        raise _refused(target, f"{target.function} is defined in {home!r}, which is not on the allow-list")


def _kind(obj: Any) -> str:
    """What ``obj`` is, as a refusal names it: a module, a class, a builtin function, functools.partial."""
    if isinstance(obj, types.ModuleType):
        return "module"
    if isinstance(obj, type):
        return "class"
    if isinstance(obj, types.BuiltinFunctionType):
        return "builtin function"
    cls = type(obj)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def allow_entries(text: str) -> list[str]:
    """What an embedded cluster's workers must allow to run ``text``: its module, and its function's.

    A module may run a function it imported from another (``tasks:work`` with
    ``from mylib import work`` in ``tasks.py``): the producer's own private workers
    allow ``mylib`` too. Workers at a broker allow only what their allow-list names.
    """
    target = parse_target(text)
    if target.is_script:  # not loaded again here: a script's own functions need its path only
        return [target.location]
    try:
        home = resolve(text).__module__
    except TargetError:
        return [target.location]  # the workers refuse it, saying why
    return [target.location] if home == target.location else [target.location, home]
