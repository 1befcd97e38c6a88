"""Load check: a job of many one-item chunks through real workers, memory measured.

    python -m tests.load_check [CHUNKS]      (make load; default 100,000 chunks)

Prints the producer's peak RSS, Redis's used memory sampled during the job and
after it, the job's wall time, and how many of the job's keys remain in Redis
once its results are collected (must be 0). Exits 1 if any key remains or the
result is wrong. Not part of `make test`: it takes minutes.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from typing import Any

from distloop import run_job
from distloop.assemble import Assembler
from distloop.tasks.core.settings import Settings
from distloop.worker.celery_worker import start_worker
from distloop.worker.redis_server import start_redis


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(chunks: int = 100_000) -> int:
    redis_server = start_redis()
    settings = Settings(broker_url=redis_server.url)
    client = redis_server.client()
    worker = None
    try:
        with tempfile.NamedTemporaryFile(suffix=".log") as log:
            worker = start_worker(settings, concurrency=2, hostname="load@%h", log_path=log.name)
            base_redis = int(client.info("memory")["used_memory"])
            samples: list[tuple[int, float, int]] = []

            def sample(assembler: Assembler) -> None:
                if assembler.chunks % 5000 == 0:
                    used = int(client.info("memory")["used_memory"])
                    samples.append((assembler.chunks, rss_mb(), used))
                    print(f"  {assembler.chunks:>7} chunks  producer {rss_mb():6.1f} MB  redis {used / 2**20:6.1f} MB",
                          flush=True)  # fmt: skip

            rss_before = rss_mb()
            started = time.perf_counter()
            report = run_job("distloop.tasks.demo:square", range(chunks), chunk_size=1, reduce="sum",
                             backend="celery", settings=settings, progress=sample)  # fmt: skip
            wall = time.perf_counter() - started
            expected = sum(i * i for i in range(chunks))
            left: list[Any] = [  # the note of how the job ended stays; the ledger must not
                k for k in client.scan_iter(match=f"distloop:job:{report.job_id}*") if not k.endswith(b":outcome")
            ]
            info = client.info("memory")
            print(f"chunks {report.chunks}, wall {wall:.1f} s ({report.chunks / wall:.0f} chunks/s)")
            print(f"producer max RSS: {rss_before:.1f} MB before the job, {rss_mb():.1f} MB after")
            peak = max((s[2] for s in samples), default=0)
            print(f"redis used_memory: {base_redis / 2**20:.1f} MB before, peak sampled {peak / 2**20:.1f} MB,"
                  f" {int(info['used_memory']) / 2**20:.1f} MB after (used_memory_peak"
                  f" {int(info['used_memory_peak']) / 2**20:.1f} MB)")  # fmt: skip
            print(f"keys of the finished job left in Redis: {len(left)}; queue length: {client.llen('distloop')}")
            ok = report.result == expected and not left
            print("OK" if ok else f"FAILED (result {'right' if report.result == expected else 'wrong'})")
            return 0 if ok else 1
    finally:
        if worker is not None:
            worker.stop()
        redis_server.stop()


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
