"""Screenshot of Flower's tasks page during a distloop job, for the README.

Starts a private redis-server, two prefork workers, Flower (free port, generated
credentials) and ``distloop run`` against them; once chunks have finished while
others still run or wait, headless Chromium (Debian's ``chromium``) captures the
tasks page. Every process is stopped by its pid at the end, on errors and on Ctrl-C.

    .venv/bin/python -m tests.tools.flower_screenshot [--output tests/tools/flower-tasks.png]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from distloop.tasks.core.settings import Settings
from distloop.worker.celery_worker import start_worker
from distloop.worker.flower import FlowerProcess, start_flower
from distloop.worker.processes import ManagedProcess
from distloop.worker.redis_server import start_redis

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "flower-tasks.png"
JOB = ["distloop.tasks.demo:calc_stuff", "--range", "0:8000", "--chunk-size", "100"]


def flower_tasks(flower: FlowerProcess) -> list[dict[str, object]]:
    request = urllib.request.Request(flower.url + "/api/tasks?limit=1000")
    token = base64.b64encode(f"{flower.username}:{flower.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return list(json.loads(response.read()).values())


def wait_mid_job(flower: FlowerProcess, job: ManagedProcess, timeout: float = 120) -> None:
    """Until Flower shows some chunks done while others run or wait in the queue."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and job.alive():
        states = [t["state"] for t in flower_tasks(flower)]
        if states.count("SUCCESS") >= 12 and states.count("PENDING") >= 4:
            return
        time.sleep(0.2)
    raise RuntimeError("the job never reached a mid-way state in Flower")


def screenshot(url: str, output: Path, size: str = "1920,1000") -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium is missing: apt-get update && apt-get install -y chromium")
    profile = tempfile.mkdtemp(prefix="distloop-chromium-")
    argv = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
        f"--user-data-dir={profile}", f"--window-size={size}", "--virtual-time-budget=4000",
        f"--screenshot={output}", url,
    ]  # fmt: skip
    process = ManagedProcess("chromium", argv)
    try:
        process.popen.wait(timeout=120)
    finally:
        process.stop()
        shutil.rmtree(profile, ignore_errors=True)
    if not output.exists():
        raise RuntimeError("chromium wrote no screenshot")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    redis = start_redis()
    started: list[ManagedProcess] = []
    flower: FlowerProcess | None = None
    try:
        settings = Settings(broker_url=redis.url)
        for name in ("alpha", "beta"):
            started.append(start_worker(settings, concurrency=1, hostname=f"{name}@%h", cwd=str(ROOT)))
        flower = start_flower(settings, port=0)
        env = {**os.environ, "DISTLOOP_BROKER_URL": redis.url}
        job = ManagedProcess("distloop run", [sys.executable, "-m", "distloop", "run", *JOB, "--no-progress"],
                             env=env, cwd=str(ROOT))  # fmt: skip
        started.append(job)
        wait_mid_job(flower, job)
        host_port = flower.url.removeprefix("http://")
        screenshot(f"http://{flower.username}:{flower.password}@{host_port}/tasks", args.output)
        print(f"wrote {args.output}")
        return 0
    finally:
        for process in reversed(started):
            process.stop()
        if flower is not None:
            flower.stop()
        redis.stop()


if __name__ == "__main__":
    sys.exit(main())
