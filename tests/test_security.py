"""The wire is locked down: JSON only, functions by allowed name only, no password printed.

An attacker who can write to Redis, against a real worker started with ``--allow``:

Each row sends what an attacker would: a raw Celery task message naming distloop's
chunk task (``app.send_task``, no CLI in between), against one prefork worker with
one pool process, started in a user's project folder with ``DISTLOOP_ALLOW=fjobs,allowed/*``.
Every row asserts that nothing ran (no marker file, the victim folder still there,
the refused script never imported, the allowed modules' globals intact: legitimate
jobs after it still give the right results), that the worker logged one line naming
the target and the reason, and that the refusal reached the producer (a
``not_allowed`` result, which the producer raises as ``TargetNotAllowed``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from distloop.assemble import fatal_error
from distloop.tasks.app import make_app
from distloop.tasks.core import defaults
from distloop.tasks.core.errors import TargetNotAllowed
from distloop.tasks.store.jobs import JobStore
from distloop.worker.redis_server import RedisServer
from tests.conftest import Workers, run_cli, wait_until
from tests.user_project import build_project

pytestmark = pytest.mark.integration

ALLOW = ("fjobs", "allowed/*")

#: The allowed module: its own function ``f`` uses a global, and it imports (so re-exports)
#: what an attacker would like to reach.
FJOBS = """
    import functools
    import os
    import subprocess
    from builtins import eval, getattr
    from pathlib import Path
    from shutil import rmtree

    FACTOR = 2


    def f(i):
        return ["fjobs", i * FACTOR]


    class SomeClass:
        def __init__(self, path):
            Path(path).touch()

        @staticmethod
        def touch(path):
            Path(path).touch()


    class Runner:
        def __call__(self, path):
            Path(path).touch()


    runner = Runner()
    shell = functools.partial(os.system)
"""

EVIL = """
    import os
    from pathlib import Path

    Path(os.environ["ATTACK_DIR"], "evil-imported").touch()


    def f(path):
        Path(path).touch()
"""

#: Placeholders in a row's target and arguments: {marker} (a file no row may create),
#: {victim} (a folder no row may delete), {outside} (a folder outside the project).


class OpensAFile:
    """Unpickling this creates a file: the side effect that must never happen on a worker."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


@dataclass(frozen=True)
class Attack:
    target: str
    args: list[Any] = field(default_factory=lambda: ["{marker}"])
    task: str = "chunk"  # or "item" (the one-item task), or "pickle" (a pickled message)


ATTACKS = {
    "pickle message": Attack("fjobs:f", task="pickle"),
    "os:system": Attack("os:system", ["touch {marker}"]),
    "builtins:eval": Attack("builtins:eval", ["open({marker!r}, 'w')"]),
    "mod:os.system": Attack("fjobs:os.system", ["touch {marker}"]),
    "mod:subprocess.getoutput": Attack("fjobs:subprocess.getoutput", ["touch {marker}"]),
    "mod:f.__globals__.clear": Attack("fjobs:f.__globals__.clear", []),
    "demo:calc_stuff.__globals__.clear": Attack("distloop.tasks.demo:calc_stuff.__globals__.clear", []),
    "mod:__builtins__": Attack("fjobs:__builtins__", ["x"]),
    "mod:__dict__": Attack("fjobs:__dict__", ["x"]),
    "mod:getattr (re-exported builtin)": Attack("fjobs:getattr", ["{marker}", "x"]),
    "mod:eval (re-exported builtin)": Attack("fjobs:eval", ["open({marker!r}, 'w')"]),
    "mod:os (re-exported module)": Attack("fjobs:os", ["x"]),
    "mod:Path (re-exported class)": Attack("fjobs:Path", ["{marker}"]),
    "mod:SomeClass (its own class)": Attack("fjobs:SomeClass", ["{marker}"]),
    "mod:SomeClass.touch (staticmethod)": Attack("fjobs:SomeClass.touch", ["{marker}"]),
    "mod:runner (callable instance)": Attack("fjobs:runner", ["{marker}"]),
    "mod:shell (functools.partial)": Attack("fjobs:shell", ["touch {marker}"]),
    "mod:rmtree (imported from shutil)": Attack("fjobs:rmtree", ["{victim}"]),
    "item task: mod:os.system": Attack("fjobs:os.system", ["touch {marker}"], task="item"),
    "module not on the allow-list": Attack("evil:f"),
    "script not on the allow-list": Attack("evil.py:f"),
    "script path allowed/../evil.py": Attack("allowed/../evil.py:f"),
    "script path ./allowed/../evil.py": Attack("./allowed/../evil.py:f"),
    "script symlink allowed/link.py -> ../evil.py": Attack("allowed/link.py:f"),
    "script path allowed/../../outside/evil.py": Attack("allowed/../../outside/evil.py:f"),
    "absolute script path outside the project": Attack("{outside}/evil.py:f"),
    "symlinked folder allowed/out -> outside": Attack("allowed/out/evil.py:f"),
}


@dataclass
class Target:
    """The worker under attack and what the tests need to reach it."""

    app: Celery
    store: JobStore
    workers: Workers
    project: Path
    places: dict[str, str]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's project (read only to the attacks), and a folder outside it."""
    home = tmp_path_factory.mktemp("attacked")
    project = build_project(
        home / "project",
        {"fjobs.py": FJOBS, "evil.py": EVIL, "allowed/job.py": "def f(i):\n    return ['allowed/job.py', i]\n"},
    )
    outside = build_project(home / "outside", {"evil.py": EVIL})
    (project / "allowed" / "link.py").symlink_to(project / "evil.py")
    (project / "allowed" / "out").symlink_to(outside)
    return project


@pytest.fixture
def target(project: Path, workers: Workers, redis_server: RedisServer, tmp_path: Path) -> Iterator[Target]:
    """A fresh worker for each attack (so one that got through cannot hide or cause another's outcome)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").touch()
    env = {"ATTACK_DIR": str(tmp_path), "DISTLOOP_ALLOW": ",".join(ALLOW)}
    workers.start(concurrency=1, cwd=project, extra_env=env)
    app = make_app(workers.settings)
    places = {"marker": str(tmp_path / "marker"), "victim": str(victim), "outside": str(project.parent / "outside")}
    yield Target(app, JobStore(redis_server.client(), 600), workers, project, places)
    app.close()


def send_chunk(target: Target, name: str, calls: list[Any], task: str = "chunk") -> dict[str, Any]:
    """Send one chunk of explicit calls as a raw task message; return the result the worker stored."""
    job_id = "attack-" + uuid.uuid4().hex[:8]
    target.store.create(job_id, {"target": name})
    spec = {"index": 0, "calls": [[args, {}] for args in calls]}
    target.app.send_task(defaults.CHUNK_TASK, args=(job_id, name, spec, None, "raise"), queue=defaults.QUEUE)
    return wait_until(lambda: target.store.results(job_id, [0])[0], 60, f"a result for {name}")


def nothing_ran(target: Target) -> None:
    """No marker, the victim intact, the evil script never imported, and the allowed code still right."""
    home = Path(target.places["victim"]).parent
    assert not Path(target.places["marker"]).exists(), "the attack ran: the marker file exists"
    assert (Path(target.places["victim"]) / "keep").exists(), "the attack ran: the victim folder is gone"
    assert not (home / "evil-imported").exists(), "a refused script was imported"
    for name, args, expected in [
        ("fjobs:f", [3], ["fjobs", 6]),  # fjobs' globals intact (FACTOR)
        ("distloop.tasks.demo:calc_stuff", [2], {"__tuple__": [4, 5988.181599743, 4000]}),  # demo's too
        ("allowed/job.py:f", [5], ["allowed/job.py", 5]),
    ]:
        result = send_chunk(target, name, [args])
        assert result.get("values") == [expected], f"{name} after the attack: {result}"


@pytest.mark.parametrize("row", list(ATTACKS))
def test_attack_refused(target: Target, row: str) -> None:
    attack = ATTACKS[row]
    name = attack.target.format(**target.places)
    args = [a.format(**target.places) if isinstance(a, str) else a for a in attack.args]
    log_before = len(target.workers.logs())
    if attack.task == "pickle":
        attacker = Celery("attacker", broker=target.workers.settings.effective_broker_url, set_as_current=False)
        attacker.conf.update(accept_content=["pickle", "json"], task_serializer="pickle")
        attacker.send_task(defaults.CHUNK_TASK, args=(OpensAFile(target.places["marker"]),), queue=defaults.QUEUE,
                           serializer="pickle")  # fmt: skip
        attacker.close()
        wait_until(lambda: "Refusing to deserialize untrusted content of type pickle"
                   in target.workers.logs()[log_before:], 30, "the pickle refused")  # fmt: skip
        refusal: Any = None  # a pickled message has no job: the worker drops it, nothing comes back
    elif attack.task == "item":
        sent = target.app.send_task(defaults.ITEM_TASK, args=(name, *args), queue=defaults.QUEUE)
        try:
            refusal = sent.get(timeout=60, propagate=False)
        finally:
            sent.forget()
    else:
        refusal = send_chunk(target, name, [args]).get("fatal")
    time.sleep(0.2)  # a command the attack might have started in the background
    nothing_ran(target)
    if attack.task == "pickle":
        return
    if attack.task == "item":  # the one-item task's refusal comes back as its exception
        assert type(refusal).__name__ == "TargetNotAllowed" and "refused" in str(refusal), repr(refusal)
        logged = "refused item task: "
    else:
        assert refusal is not None and refusal["kind"] == "not_allowed", refusal
        assert isinstance(fatal_error(refusal), TargetNotAllowed)
        assert name in refusal["message"], refusal
        logged = "refused chunk 0 of job attack-"
    lines = [x for x in target.workers.logs()[log_before:].splitlines() if logged in x]
    assert len(lines) == 1 and name in lines[0] and ("refused:" in lines[0] or "allow-list" in lines[0]), lines
    assert "Traceback" not in target.workers.logs()[log_before:], target.workers.logs()[log_before:]


def test_the_worker_accepts_json_only(target: Target) -> None:
    """What the pickle row relies on, read from the running worker itself."""
    replies = target.app.control.inspect(timeout=5).conf() or {}
    assert replies, "the worker did not answer"
    for conf in replies.values():
        assert conf["accept_content"] == ["json"], conf["accept_content"]
        assert conf["task_serializer"] == "json" and conf["result_serializer"] == "json"
        assert not conf.get("worker_pool_restarts"), "pool_restart could import modules on request"


def test_legitimate_targets_still_run(target: Target) -> None:
    """The control: what the allow-list names runs, modules and scripts alike."""
    assert send_chunk(target, "fjobs:f", [[1], [2]])["values"] == [["fjobs", 2], ["fjobs", 4]]
    assert os.path.islink(target.project / "allowed" / "link.py")
    nothing_ran(target)


def test_passwords_are_never_printed(shared_workers: Workers, shared_redis: RedisServer) -> None:
    broker = shared_workers.settings.effective_broker_url
    assert shared_redis.password and shared_redis.password in broker
    done = run_cli("run", "distloop.tasks.demo:square", "--range", "0:20", "--broker", broker, "--json", "--progress")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == [i * i for i in range(20)]
    failed = run_cli(
        "run", "distloop.tasks.demo:square", "--range", "3", "--broker", broker.replace("/0", "/99999"), "--json"
    )
    assert failed.returncode != 0
    for text in (done.stdout, done.stderr, failed.stdout, failed.stderr, shared_workers.logs()):
        assert shared_redis.password not in text
