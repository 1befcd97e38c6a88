"""Functions travel by name: ``package.module:function`` or ``path/to/script.py:function``.

A worker imports a target only when its module (or script path) matches the
allow-list, so a message naming ``os:system`` is refused before anything is
imported.

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
    location, sep, function = text.rpartition(":")
    if not sep or not location or not function:
        raise TargetError(f"target {text!r} is not module:function or path/to/script.py:function")
    is_script = location.endswith(".py") or os.sep in location
    if not is_script and not all(part.isidentifier() for part in location.split(".")):
        raise TargetError(f"target {text!r}: {location!r} is not a module name or a .py path")
    if not all(part.isidentifier() for part in function.split(".")):
        raise TargetError(f"target {text!r}: {function!r} is not a function name")
    return Target(location, function, is_script)


def is_allowed(target: Target, patterns: Sequence[str]) -> bool:
    """Whether ``target``'s module or script path matches one of ``patterns``.

    A pattern matches a module name exactly, or with shell wildcards
    (``mypkg.*``); for scripts it is matched against the path as given and the
    absolute path.
    """
    names = [target.location]
    if target.is_script:
        names.append(script_path(target.location))
    return any(fnmatch.fnmatchcase(name, pattern) for name in names for pattern in patterns)


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
    if not module or not qualname or "<" in qualname:
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
    full = script_path(path)
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
    """Return the callable ``text`` names.

    With ``allow`` given (workers), the target must match it before anything is
    imported; ``None`` (the producer's own process) allows everything.
    """
    target = parse_target(text)
    if allow is not None and not is_allowed(target, allow):
        raise TargetNotAllowed(
            f"{target} is not on the workers' allow-list ({', '.join(allow)}); "
            "add its module to DISTLOOP_ALLOW or --allow"
        )
    obj: Any = _import(target)
    for part in target.function.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"{target.location!r} has no function {target.function!r}") from None
    if not callable(obj):
        raise TargetError(f"{target} is a {type(obj).__name__}, not a callable")
    return obj
