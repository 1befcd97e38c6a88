"""What ``f`` prints or logs on a worker shows on the producer's terminal, as ``[host:pid] line``.

End to end from a user's project folder (:mod:`tests.user_project`), on the embedded
cluster and on workers started in that folder; then the bounds, and the switch.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from distloop.tasks import output
from distloop.tasks.core import defaults
from distloop.tasks.core.settings import Settings
from distloop.tasks.store.jobs import JobStore, output_budget_key, output_key
from distloop.worker.redis_server import RedisServer, start_redis
from tests.conftest import Workers
from tests.user_project import build_project, run_in, user_env, venv_command

pytestmark = pytest.mark.integration

FILES = {
    "myproject/chatty.py": """
        import logging
        import sys

        log = logging.getLogger("myproject.chatty")


        def talk(i):
            print(f"print {i}")
            print(f"stderr {i}", file=sys.stderr)
            log.warning("logged %d", i)
            logging.getLogger("celery.app.trace").warning("the worker's own logger, item %d", i)
            return i * 10


        def flood(i):
            for n in range(12000):
                print(f"flood {i} line {n}")
            return i
    """,
    "facade_output.py": """
        # Each facade, and run_loop, once with output forwarded and once without.
        import sys

        import joblib

        import distloop
        from myproject.chatty import talk

        if __name__ == "__main__":
            forward = sys.argv[1] == "on"
            distloop.register_joblib(forward_output=forward)
            with distloop.CeleryExecutor(forward_output=forward) as executor:
                executor.submit(talk, 1).result()
            with distloop.Pool(forward_output=forward) as pool:
                pool.map(talk, [2, 3])
            joblib.Parallel(n_jobs=2, backend="distloop")(joblib.delayed(talk)(i) for i in [4])
            distloop.Parallel(n_jobs=2, forward_output=forward)(distloop.delayed(talk)(i) for i in [6])
            distloop.run_loop(talk, [5], forward_output=forward)
            print("done")
    """,
}

#: A forwarded line: ``[name@host:pid] text``.
LINE = re.compile(r"^\[(?P<node>[^\]:]+@[^\]:]+):(?P<pid>\d+)\] (?P<text>.*)$")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_project(tmp_path_factory.mktemp("output-home"), FILES)


@pytest.fixture(scope="module")
def project_workers(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Workers]]:
    """Two prefork processes started in the project folder (allowing ``myproject.*``)."""
    server = start_redis()
    workers = Workers(Settings(broker_url=server.url, allow=("myproject.*",)), tmp_path_factory.mktemp("logs"))
    try:
        workers.start(concurrency=2, cwd=project)
        yield server, workers
    finally:
        workers.stop()
        server.stop()


def distloop_run(project: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    done = run_in(project, [venv_command("distloop"), "run", *args, "--no-progress"], env or user_env())
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def forwarded(text: str) -> list[tuple[str, int, str]]:
    """The forwarded lines of ``text``: ``(node, pid, line)``."""
    return [(m["node"], int(m["pid"]), m["text"]) for m in map(LINE.match, text.splitlines()) if m]


def assert_each_process_in_order(lines: list[tuple[str, int, str]], items: range) -> None:
    """Every item's three lines, each process's in the order it wrote them, and nothing of the worker's own."""
    by_pid: dict[int, list[str]] = {}
    for _, pid, text in lines:
        by_pid.setdefault(pid, []).append(text)
    assert not [t for _, _, t in lines if "own logger" in t]  # the worker's own logging stays in its log
    seen = []
    for texts in by_pid.values():
        written = [int(t.split()[-1]) for t in texts]
        per_item = [texts[n : n + 3] for n in range(0, len(texts), 3)]
        assert written == sorted(written)
        for block in per_item:
            i = int(block[0].split()[-1])
            assert block == [f"print {i}", f"stderr {i}", f"WARNING:myproject.chatty:logged {i}"]
            seen.append(i)
    assert sorted(seen) == list(items)


def test_embedded_cluster_forwards_prints_stderr_and_logging(project: Path) -> None:
    stdout, stderr = distloop_run(project, "myproject.chatty:talk", "--range", "0:6", "--chunk-size", "1")
    printed, other = forwarded(stdout), forwarded(stderr)
    assert {node for node, _, _ in printed + other} == {node for node, _, _ in printed}
    assert next(iter(printed))[0].startswith("embedded-")
    assert sorted(t for _, _, t in printed) == [f"print {i}" for i in range(6)]  # stdout: what f printed
    assert sorted(t for _, _, t in other if t.startswith("stderr")) == [f"stderr {i}" for i in range(6)]
    assert len([t for _, _, t in other if t.startswith("WARNING:myproject.chatty:logged")]) == 6
    assert [line for line in stdout.splitlines() if not LINE.match(line)] == [str(i * 10) for i in range(6)]


def test_with_json_everything_forwarded_goes_to_stderr_in_order(project: Path) -> None:
    stdout, stderr = distloop_run(project, "myproject.chatty:talk", "--range", "0:8", "--chunk-size", "2", "--json")
    assert json.loads(stdout)["result"] == [i * 10 for i in range(8)]  # stdout holds the JSON object only
    assert_each_process_in_order(forwarded(stderr), range(8))


def test_workers_started_elsewhere_forward_through_redis(
    project: Path, project_workers: tuple[RedisServer, Workers]
) -> None:
    server, workers = project_workers
    env = user_env(DISTLOOP_BROKER_URL=server.url)
    stdout, stderr = distloop_run(project, "myproject.chatty:talk", "--range", "0:10", "--chunk-size", "1",
                                  "--json", env=env)  # fmt: skip
    assert json.loads(stdout)["result"] == [i * 10 for i in range(10)]
    lines = forwarded(stderr)
    assert lines and all(node.startswith(f"w0-{os.getpid()}@") for node, _, _ in lines)  # the worker's name
    assert_each_process_in_order(lines, range(10))
    # The job's output list went with its ledger.
    assert not list(server.client().scan_iter("distloop:job:*:output*"))
    assert "print 3" in workers.logs()  # and the worker's own log still has what f printed


@pytest.mark.parametrize(
    "switch", [("--no-forward-output",), ("--forward-output", "DISTLOOP_FORWARD_OUTPUT=0")], ids=["flag", "env"]
)
def test_forwarding_can_be_switched_off(project: Path, project_workers: tuple[RedisServer, Workers], switch) -> None:
    server, _ = project_workers
    flag, *env = switch
    extra = dict(e.split("=") for e in env)
    args = ["myproject.chatty:talk", "--range", "0:4"] + ([] if env else [flag])
    stdout, stderr = distloop_run(project, *args, env=user_env(DISTLOOP_BROKER_URL=server.url, **extra))
    assert forwarded(stdout + stderr) == []
    assert stdout.split() == ["0", "10", "20", "30"]


def test_a_flood_of_output_is_cut_with_a_marker(project: Path, project_workers: tuple[RedisServer, Workers]) -> None:
    server, _ = project_workers
    env = user_env(DISTLOOP_BROKER_URL=server.url)
    stdout, stderr = distloop_run(project, "myproject.chatty:flood", "--range", "0:2", "--chunk-size", "1", env=env)
    for i in range(2):
        kept = [t for _, _, t in forwarded(stdout) if t.startswith(f"flood {i} ")]
        assert kept == [f"flood {i} line {n}" for n in range(defaults.OUTPUT_LINES_PER_CHUNK)]
    dropped = 12000 - defaults.OUTPUT_LINES_PER_CHUNK
    markers = [t for _, _, t in forwarded(stderr) if t.startswith("distloop:")]
    assert len(markers) == 2 and all(m.startswith(f"distloop: {dropped} more lines (") for m in markers)


def test_facades_forward_unless_told_not_to(project: Path, project_workers: tuple[RedisServer, Workers]) -> None:
    server, _ = project_workers
    env = user_env(DISTLOOP_BROKER_URL=server.url)
    on = run_in(project, [sys.executable, "facade_output.py", "on"], env)
    assert on.returncode == 0, on.stderr
    assert sorted(t for _, _, t in forwarded(on.stdout)) == [f"print {i}" for i in (1, 2, 3, 4, 5, 6)]
    assert sorted(t for _, _, t in forwarded(on.stderr) if t.startswith("stderr")) == [
        f"stderr {i}" for i in (1, 2, 3, 4, 5, 6)
    ]
    off = run_in(project, [sys.executable, "facade_output.py", "off"], env)
    assert off.returncode == 0, off.stderr
    assert forwarded(off.stdout + off.stderr) == [] and off.stdout.strip() == "done"


# --- the bounds, against a real Redis ---------------------------------------------------------


def test_a_jobs_budget_ends_with_one_marker_and_dies_with_the_job(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaults, "OUTPUT_LINES_PER_JOB", 5)
    client = redis_server.client()
    jobs = JobStore(client, 60)
    store = output.OutputStore(client, 60)
    assert store.push("nojob", "w:1", [output.entry("out", "w:1", "x")]) == -1  # no job, nothing kept
    jobs.create("j1", {"target": "m:f"})
    assert store.push("j1", "w:1", [output.entry("out", "w:1", f"a{n}") for n in range(3)]) == 3
    assert store.push("j1", "w:2", [output.entry("out", "w:2", f"b{n}") for n in range(3)]) == 2
    assert store.push("j1", "w:1", [output.entry("out", "w:1", "c")]) == 0
    lines = store.pop("j1")
    assert [t for _, _, t in lines[:5]] == ["a0", "a1", "a2", "b0", "b1"]
    assert len(lines) == 6 and lines[5][2].startswith(
        "distloop: this job's forwarded output reached its limit (5 lines"
    )
    client.rpush(output_key("j1"), "x")
    assert client.ttl(output_budget_key("j1")) > 0
    jobs.delete("j1")
    assert not client.exists(output_key("j1")) and not client.exists(output_budget_key("j1"))


def test_a_chunk_keeps_its_first_lines_and_counts_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "OUTPUT_LINES_PER_CHUNK", 3)
    monkeypatch.setattr(defaults, "OUTPUT_LINE_CHARS", 10)
    pushed: list[str] = []
    chunk = output.ChunkOutput("w@h:7", pushed.extend)
    writer = output.LineWriter("out", None)
    writer.output = chunk
    writer.write("one\ntw")
    writer.write("o\n" + "x" * 15 + "\nfour\nfive")
    writer.close_line()
    chunk.close()
    texts = [json.loads(e)[2] for e in pushed]
    assert texts[:3] == ["one", "two", "xxxxxxxxxx [distloop: 5 more characters of this line dropped]"]
    assert texts[3].startswith("distloop: 2 more lines (8 bytes) of this chunk's output dropped")


@pytest.mark.parametrize("backend", ["serial", "thread", "process"])
def test_local_backends_print_once_and_json_stays_alone_on_stdout(project: Path, backend: str) -> None:
    stdout, stderr = distloop_run(project, "myproject.chatty:talk", "--range", "0:3", "--backend", backend, "--json")
    assert json.loads(stdout)["result"] == [0, 10, 20]
    for i in range(3):  # printed where it ran, once (two processes' writes may interleave mid-line)
        assert stderr.count(f"print {i}") == 1 and stderr.count(f"stderr {i}") == 1
    assert forwarded(stderr) == []


def test_nothing_is_swapped_outside_a_processs_main_thread() -> None:
    import threading

    class NoStore:
        def push(self, *args: object) -> int:
            raise AssertionError("pushed from a thread")

    seen = []

    def chunk() -> None:
        before = sys.stdout
        with output.forwarding(NoStore(), "j", "w@h") as out:  # type: ignore[arg-type]
            seen.append(sys.stdout is before)
            print("stays in the worker's own stream")
        seen.append(out.forwarded)

    thread = threading.Thread(target=chunk)
    thread.start()
    thread.join()
    assert seen == [True, 0]


class ListStore:
    """Collects what would be pushed to Redis: (job, text) per entry."""

    def __init__(self) -> None:
        self.pushed: list[tuple[str, str]] = []

    def push(self, job_id: str, who: str, entries: list[str]) -> int:
        self.pushed += [(job_id, json.loads(e)[2]) for e in entries]
        return len(entries)


def test_a_stream_picked_up_during_one_chunk_forwards_for_the_chunk_running_later(
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = ListStore()
    original = sys.stderr
    with output.forwarding(store, "job1", "w@h"):  # type: ignore[arg-type]
        kept = sys.stderr  # as logging.StreamHandler() at import time keeps it
        print("first", file=kept)
    assert sys.stderr is original
    print("between chunks", file=kept)  # written through to the worker's own stream only
    with output.forwarding(store, "job2", "w@h"):  # type: ignore[arg-type]
        print("second", file=kept)
    assert store.pushed == [("job1", "first"), ("job2", "second")]
    assert capsys.readouterr().err.splitlines() == ["first", "between chunks", "second"]
