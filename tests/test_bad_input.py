"""Every way a user can get distloop's input wrong: one table.

Each case must give exactly one clear line on stderr, its documented exit code,
no Python traceback, no hang (a deadline), and leave no process running. Add a
row whenever a new way to go wrong is found.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from distloop.worker.redis_server import RedisServer
from tests.conftest import Workers
from tests.procs import alive, run_watched

#: Placeholders filled per test: {broker} (working, allows tests.workloads),
#: {bad_password} (right Redis, wrong password), {dead} (nobody listens),
#: {fifo} (a FIFO nobody reads), {busy_port} (a port something listens on).


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    exit_code: int
    message: str  # a fragment of the one stderr line
    env: tuple[tuple[str, str], ...] = ()  # environment variables for this case
    forks_nothing: bool = False  # refused before any process is started


SQUARE = ("run", "distloop.tasks.demo:square", "--backend", "serial")

CASES = [
    Case("step 0", (*SQUARE, "--range", "0:10:0"), 2, "step must not be zero"),
    Case("non-integer bound", (*SQUARE, "--range", "0:ten"), 2, "bounds and step must be integers"),
    Case("too many range parts", (*SQUARE, "--range", "1:2:3:4"), 2, "expected START:STOP[:STEP]"),
    Case("missing range", ("run", "distloop.tasks.demo:square"), 2, "--range"),
    Case("missing module", ("run", "no_such_module:f", "--range", "3"), 2, "no_such_module"),
    Case("missing function", ("run", "distloop.tasks.demo:nope", "--range", "3"), 2, "nope"),
    Case("target not callable", ("run", "distloop.tasks.core.defaults:QUEUE", "--range", "3"), 2, "not a callable"),
    Case("target without a colon", ("run", "distloop.tasks.demo", "--range", "3"), 2, "distloop.tasks.demo"),
    Case(
        "target outside the allow-list",
        ("run", "distloop.ranges:parse_range", "--range", "3", "--broker", "{broker}"),
        2,
        "allow-list",
    ),
    Case(
        "result JSON cannot carry",
        ("run", "tests.workloads:unpicklable_result", "--range", "2:3", "--broker", "{broker}"),
        1,
        "f(2) raised TypeError: result of f(2): a value of type object cannot travel as JSON",
    ),
    Case(
        "result nested too deep",
        ("run", "tests.workloads:too_deep", "--range", "2:3", "--broker", "{broker}"),
        1,
        "f(2) raised TypeError: result of f(2): a value nested more than 100 containers deep cannot travel",
    ),
    Case(
        "unknown backend",
        ("run", "distloop.tasks.demo:square", "--range", "3", "--backend", "gpu"),
        2,
        "argument --backend: invalid choice: 'gpu' (choose from 'celery', 'process', 'thread', 'serial')",
    ),
    Case(
        "unknown reduce op",
        (*SQUARE, "--range", "3", "--reduce", "avg"),
        2,
        "argument --reduce: invalid choice: 'avg' (choose from 'sum', 'min', 'max', 'count')",
    ),
    Case(
        "unknown on-error mode",
        (*SQUARE, "--range", "3", "--on-error", "ignore"),
        2,
        "argument --on-error: invalid choice: 'ignore' (choose from 'raise', 'collect')",
    ),
    Case(
        "unknown bench backend",
        ("bench", "distloop.tasks.demo:square", "--range", "3", "--backends", "serial,gpu"),
        2,
        "argument --backends: 'serial,gpu': choose from celery, process, thread, serial",
    ),
    Case(
        "unknown worker log level",
        ("worker", "--loglevel", "loud"),
        2,
        "argument --loglevel: invalid choice: 'loud' (choose from 'debug', 'info', 'warning', 'error', 'critical')",
    ),
    Case("chunk size 0", (*SQUARE, "--range", "3", "--chunk-size", "0"), 2, "--chunk-size must be at least 1"),
    Case("chunk size not a number", (*SQUARE, "--range", "3", "--chunk-size", "big"), 2, "--chunk-size"),
    Case(
        "timeout 0",
        ("run", "distloop.tasks.demo:square", "--range", "3", "--timeout", "0", "--broker", "{broker}"),
        2,
        "--timeout must be a positive",
    ),
    Case("timeout on a local backend", (*SQUARE, "--range", "3", "--timeout", "5"), 2, "--timeout needs"),
    Case(
        "timeout beyond the visibility timeout",
        ("run", "distloop.tasks.demo:square", "--range", "3", "--timeout", "4000", "--broker", "{broker}"),
        2,
        "--timeout 4000 s does not fit the broker's visibility timeout (3600 s)",
    ),
    Case(
        "unreachable broker",
        ("run", "distloop.tasks.demo:square", "--range", "3", "--broker", "{dead}"),
        3,
        "cannot reach Redis",
    ),
    Case(
        "wrong broker password",
        ("run", "distloop.tasks.demo:square", "--range", "3", "--broker", "{bad_password}"),
        3,
        "refused the credentials",
    ),
    Case(
        "malformed broker URL",
        ("run", "distloop.tasks.demo:square", "--range", "3", "--broker", "http//nowhere"),
        2,
        "bad broker URL",
    ),
    Case(
        "workers 0",
        ("run", "distloop.tasks.demo:square", "--range", "3", "--workers", "0"),
        2,
        "--workers must be at least 1",
    ),
    Case(
        "output in a missing directory",
        (*SQUARE, "--range", "3", "--output", "/no/such/dir/out.jsonl"),
        2,
        "does not exist",
    ),
    Case("resume an unknown job", ("resume", "feedbeef", "--broker", "{broker}"), 2, "no job 'feedbeef'"),
    Case("resume without a broker", ("resume", "feedbeef"), 2, "resume needs --broker"),
    Case("unknown subcommand", ("fly",), 2, "invalid choice"),
    # Round 2 (issue 13): each of these was a traceback, a hang, or accepted silently.
    Case("negative range start after a space, bad stop", (*SQUARE, "--range", "-5:x"), 2, "'-5:x': bounds and step"),
    Case("empty range", (*SQUARE, "--range", ""), 2, "--range '': bounds and step must be integers"),
    Case("output a kernel file", (*SQUARE, "--range", "3", "--output", "/proc/version"), 2, "is a kernel interface"),
    Case(
        "output a sysfs file",
        (*SQUARE, "--range", "3", "--output", "/sys/kernel/mm/transparent_hugepage/enabled"),
        2,
        "is a kernel interface",
    ),
    Case("output a full device", (*SQUARE, "--range", "3", "--output", "/dev/full"), 2, "No space left on device"),
    Case("output a directory", (*SQUARE, "--range", "3", "--output", "/tmp"), 2, "--output /tmp: is a directory"),
    Case("output empty", (*SQUARE, "--range", "3", "--output", ""), 2, "--output must not be empty"),
    Case(
        "output a FIFO nobody reads", (*SQUARE, "--range", "3", "--output", "{fifo}"), 2, "a FIFO that no process reads"
    ),
    Case(
        "visibility timeout with a unit",
        (*SQUARE, "--range", "3"),
        2,
        "DISTLOOP_VISIBILITY_TIMEOUT='1h': expected a whole number of seconds",
        (("DISTLOOP_VISIBILITY_TIMEOUT", "1h"),),
    ),
    Case(
        "visibility timeout 0",
        (*SQUARE, "--range", "3"),
        2,
        "DISTLOOP_VISIBILITY_TIMEOUT='0': expected",
        (("DISTLOOP_VISIBILITY_TIMEOUT", "0"),),
    ),
    Case(
        "chunk time limit negative",
        (*SQUARE, "--range", "3"),
        2,
        "DISTLOOP_CHUNK_TIME_LIMIT='-3': expected a number of seconds above 0",
        (("DISTLOOP_CHUNK_TIME_LIMIT", "-3"),),
    ),
    Case(
        "chunk time limit with a unit",
        ("worker",),
        2,
        "DISTLOOP_CHUNK_TIME_LIMIT='5m': expected",
        (("DISTLOOP_CHUNK_TIME_LIMIT", "5m"),),
    ),
    Case(
        "TLS insecure not a flag",
        (*SQUARE, "--range", "3"),
        2,
        "DISTLOOP_TLS_INSECURE='maybe': expected 1 or 0",
        (("DISTLOOP_TLS_INSECURE", "maybe"),),
    ),
    Case(
        "task events not a flag",
        ("status",),
        2,
        "DISTLOOP_TASK_EVENTS='2': expected 1 or 0",
        (("DISTLOOP_TASK_EVENTS", "2"),),
    ),
    Case(
        "allow-from-store not a flag",
        (*SQUARE, "--range", "3"),
        2,
        "DISTLOOP_ALLOW_FROM_STORE='please'",
        (("DISTLOOP_ALLOW_FROM_STORE", "please"),),
    ),
    Case(
        "forward output not a flag",
        (*SQUARE, "--range", "3"),
        2,
        "DISTLOOP_FORWARD_OUTPUT='quiet': expected 1 or 0",
        (("DISTLOOP_FORWARD_OUTPUT", "quiet"),),
    ),
    Case(
        "io concurrency not a number",
        (*SQUARE, "--range", "3"),
        2,
        "DISTLOOP_IO_CONCURRENCY='many': expected a whole number from 1 to 1000",
        (("DISTLOOP_IO_CONCURRENCY", "many"),),
    ),
    Case(
        "io concurrency above its cap",
        (*SQUARE, "--range", "3"),
        2,
        "DISTLOOP_IO_CONCURRENCY='100000': expected a whole number from 1 to 1000",
        (("DISTLOOP_IO_CONCURRENCY", "100000"),),
    ),
    Case(
        "pool kind unknown",
        (*SQUARE, "--range", "3"),
        2,
        "DISTLOOP_POOL='forks': expected one of prefork, threads, gevent",
        (("DISTLOOP_POOL", "forks"),),
    ),
    Case(
        "TLS CA file missing",
        (*SQUARE[:2], "--range", "3", "--broker", "rediss://127.0.0.1:1/0"),
        2,
        "DISTLOOP_TLS_CA_FILE='/no/ca.pem': no such file",
        (("DISTLOOP_TLS_CA_FILE", "/no/ca.pem"),),
    ),
    Case(
        "process workers above the cap",
        (*SQUARE[:2], "--range", "3", "--backend", "process", "--workers", "100000"),
        2,
        "--workers 100000 is above this machine's cap",
        forks_nothing=True,
    ),
    Case(
        "thread workers above the cap",
        (*SQUARE[:2], "--range", "3", "--backend", "thread", "--workers", "100000"),
        2,
        "--workers 100000 is above the cap of 1000",  # threads: higher than processes, still capped
        forks_nothing=True,
    ),
    Case(
        "embedded cluster workers above the cap",
        (*SQUARE[:2], "--range", "3", "--workers", "100000"),
        2,
        "--workers 100000 is above this machine's cap",
        forks_nothing=True,
    ),
    Case(
        "remote workers above the hard cap",
        (*SQUARE[:2], "--range", "3", "--broker", "{broker}", "--workers", "5000"),
        2,
        "--workers 5000 is above the cap of 1024",
        forks_nothing=True,
    ),
    Case(
        "bench workers above the cap",
        ("bench", "distloop.tasks.demo:square", "--range", "3", "--backends", "serial,process", "--workers", "100000"),
        2,
        "--workers 100000 is above",
        forks_nothing=True,
    ),
    Case(
        "progress every -1",
        (*SQUARE, "--range", "3", "--progress-every", "-1"),
        2,
        "argument --progress-every: expected a positive number of seconds, not '-1'",
    ),
    Case("progress every 0", (*SQUARE, "--range", "3", "--progress-every", "0"), 2, "expected a positive number"),
    Case(
        "progress every not a number",
        (*SQUARE, "--range", "3", "--progress-every", "often"),
        2,
        "argument --progress-every: expected a number of seconds, not 'often'",
    ),
    Case(
        "worker concurrency 0",
        ("worker", "--concurrency", "0"),
        2,
        "--concurrency must be at least 1, not 0",
        forks_nothing=True,
    ),
    Case(
        "worker concurrency above the cap",
        ("worker", "--concurrency", "100000"),
        2,
        "--concurrency 100000 is above this machine's cap",
        forks_nothing=True,
    ),
    Case("worker allow empty", ("worker", "--allow", ""), 2, "--allow '': expected comma-separated module names"),
    Case("worker hostname empty", ("worker", "--hostname", " "), 2, "--hostname must not be empty"),
    Case("up workers 0", ("up", "--workers", "0"), 2, "--workers must be at least 1, not 0", forks_nothing=True),
    Case(
        "up workers above the cap",
        ("up", "--workers", "100000"),
        2,
        "--workers 100000 is above this machine's cap",
        forks_nothing=True,
    ),
    Case("up Redis port out of range", ("up", "--port", "70000"), 2, "argument --port: expected a port number"),
    Case("up Flower port without Flower", ("up", "--flower-port", "5556"), 2, "--flower-port needs --flower"),
    Case("up Flower port out of range", ("up", "--flower", "--flower-port", "-1"), 2, "argument --flower-port"),
    Case("up allow only commas", ("up", "--allow", ","), 2, "--allow ',': expected comma-separated module names"),
    Case(
        "up Flower port taken",
        ("up", "--flower", "--flower-port", "{busy_port}", "--env-file", "{env_file}"),
        2,
        "is in use: pass --flower-port 0 for any free port",
    ),
    Case(
        "up Redis port taken",
        ("up", "--port", "{busy_port}"),
        2,
        "is in use: pass --port 0 for any free port",
        forks_nothing=True,
    ),
    Case(
        "up bind to an address not of this host",
        ("up", "--bind", "192.0.2.1"),
        2,
        "--bind 192.0.2.1: cannot listen there: Cannot assign requested address",
        forks_nothing=True,
    ),
    Case(
        "flower port taken",
        ("flower", "--broker", "{broker}", "--port", "{busy_port}"),
        2,
        "is in use: pass --port 0 for any free port",
    ),
    Case("up env file empty", ("up", "--env-file", ""), 2, "--env-file must not be empty", forks_nothing=True),
    Case(
        "up env file a directory",
        ("up", "--env-file", "/tmp"),
        2,
        "--env-file /tmp: is a directory",
        forks_nothing=True,
    ),
    Case(
        "up env file a kernel file",
        ("up", "--env-file", "/proc/version"),
        2,
        "--env-file /proc/version: not a regular",
        forks_nothing=True,
    ),
    Case("flower address empty", ("flower", "--address", ""), 2, "--address must not be empty"),
    Case(
        "reduce with an output file",
        (*SQUARE, "--range", "3", "--reduce", "sum", "--output", "{env_file}"),
        2,
        "--reduce gives one value, printed on stdout",
    ),
    Case("flower port negative", ("flower", "--port", "-1"), 2, "argument --port: expected a port number"),
    Case(
        "flower max tasks 0",
        ("flower", "--broker", "{broker}", "--max-tasks", "0"),
        2,
        "--max-tasks must be at least 1, not 0",
    ),
    Case(
        "timeout negative",
        (*SQUARE[:2], "--range", "3", "--timeout", "-1", "--broker", "{broker}"),
        2,
        "--timeout must be a positive number of seconds, not -1",
    ),
    Case(
        "timeout infinite",
        (*SQUARE[:2], "--range", "3", "--timeout", "inf", "--broker", "{broker}"),
        2,
        "--timeout must be a positive number of seconds, not inf",
    ),
    Case("chunk size negative", (*SQUARE, "--range", "3", "--chunk-size", "-3"), 2, "--chunk-size must be at least 1"),
    Case(
        "chunk size beyond any time limit",
        (*SQUARE, "--range", "3", "--chunk-size", "10000000000000000"),
        2,
        "--chunk-size must be at most 1000000000000",
    ),
    Case(
        "bench repeat 0",
        ("bench", "distloop.tasks.demo:square", "--range", "3", "--repeat", "0"),
        2,
        "--repeat must be at least 1, not 0",
        forks_nothing=True,
    ),
    Case(
        "bench repeat huge",
        ("bench", "distloop.tasks.demo:square", "--range", "3", "--repeat", "100000"),
        2,
        "--repeat must be at most 100, not 100000",
        forks_nothing=True,
    ),
    Case("broker empty", (*SQUARE[:2], "--range", "3", "--broker", ""), 2, "--broker must not be empty"),
    Case("status broker empty", ("status", "--broker", ""), 2, "--broker must not be empty"),
]


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input(case: Case, shared_workers: Workers, shared_redis: RedisServer, tmp_path: Path) -> None:
    broker = shared_workers.settings.effective_broker_url
    os.mkfifo(tmp_path / "fifo")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        places = {
            "broker": broker,
            "bad_password": broker.replace(f":{shared_redis.password}@", ":not-the-password@"),
            "dead": "redis://127.0.0.1:1/0",
            "fifo": str(tmp_path / "fifo"),
            "busy_port": str(busy.getsockname()[1]),
            "env_file": str(tmp_path / "up.env"),
        }
        args = [a.format(**places) for a in case.args]
        env = {"DISTLOOP_ALLOW": "tests.workloads", **dict(case.env)}
        code, out, err, started = run_watched(args, env=env, timeout=90)
    # A job that started prints its id first (``distloop: job ID: ...``): the error is the one line after it.
    lines = [line for line in err.strip().splitlines() if not line.startswith("distloop: job ")]
    assert code == case.exit_code, err
    assert len(lines) == 1, err
    assert case.message in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert shared_redis.password not in err  # passwords are never printed
    assert not [p for p in started if alive(p)], "a process it started is still running"
    if case.forks_nothing:
        assert not started, f"refused only after starting processes: {started}"


def test_the_table_holds_at_least_40_ways_to_go_wrong() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES), "every row has its own name"


def test_plain_celery_worker_with_a_bad_variable_says_one_line_and_exits_2() -> None:
    """``celery -A distloop.tasks worker``, as a user starts one without distloop's CLI: no import traceback."""
    import subprocess
    import sys

    env = {**os.environ, "DISTLOOP_IO_CONCURRENCY": "abc"}
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "distloop.tasks", "worker"],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "distloop worker: error: DISTLOOP_IO_CONCURRENCY='abc': expected a whole number from 1 to 1000"
    )
