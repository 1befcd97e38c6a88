"""Where the time goes with one-item chunks: CPU per chunk, by process, distloop against plain Celery.

Not part of ``make test``. Starts a private redis-server and one prefork worker (2
processes), then runs N one-item chunks of ``distloop.tasks.demo:square`` through distloop
(``--chunk-size 1``) and the same N as a plain ``group`` + ``join_native``, and
prints, for each, chunks per second and the milliseconds of CPU per chunk spent
in the worker's main process, its pool children, the producer and Redis (from
``/proc``). With ``--py-spy``, it also samples the worker's main process during
the distloop run (``pip install py-spy``) and prints where its time went::

    .venv/bin/python -m tests.dispatch_profile --chunks 5000 [--py-spy]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from distloop.api import run_job
from distloop.tasks.core.settings import Settings
from distloop.worker.celery_worker import start_worker
from distloop.worker.redis_server import start_redis
from tests.perf import plain_group_seconds

ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(name: str, n: int, pids: dict[int, str], run: Callable[[], float]) -> None:
    before = {pid: cpu_seconds(pid) for pid in pids}
    wall = run()
    spent: dict[str, float] = collections.defaultdict(float)
    for pid, role in pids.items():
        spent[role] += cpu_seconds(pid) - before[pid]
    parts = ", ".join(f"{role} {1000 * s / n:.2f}" for role, s in spent.items())
    print(f"{name}: {n / wall:.0f} chunks/s; CPU ms per chunk: {parts}, total {1000 * sum(spent.values()) / n:.2f}")


def top_frames(raw: Path, limit: int = 20) -> list[tuple[float, str]]:
    """Share of samples in which each function appears, from py-spy's raw (collapsed) output."""
    total, seen = 0, collections.Counter[str]()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for frame in {f.split(" (")[0] for f in stack.split(";")}:
            seen[frame] += int(count)
    skip = ("<module>", "main", "_run_code", "_run_module_as_main")
    rows = [(100 * c / total, f) for f, c in seen.most_common() if f not in skip and 100 * c / total < 80]
    return rows[:limit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=5000)
    parser.add_argument("--py-spy", action="store_true", help="sample the worker's main process (needs py-spy)")
    args = parser.parse_args()
    n = args.chunks
    redis = start_redis()
    settings = Settings(broker_url=redis.url)
    worker = start_worker(settings, concurrency=2, hostname="profile@%h", cwd=str(ROOT))
    spy: subprocess.Popen[bytes] | None = None
    raw = Path(tempfile.mkdtemp(prefix="distloop-profile-")) / "worker-main.txt"
    try:
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        pids = {worker.pid: "worker main", redis.process.pid: "redis", os.getpid(): "producer"}
        pids.update({int(c): "pool children" for c in children})
        if args.py_spy:
            binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            argv = [binary, "record", "-p", str(worker.pid), "-o", str(raw), "-f", "raw", "-r", "100", "--nonblocking"]
            spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)

        def ours() -> float:
            return run_job("distloop.tasks.demo:square", range(n), chunk_size=1, settings=settings).wall_s

        measure("distloop --chunk-size 1", n, pids, ours)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
            spy = None

        measure("plain group + join_native", n, pids, lambda: plain_group_seconds(settings, n))
        if raw.exists():
            print("worker main process, share of py-spy samples (distloop run):")
            for share, frame in top_frames(raw):
                print(f"  {share:5.1f}%  {frame}")
    finally:
        if spy is not None:
            spy.kill()
            spy.wait()
        worker.stop()
        redis.stop()
        shutil.rmtree(raw.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
