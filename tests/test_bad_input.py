"""Every way a user can get distloop's input wrong: one table.

Each case must give exactly one clear line on stderr, its documented exit code,
no Python traceback, no hang (a deadline), and leave no process running. Add a
row whenever a new way to go wrong is found.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from distloop.worker.redis_server import RedisServer
from tests.conftest import Workers
from tests.procs import alive, run_watched

#: Placeholders filled per test: {broker} (working, allows tests.workloads),
#: {bad_password} (right Redis, wrong password), {dead} (nobody listens).


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    exit_code: int
    message: str  # a fragment of the one stderr line


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
        ("run", "tests.workloads:as_set", "--range", "2:3", "--broker", "{broker}"),
        1,
        "f(2) raised TypeError: result of f(2): a value of type set cannot travel as JSON",
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
]


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input(case: Case, shared_workers: Workers, shared_redis: RedisServer) -> None:
    broker = shared_workers.settings.effective_broker_url
    urls = {
        "broker": broker,
        "bad_password": broker.replace(f":{shared_redis.password}@", ":not-the-password@"),
        "dead": "redis://127.0.0.1:1/0",
    }
    args = [a.format(**urls) for a in case.args]
    code, out, err, started = run_watched(args, env={"DISTLOOP_ALLOW": "tests.workloads"}, timeout=90)
    # A job that started prints its id first (``distloop: job ID: ...``): the error is the one line after it.
    lines = [line for line in err.strip().splitlines() if not line.startswith("distloop: job ")]
    assert code == case.exit_code, err
    assert len(lines) == 1, err
    assert case.message in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert shared_redis.password not in err  # passwords are never printed
    assert not [p for p in started if alive(p)], "a process it started is still running"
