"""Jobs you can find again, one producer at a time: the job's line, `distloop status`, the lease."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from distloop.tasks.store.lease import lease_key
from tests.conftest import Workers, run_cli, wait_until
from tests.jobrun import Producer, open_gate

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def cli(workers: Workers, *args: str) -> tuple[int, str, str]:
    env = {"DISTLOOP_BROKER_URL": workers.settings.effective_broker_url, "DISTLOOP_ALLOW": "tests.workloads"}
    done = run_cli(*args, env=env)
    return done.returncode, done.stdout, done.stderr


def test_resume_of_a_live_job_is_refused_then_allowed_once_its_producer_is_killed(
    workers: Workers, tmp_path: Path
) -> None:
    workers.start(concurrency=2, extra_env={"DISTLOOP_TEST_DIR": str(tmp_path)})
    (tmp_path / "gate-at").write_text("40")
    out = tmp_path / "out.jsonl"
    first = Producer(workers, "tests.workloads:gated", "--range", "0:200", "--chunk-size", "4",
                     "--output", str(out), "--no-progress")  # fmt: skip
    try:
        job_id = first.job_id()
        client = workers.settings.redis_client()
        wait_until(lambda: client.hlen(f"distloop:job:{job_id}:running") == 2, 60, "chunks running")
        # A second producer while the first runs: refused in one line, nothing touched.
        code, _, err = cli(workers, "resume", job_id)
        print(f"\nresume while its producer runs: exit {code}: {err.strip()}")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"job {job_id} is still run by its producer" in err and "Traceback" not in err
        assert first.process.poll() is None  # the first producer goes on
        listed = cli(workers, "status")[1]
        assert any(line.split()[:2] == [job_id, "running"] for line in map(str.strip, listed.splitlines())), listed
        first.signal(signal.SIGKILL)
        first.finish(30)
        # Its lease is no longer renewed: once it expires the job can be resumed.
        wait_until(lambda: not client.exists(lease_key(job_id)), 30, "the lease expired")
        listed = cli(workers, "status")[1]
        assert any(line.split()[:2] == [job_id, "no"] for line in map(str.strip, listed.splitlines())), listed
        open_gate(tmp_path)
        code, _, err = cli(workers, "resume", job_id)
        assert code == 0, err
        assert err.splitlines()[0] == f"distloop: resuming job {job_id}"
        assert [json.loads(line) for line in out.read_text().splitlines()] == list(range(200))
        print(f"after SIGKILL and lease expiry: {err.strip().splitlines()[-1]}")
        # Ended: listed from the note it left, with its chunks done out of all.
        listed = cli(workers, "status")[1]
        row = next(line.split() for line in map(str.strip, listed.splitlines()) if line.startswith(job_id))
        assert row[1:3] == ["done", "50/50"], listed
    finally:
        first.stop()
