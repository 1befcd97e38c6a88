"""Errors in the user's function, end to end through `distloop run` on real workers."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Workers, run_cli

pytestmark = pytest.mark.integration


def broker_env(workers: Workers) -> dict[str, str]:
    return {"DISTLOOP_BROKER_URL": workers.settings.effective_broker_url}


def test_first_failure_stops_the_job_with_index_type_and_traceback(shared_workers: Workers) -> None:
    done = run_cli("run", "tests.workloads:fail_at_7", "--range", "0:40", "--chunk-size", "3",
                   env=broker_env(shared_workers))  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "distloop run: error: f(7) raised ValueError: bad item 7"
    assert 'in fail_at_7\n    raise ValueError(f"bad item {i}")' in done.stderr  # the remote traceback


def test_on_error_collect_finishes_and_lists_each_failure(shared_workers: Workers) -> None:
    done = run_cli("run", "tests.workloads:fail_at_7", "--range", "0:40", "--chunk-size", "3",
                   "--on-error", "collect", "--json", env=broker_env(shared_workers))  # fmt: skip
    assert done.returncode == 1, done.stderr
    payload = json.loads(done.stdout)
    assert payload["result"] == [None if i == 7 else i for i in range(40)]
    assert [(e["index"], e["type"], e["message"]) for e in payload["errors"]] == [(7, "ValueError", "bad item 7")]
    assert "raise ValueError" in payload["errors"][0]["traceback"]


def test_timeout_turns_a_stuck_item_into_a_reported_failure(shared_workers: Workers) -> None:
    done = run_cli("run", "tests.workloads:stuck_at_3", "--range", "0:10", "--chunk-size", "2",
                   "--timeout", "2", "--on-error", "collect", "--json", env=broker_env(shared_workers))  # fmt: skip
    assert done.returncode == 1, done.stderr
    payload = json.loads(done.stdout)
    assert payload["result"] == [None if i == 3 else i for i in range(10)]
    assert [(e["index"], e["type"]) for e in payload["errors"]] == [(3, "Timeout")]


def test_timeout_kills_an_item_that_ignores_the_soft_limit(shared_workers: Workers) -> None:
    done = run_cli("run", "tests.workloads:deaf_at_3", "--range", "0:10", "--chunk-size", "2",
                   "--timeout", "1", env=broker_env(shared_workers))  # fmt: skip
    assert done.returncode == 1
    assert "hard time limit" in done.stderr and "f(2) raised Timeout" in done.stderr
    # The workers replaced the killed process and still serve.
    again = run_cli("run", "tests.workloads:slow", "--range", "0:8", "--json", env=broker_env(shared_workers))
    assert again.returncode == 0 and json.loads(again.stdout)["result"] == list(range(8))
