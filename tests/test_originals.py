"""The caller gets the exception the worker raised: same class, args, ``str()``, the traceback as ``__cause__``.

End to end: a user's project folder (see :mod:`tests.user_project`) whose function
raises each kind of exception, real prefork workers started in that folder, and a
script there that calls it through ``CeleryExecutor``, ``Pool`` and joblib and
prints, per case and facade, what it caught. Where a class cannot be rebuilt safely
(not allowed, args that do not travel, a constructor that does not take its own
args back, ``SystemExit``/``KeyboardInterrupt``) the caller gets ``CallFailed``
naming the class, and the producer carries on.
"""

from __future__ import annotations

import errno
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distloop.facades.call_errors import call_error
from distloop.facades.originals import exception_class, rebuild
from distloop.tasks.core.settings import Settings
from distloop.tasks.kernel import item_error
from distloop.worker.redis_server import start_redis
from tests.conftest import Workers
from tests.user_project import build_project, run_in, user_env, venv_command

pytestmark = pytest.mark.integration

FILES = {
    "myproject/failing.py": """
        import errno

        from otherlib import Hidden


        class MyError(Exception):
            def __init__(self, code, detail="none"):
                super().__init__(code, detail)
                self.code = code
                self.detail = detail


        class Wrapped(Exception):
            # Its constructor does not take its own args back: Wrapped(*e.args) reads differently.
            def __init__(self, value):
                super().__init__(f"bad value {value}")


        class NeedsTwo(Exception):
            def __init__(self, a, b):
                super().__init__(f"{a} and {b}")


        class Thing:
            def __repr__(self):
                return "Thing()"


        def fail(case):
            if case == "RuntimeError(123)":
                raise RuntimeError(123)
            if case == "ValueError('x', 2)":
                raise ValueError("x", 2)
            if case == "KeyError('k')":
                raise KeyError("k")
            if case == "FileNotFoundError":
                raise FileNotFoundError(errno.ENOENT, "no such file", "/nowhere/data.csv")
            if case == "PermissionError":
                raise PermissionError(errno.EACCES, "denied")
            if case == "MyError":
                raise MyError(42, detail="too big")
            if case == "Hidden":
                raise Hidden("from a module not on the allow-list")
            if case == "args not JSON":
                raise ValueError(Thing())
            if case == "Wrapped":
                raise Wrapped(3)
            if case == "NeedsTwo":
                raise NeedsTwo(1, 2)
            if case == "SystemExit":
                raise SystemExit(3)
            if case == "KeyboardInterrupt":
                raise KeyboardInterrupt("stop")
            return case


        def fail_at_3(i):
            if i == 3:
                raise MyError(i, detail="item three")
            return i
    """,
    "otherlib/__init__.py": """
        class Hidden(Exception):
            pass
    """,
    "raise_table.py": """
        # Every case through every facade; what the caller caught, as JSON.
        import json
        import sys
        import traceback

        import joblib

        import distloop
        from myproject.failing import MyError
        from myproject.failing import fail as fail_in_project
        from otherlib import Hidden


        class ScriptError(Exception):
            pass


        def script_fail(case):
            if case == "ok":
                return case
            raise ScriptError(case, 1)


        EXPECT = {  # the class `except` must catch
            "RuntimeError(123)": RuntimeError, "ValueError('x', 2)": ValueError, "KeyError('k')": KeyError,
            "FileNotFoundError": FileNotFoundError, "PermissionError": PermissionError, "MyError": MyError,
            "Hidden": distloop.CallFailed, "args not JSON": ValueError, "Wrapped": distloop.CallFailed,
            "NeedsTwo": distloop.CallFailed, "SystemExit": distloop.CallFailed,
            "KeyboardInterrupt": distloop.CallFailed, "ScriptError": ScriptError,
        }


        def caught(case, call):
            try:
                call()
            except EXPECT[case] as exc:
                cause = exc.__cause__
                return {
                    "class": f"{type(exc).__module__}.{type(exc).__qualname__}",
                    "str": str(exc),
                    "args": list(exc.args),
                    "errno": getattr(exc, "errno", None),
                    "filename": getattr(exc, "filename", None),
                    "is OSError": isinstance(exc, OSError),
                    "is Hidden": isinstance(exc, Hidden),
                    "is SystemExit or KeyboardInterrupt": isinstance(exc, (SystemExit, KeyboardInterrupt)),
                    "code": getattr(exc, "code", None),
                    "cause": str(cause) if cause is not None else None,
                    "printed": "".join(traceback.format_exception(exc)),
                }
            except BaseException as exc:
                return {"escaped": f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"}
            return {"escaped": "nothing raised"}


        if __name__ == "__main__":
            out = {}
            distloop.register_joblib()
            with distloop.CeleryExecutor() as executor, distloop.Pool() as pool:
                for case in EXPECT:
                    fail = script_fail if case == "ScriptError" else fail_in_project
                    out[case] = {
                        "executor submit": caught(case, lambda: executor.submit(fail, case).result(timeout=60)),
                        "executor map": caught(case, lambda: list(executor.map(fail, ["ok", case]))),
                        "pool apply": caught(case, lambda: pool.apply(fail, (case,))),
                        "pool map": caught(case, lambda: pool.map(fail, ["ok", case, "ok"])),
                        "pool imap": caught(case, lambda: list(pool.imap(fail, ["ok", case]))),
                        "pool apply_async": caught(case, lambda: pool.apply_async(fail, (case,)).get(60)),
                        "joblib": caught(case, lambda: joblib.Parallel(n_jobs=2, backend="distloop")(
                            joblib.delayed(fail)(c) for c in ["ok", case])),
                        "Parallel": caught(case, lambda: distloop.Parallel(n_jobs=2)(
                            distloop.delayed(fail)(c) for c in ["ok", case])),
                    }
            print(json.dumps(out))
    """,
}

#: case -> (the class the caller gets, its str(), its args); for fallbacks args are CallFailed's one line.
TABLE: dict[str, tuple[str, str, Any]] = {
    "RuntimeError(123)": ("builtins.RuntimeError", "123", [123]),
    "ValueError('x', 2)": ("builtins.ValueError", "('x', 2)", ["x", 2]),
    "KeyError('k')": ("builtins.KeyError", "'k'", ["k"]),
    "FileNotFoundError": (
        "builtins.FileNotFoundError", "[Errno 2] no such file: '/nowhere/data.csv'", [errno.ENOENT, "no such file"],
    ),
    "PermissionError": ("builtins.PermissionError", "[Errno 13] denied", [errno.EACCES, "denied"]),
    "MyError": ("myproject.failing.MyError", "(42, 'too big')", [42, "too big"]),
    "Hidden": ("distloop.tasks.core.errors.CallFailed",
               "myproject.failing:fail('Hidden') raised otherlib.Hidden: from a module not on the allow-list", None),
    "args not JSON": ("distloop.facades.call_errors.RemoteValueError",
                      "myproject.failing:fail('args not JSON') raised ValueError: Thing()", None),
    "Wrapped": ("distloop.tasks.core.errors.CallFailed",
                "myproject.failing:fail('Wrapped') raised myproject.failing.Wrapped: bad value 3", None),
    "NeedsTwo": ("distloop.tasks.core.errors.CallFailed",
                 "myproject.failing:fail('NeedsTwo') raised myproject.failing.NeedsTwo: 1 and 2", None),
    "SystemExit": ("distloop.tasks.core.errors.CallFailed",
                   "myproject.failing:fail('SystemExit') raised SystemExit: 3", None),
    "KeyboardInterrupt": ("distloop.tasks.core.errors.CallFailed",
                          "myproject.failing:fail('KeyboardInterrupt') raised KeyboardInterrupt: stop", None),
    # A class of the script the caller runs: its own __main__ class, not a second copy.
    "ScriptError": ("__main__.ScriptError", "('ScriptError', 1)", ["ScriptError", 1]),
}  # fmt: skip
FACADES = (
    "executor submit",
    "executor map",
    "pool apply",
    "pool map",
    "pool imap",
    "pool apply_async",
    "joblib",
    "Parallel",
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_project(tmp_path_factory.mktemp("originals-home"), FILES)


@pytest.fixture(scope="module")
def project_workers(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two prefork processes started in the project folder, allowing ``myproject.*``; yields the broker URL."""
    server = start_redis()
    workers = Workers(
        Settings(broker_url=server.url, allow=("myproject.*", "raise_table.py")), tmp_path_factory.mktemp("logs")
    )
    try:
        workers.start(concurrency=2, cwd=project)
        yield server.url
    finally:
        workers.stop()
        server.stop()


@pytest.fixture(scope="module")
def table(project: Path, project_workers: str) -> dict[str, dict[str, dict[str, Any]]]:
    done = run_in(project, [sys.executable, "raise_table.py"], user_env(DISTLOOP_BROKER_URL=project_workers))
    assert done.returncode == 0, done.stderr  # the producer survived SystemExit and KeyboardInterrupt
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("facade", FACADES)
@pytest.mark.parametrize("case", list(TABLE))
def test_the_caller_catches_what_the_worker_raised(table: dict, case: str, facade: str) -> None:
    got = table[case][facade]
    assert "escaped" not in got, f"{case} via {facade}: `except` did not catch it: {got['escaped']}"
    cls, text, args = TABLE[case]
    assert got["class"] == cls
    assert got["str"] == text
    if args is not None:
        assert got["args"] == args
    # The worker's traceback is the cause, as concurrent.futures shows it.
    assert got["cause"] is not None and "Traceback (most recent call last)" in got["cause"]
    where = 'raise_table.py", line' if case == "ScriptError" else 'myproject/failing.py", line'
    assert where in got["cause"] and ("in fail" in got["cause"] or "in script_fail" in got["cause"])
    assert "The above exception was the direct cause of the following exception" in got["printed"]
    assert not got["is SystemExit or KeyboardInterrupt"]


def test_oserrors_keep_errno_and_file_name(table: dict) -> None:
    for facade in FACADES:
        found = table["FileNotFoundError"][facade]
        assert found["is OSError"] and found["errno"] == errno.ENOENT and found["filename"] == "/nowhere/data.csv"
        denied = table["PermissionError"][facade]
        assert denied["is OSError"] and denied["errno"] == errno.EACCES and denied["filename"] is None


def test_user_classes_keep_their_attributes_and_others_are_not_rebuilt(table: dict) -> None:
    for facade in FACADES:
        assert table["MyError"][facade]["code"] == 42
        assert not table["Hidden"][facade]["is Hidden"]  # otherlib is not on the allow-list


def test_run_loop_errors_name_the_class(project: Path, project_workers: str) -> None:
    done = run_in(
        project,
        [venv_command("distloop"), "run", "myproject.failing:fail_at_3", "--range", "0:6", "--on-error", "collect",
         "--json"],
        user_env(DISTLOOP_BROKER_URL=project_workers),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    (error,) = json.loads(done.stdout)["errors"]
    assert error["type"] == "MyError" and error["message"] == "(3, 'item three')"
    assert (error["module"], error["qualname"], error["args"]) == ("myproject.failing", "MyError", [3, "item three"])
    stopped = run_in(project, [venv_command("distloop"), "run", "myproject.failing:fail_at_3", "--range", "0:6"],
                     user_env(DISTLOOP_BROKER_URL=project_workers))  # fmt: skip
    assert stopped.returncode == 1
    assert stopped.stderr.strip().splitlines()[-1] == "distloop run: error: f(3) raised MyError: (3, 'item three')"


# --- units: what rebuilding refuses ---------------------------------------------------------


def described(exc: BaseException) -> dict[str, Any]:
    try:
        raise exc
    except BaseException as raised:
        return item_error(0, raised)


class LocalError(Exception):
    pass


@pytest.mark.parametrize(
    "module, qualname",
    [("builtins", "print"), ("builtins", "SystemExit"), ("builtins", "KeyboardInterrupt"),
     ("builtins", "GeneratorExit"), ("os", "error"), ("os", "system"), ("builtins", "__build_class__"),
     ("tests.test_originals", "LocalError.__class__"), ("tests.test_originals", "Settings"),
     ("tests.test_originals", "errno"), ("../evil.py", "X"), (None, "ValueError"), ("builtins", 3)],
)  # fmt: skip
def test_only_exception_classes_of_allowed_modules_are_looked_up(module: Any, qualname: Any) -> None:
    assert exception_class(module, qualname, ("tests.*", "os")) is None


def test_a_class_is_looked_up_only_where_it_is_defined_and_allowed() -> None:
    assert exception_class("tests.test_originals", "LocalError", ("tests.*",)) is LocalError
    assert exception_class("tests.test_originals", "LocalError", ("myproject.*",)) is None
    assert exception_class("builtins", "FileNotFoundError", ()) is FileNotFoundError
    # call_errors imports CallFailed from errors: found there, but not defined there.
    assert exception_class("distloop.facades.call_errors", "CallFailed", ("distloop.*",)) is None


def test_rebuilding_runs_the_constructor_with_the_args_only() -> None:
    error = described(LocalError("a", 1))
    exc = rebuild(error, ("tests.*",))
    assert type(exc) is LocalError and exc.args == ("a", 1)
    error["args"] = {"__tuple__": ["not", "a", "list"]}
    assert rebuild(error, ("tests.*",)) is None
    assert rebuild({k: v for k, v in described(LocalError()).items() if k != "args"}, ("tests.*",)) is None


def test_call_error_falls_back_and_keeps_the_traceback() -> None:
    exc = call_error(described(SystemExit(2)), "m:f(1)", "m:f")
    assert type(exc).__name__ == "CallFailed" and not isinstance(exc, SystemExit)
    assert exc.exc_module == "builtins" and exc.exc_qualname == "SystemExit"
    assert "SystemExit: 2" in str(exc.__cause__)
    legacy = call_error({"type": "KeyError", "message": "'k'", "traceback": ""}, "m:f(1)")  # an older worker
    assert isinstance(legacy, KeyError) and str(legacy) == "m:f(1) raised KeyError: 'k'"
