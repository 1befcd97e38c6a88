"""Producer work per call of ``Pool.map``: CPU per call (all threads) and a cProfile of the calling thread.

Not part of ``make test``. Starts a private redis-server and one prefork worker (2
processes), then times ``multiprocessing.Pool(2).map``, ``run_job`` on a started backend
and ``distloop.Pool.map`` over the same ``square`` items, and profiles one more
``Pool.map``::

    .venv/bin/python -m tests.facade_profile [--items 100000] [--top 15]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing
import pstats
import time

from distloop import Pool
from distloop.api import run_job
from distloop.backends import get_backend
from distloop.tasks.core.settings import Settings
from distloop.tasks.demo import square
from distloop.worker.celery_worker import start_worker
from distloop.worker.redis_server import start_redis
from tests.perf import ROOT


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    n = args.items
    redis = start_redis()
    settings = Settings(broker_url=redis.url)
    worker = start_worker(settings, concurrency=2, hostname="facade-profile@%h", cwd=str(ROOT))
    try:
        with multiprocessing.Pool(2) as mp:
            started = time.perf_counter()
            mp.map(square, range(n))
            mp_wall = time.perf_counter() - started
        with get_backend("celery", settings) as engine:
            started = time.perf_counter()
            run_job(square, range(n), backend=engine)
            loop_wall = time.perf_counter() - started
        with Pool(2, settings=settings) as pool:
            pool.map(square, range(100))  # the workers have timed square, as in a running program
            cpu, started = time.process_time(), time.perf_counter()
            pool.map(square, range(n))
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            profile = cProfile.Profile()
            profile.enable()
            pool.map(square, range(n))
            profile.disable()
        print(f"multiprocessing.Pool(2).map {mp_wall:.3f} s, run_job {loop_wall:.3f} s, Pool.map {wall:.3f} s "
              f"({wall / mp_wall:.1f}x, {wall / loop_wall:.2f}x run_job)")  # fmt: skip
        print(f"producer CPU, all threads: {cpu:.3f} s = {1e6 * cpu / n:.2f} us per call")
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats("tottime").print_stats(args.top)
        total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
        print(out.getvalue())
        print(f"calling thread under cProfile: {total:.3f} s = {1e6 * total / n:.2f} us per call")
    finally:
        worker.stop()
        redis.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
