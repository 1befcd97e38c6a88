"""A user's project folder, built outside the repository, as a user would lay it out.

It holds what real projects hold and what used to collide with distloop: a
``tasks.py`` (Celery's usual layout), a ``worker.py`` and a ``producer.py`` (which
fail loudly if anything imports them), a package ``myproject/``, a script
``jobs.py`` at the top, and ``scripts/job.py`` beside a ``scripts/tasks.py`` that
must never stand in for the top-level ``tasks.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

#: Each target's function and what ``f(i)`` returns, for checking results.
TARGETS = {
    "myproject.jobs:f": lambda i: ["myproject.jobs", i * 2],
    "tasks:f": lambda i: ["tasks", i + 100],
    "jobs.py:f": lambda i: ["jobs.py", i * 2 + 1],
    "scripts/job.py:f": lambda i: ["scripts/job.py", i * 3],
}

#: What workers serving the project must allow (``--allow`` / ``DISTLOOP_ALLOW``).
ALLOW = "myproject.*,tasks,jobs.py,scripts/job.py,run_api.py"

FILES = {
    "myproject/__init__.py": "",
    "myproject/jobs.py": """
        import os
        import time


        def f(i):
            return ["myproject.jobs", i * 2]


        def slow(i):
            time.sleep(0.02)
            return [i, os.getpid()]
    """,
    "tasks.py": """
        def f(i):
            return ["tasks", i + 100]
    """,
    "worker.py": 'raise RuntimeError("the project\'s own worker.py was imported")\n',
    "producer.py": 'raise RuntimeError("the project\'s own producer.py was imported")\n',
    "jobs.py": """
        from myproject.jobs import f as g


        def f(i):
            return ["jobs.py", g(i)[1] + 1]
    """,
    "scripts/job.py": """
        from helpers import triple


        def f(i):
            return ["scripts/job.py", triple(i)]
    """,
    "scripts/helpers.py": """
        def triple(i):
            return 3 * i
    """,
    # Would shadow the project's tasks.py if this folder stayed first on the import path.
    "scripts/tasks.py": 'raise RuntimeError("scripts/tasks.py stood in for the project\'s tasks.py")\n',
    "run_api.py": """
        # The Python API and the facades, from a script in the project folder.
        import json
        import sys

        import joblib

        import distloop
        import myproject.jobs
        import tasks


        def local(i):
            return ["run_api.py", i - 1]


        if __name__ == "__main__":
            backend = sys.argv[1]
            out = {}
            out["run_loop myproject.jobs"] = distloop.run_loop(myproject.jobs.f, range(4), backend=backend)
            out["run_loop tasks"] = distloop.run_loop(tasks.f, range(4), backend=backend)
            out["run_loop script function"] = distloop.run_loop(local, range(4), backend=backend)
            out["run_loop jobs.py:f"] = distloop.run_loop("jobs.py:f", range(4), backend=backend)
            with distloop.CeleryExecutor(backend=backend) as executor:
                out["executor map"] = list(executor.map(tasks.f, range(4)))
                out["executor submit"] = [executor.submit(local, 5).result()]
            with distloop.Pool(backend=backend) as pool:
                out["pool map"] = pool.map(myproject.jobs.f, range(4))
            if backend == "celery":
                distloop.register_joblib()
                with joblib.parallel_config(backend="distloop"):
                    out["joblib"] = joblib.Parallel(n_jobs=-1)(joblib.delayed(local)(i) for i in range(4))
                out["Parallel"] = distloop.Parallel(n_jobs=-1)(distloop.delayed(local)(i) for i in range(4))
            print(json.dumps(out))
    """,
}

#: What ``run_api.py`` prints (with ``joblib`` only on the celery backend); tuples are lists in JSON.
API_EXPECTED = {
    "run_loop myproject.jobs": [["myproject.jobs", i * 2] for i in range(4)],
    "run_loop tasks": [["tasks", i + 100] for i in range(4)],
    "run_loop script function": [["run_api.py", i - 1] for i in range(4)],
    "run_loop jobs.py:f": [["jobs.py", i * 2 + 1] for i in range(4)],
    "executor map": [["tasks", i + 100] for i in range(4)],
    "executor submit": [["run_api.py", 4]],
    "pool map": [["myproject.jobs", i * 2] for i in range(4)],
    "joblib": [["run_api.py", i - 1] for i in range(4)],
    "Parallel": [["run_api.py", i - 1] for i in range(4)],
}


def build_project(root: Path, extra: dict[str, str] | None = None) -> Path:
    """Write the project's files under ``root`` (``extra`` adds or replaces files); return ``root``."""
    for name, text in {**FILES, **(extra or {})}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no DISTLOOP_* left over from the tests, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTLOOP_") and k != "PYTHONPATH"}
    env.update(extra)
    return env


def venv_command(name: str) -> str:
    """A console script installed beside this Python (``distloop``, ``celery``), as on a user's PATH."""
    return str(Path(sys.executable).parent / name)


def run_in(
    project: Path, argv: list[str], env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` from the project folder, as its user would."""
    return subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
