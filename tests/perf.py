"""``make perf``: distloop's performance targets, measured side by side in one run.

Not part of ``make test``: timings on a shared 2-core machine are noisy, so the
targets are ratios between runs made here, one after the other, on the same
redis-server and the same already-running workers. Prints one line per target:
``name: measured (target) PASS|FAIL``; exits 1 if any target fails.
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from celery import group

from distloop.bench import run_bench
from distloop.tasks.app import make_app
from distloop.tasks.core import defaults
from distloop.tasks.core.settings import Settings
from distloop.worker.celery_worker import start_worker
from distloop.worker.embedded import EmbeddedCluster
from distloop.worker.redis_server import start_redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS: list[tuple[str, str, str, bool]] = []


def record(name: str, measured: str, target: str, ok: bool) -> None:
    RESULTS.append((name, measured, target, ok))
    print(f"{name}: {measured} ({target}) {'PASS' if ok else 'FAIL'}", flush=True)


def speedups(settings: Settings, target: str, items: range, backends: list[str], repeat: int) -> dict[str, float]:
    report = run_bench(target, items, backends, settings=settings, repeat=repeat)
    assert report.identical, f"{target}: backends disagree"
    for run in report.runs.values():
        print(f"  {target} {run.name}: {run.wall_s:.3f} s, {run.speedup:.2f}x, {run.chunks} chunks", flush=True)
    return {name: run.speedup for name, run in report.runs.items()}


def plain_group_seconds(settings: Settings, n: int) -> float:
    """Wall time of ``square`` over 0:n as a plain Celery group of one task per item, then join_native."""
    app = make_app(settings)
    item = app.signature(defaults.ITEM_TASK, queue=defaults.QUEUE)
    started = time.perf_counter()
    result = group(item.clone(args=("distloop.tasks.demo:square", i)) for i in range(n)).apply_async()
    values = result.join_native(timeout=600)
    wall = time.perf_counter() - started
    assert values == [i * i for i in range(n)]
    result.forget()
    app.close()
    return wall


def dispatch_rates(settings: Settings, n: int) -> tuple[float, float]:
    """Chunk tasks per second with --chunk-size 1, and a plain group + join_native."""
    report = run_bench("distloop.tasks.demo:square", range(n), ["celery"], settings=settings, chunk_size=1)
    return n / report.runs["celery"].wall_s, n / plain_group_seconds(settings, n)


def facade_walls(settings: Settings, n: int, repeat: int = 7) -> dict[str, float]:
    """Median wall seconds of ``square`` over n items: multiprocessing.Pool(2).map, run_loop and each facade.

    All are started (and run once) before any clock starts, as multiprocessing's pool
    is; then the repeats run in rounds, each round every one of them once, so that a
    machine slowing down for a while (these are shared) weighs on all alike.
    """
    import contextlib
    import multiprocessing

    import joblib

    from distloop import CeleryExecutor, Parallel, Pool, delayed, register_joblib
    from distloop.api import run_job
    from distloop.backends import get_backend
    from distloop.tasks.demo import square

    expected = [i * i for i in range(n)]
    # The same items in another order: no range, so every item travels (a map over a range
    # sends each chunk's bounds only). Shown beside the targets, not one of them.
    shuffled = list(range(n))
    random.Random(16).shuffle(shuffled)
    expected_shuffled = [i * i for i in shuffled]
    with contextlib.ExitStack() as stack:
        mp = stack.enter_context(multiprocessing.Pool(2))
        engine = get_backend("celery", settings)
        engine.start()
        stack.callback(engine.close)
        pool = stack.enter_context(Pool(settings=settings))
        ex = stack.enter_context(CeleryExecutor(settings=settings))
        register_joblib(executor=ex)
        # The same calls with the import line switched: from distloop import Parallel, delayed.
        parallel = Parallel(n_jobs=-1, settings=settings)
        stack.callback(Parallel.stop_workers)

        def on_distloop_backend() -> list[int]:
            with joblib.parallel_config(backend="distloop"):
                return list(joblib.Parallel(n_jobs=-1)(joblib.delayed(square)(i) for i in range(n)))

        runs: dict[str, Callable[[], list[int]]] = {
            "multiprocessing.Pool(2).map": lambda: mp.map(square, range(n)),
            "run_loop": lambda: run_job(square, range(n), backend=engine).result,
            "Pool.map": lambda: pool.map(square, range(n)),
            "Pool.imap": lambda: list(pool.imap(square, range(n))),
            "CeleryExecutor.map": lambda: list(ex.map(square, range(n))),
            "joblib.Parallel": on_distloop_backend,
            "distloop.Parallel": lambda: parallel(delayed(square)(i) for i in range(n)),
            "multiprocessing.Pool(2).map, shuffled items": lambda: mp.map(square, shuffled),
            "Pool.map, shuffled items": lambda: pool.map(square, shuffled),
            "distloop.Parallel, shuffled items": lambda: parallel(delayed(square)(i) for i in shuffled),
            # The floor under any joblib backend: the caller's own generator of delayed() calls,
            # before a backend sees one; and joblib's default backend (loky), as users run it.
            "joblib delayed() calls, built and run in-process": lambda: [
                f(*a) for f, a, _ in (joblib.delayed(square)(i) for i in range(n))
            ],
            "joblib.Parallel(n_jobs=2), loky": lambda: joblib.Parallel(n_jobs=2)(
                joblib.delayed(square)(i) for i in range(n)
            ),
        }
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for round_ in range(repeat + 1):  # round 0 warms every one up (loky's and Parallel's workers kept)
            for name, run in runs.items():
                started = time.perf_counter()
                got = run()
                wall = time.perf_counter() - started
                assert got == (expected_shuffled if "shuffled" in name else expected), f"{name}: wrong results"
                if round_:
                    seconds[name].append(wall)
    walls = {name: statistics.median(values) for name, values in seconds.items()}
    for name, wall in walls.items():
        print(f"  square 0:{n} {name}: {wall:.3f} s", flush=True)
    return walls


def submit_seconds(settings: Settings, n: int) -> float:
    """Wall time of ``n`` ``CeleryExecutor.submit(square, i)`` calls in a loop and their results."""
    from distloop import CeleryExecutor
    from distloop.tasks.demo import square

    with CeleryExecutor(settings=settings) as ex:
        ex.submit(square, 0).result()  # the executor is ready, as a started group's app is
        started = time.perf_counter()
        futures = [ex.submit(square, i) for i in range(n)]
        values = [f.result() for f in futures]
        wall = time.perf_counter() - started
    assert values == [i * i for i in range(n)]
    return wall


def facade_rows(settings: Settings, plain_rate: float, n: int = 100_000, submits: int = 20_000) -> None:
    """The facades' targets (issue 14): 5x multiprocessing.Pool(2).map, 1.5x run_loop; submit() 3x a group.

    joblib.Parallel is joblib's own, on the registered "distloop" backend; distloop.Parallel is the
    same code with its import line switched (``from distloop import Parallel, delayed``).
    """
    walls = facade_walls(settings, n)
    mp, loop = walls["multiprocessing.Pool(2).map"], walls["run_loop"]
    for name in ("Pool.map", "CeleryExecutor.map", "Pool.imap", "joblib.Parallel", "distloop.Parallel"):
        wall = walls[name]
        record(f"square 0:{n} {name} / multiprocessing.Pool(2).map wall", f"{wall:.3f} / {mp:.3f} s = {wall / mp:.1f}",
               "<= 5", wall / mp <= 5)  # fmt: skip
        record(f"square 0:{n} {name} / run_loop wall", f"{wall:.3f} / {loop:.3f} s = {wall / loop:.2f}", "<= 1.5",
               wall / loop <= 1.5)  # fmt: skip
    mixed = walls["multiprocessing.Pool(2).map, shuffled items"]
    for name in ("Pool.map, shuffled items", "distloop.Parallel, shuffled items"):
        print(f"  {name}: {walls[name]:.3f} s = {walls[name] / mixed:.1f}x multiprocessing.Pool(2).map's "
              f"{mixed:.3f} s, {walls[name] / loop:.2f}x run_loop (every item travels)", flush=True)  # fmt: skip
    floor = walls["joblib delayed() calls, built and run in-process"]
    loky = walls["joblib.Parallel(n_jobs=2), loky"]
    print(f"  joblib: the delayed() calls, built and run in-process, take {floor:.3f} s = {floor / mp:.1f}x "
          f"multiprocessing.Pool(2).map; loky's Parallel {loky:.3f} s = {loky / mp:.1f}x", flush=True)  # fmt: skip
    rate = submits / submit_seconds(settings, submits)
    shown = f"{rate:.0f}/s vs {plain_rate:.0f}/s = {rate / plain_rate:.1f}x"
    record(f"submit() x {submits} vs group+join_native", shown, ">= 3x", rate >= 3 * plain_rate)


def peak_rss_mib(argv: list[str], env: dict[str, str]) -> float:
    """Peak resident memory of a command (its own process), in MiB.

    Read from VmHWM while it runs: rusage's ru_maxrss would carry this (large)
    process's peak across fork and exec.
    """
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError):
            pass
        time.sleep(0.02)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    return peak / 1024


def median_of(n: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(n))


def startup_seconds() -> float:
    cluster = EmbeddedCluster()
    try:
        cluster.start()
        return cluster.startup_s
    finally:
        cluster.stop()


def first_result_seconds(*args: str) -> float:
    """Seconds from starting ``distloop run`` (the process) to its first progress line with a result in it.

    ``--progress-every 0.001`` prints a line after each chunk result; the first one says some
    items are done. No broker configured, no standing cluster: ``run`` starts its own.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTLOOP_")}
    env["DISTLOOP_STANDING"] = "0"
    argv = [sys.executable, "-m", "distloop", "run", "distloop.tasks.demo:square", "--range", "0:2000",
            "--progress", "--progress-every", "0.001", *args]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = None
    assert proc.stderr is not None
    for line in proc.stderr:
        if first is None and re.match(r"distloop: [1-9][0-9]*/2000 items", line):
            first = time.perf_counter() - started
    assert proc.wait() == 0 and first is not None, "distloop run printed no progress line"
    return first


def skewed_items(serial_seconds: float) -> int:
    """The n for which ``skewed`` over 0:n takes about ``serial_seconds`` here (its cost grows with i)."""
    from distloop.tasks.demo import skewed

    probe = 800
    started = time.perf_counter()
    for i in range(probe):
        skewed(i)
    elapsed = time.perf_counter() - started
    return int(probe * (serial_seconds / elapsed) ** 0.5)  # total cost grows as n squared


def array_seconds(settings: Settings) -> tuple[float, float]:
    """Median seconds for a 10**6-element float64 array through the celery backend: as a result, and as
    an argument coming back as the result (``echo``)."""
    import numpy as np

    from distloop import CeleryExecutor
    from tests import workloads

    array = workloads.million_floats(0)

    def timed(f: Callable[..., object], arg: object, expected: object) -> float:
        started = time.perf_counter()
        back = executor.submit(f, arg).result()
        elapsed = time.perf_counter() - started
        assert isinstance(back, np.ndarray) and back.tobytes() == expected.tobytes()  # type: ignore[attr-defined]
        return elapsed

    with CeleryExecutor(settings=settings) as executor:
        executor.submit(workloads.echo, 0).result()  # the executor's job and the workers' imports are ready
        result = median_of(5, lambda: timed(workloads.million_floats, 0, array))
        both = median_of(5, lambda: timed(workloads.echo, array, array))
    return result, both


def best_of(n: int, measure: Callable[[], float]) -> float:
    return min(measure() for _ in range(n))


def thread_pool_seconds(items: int, workers: int = 64) -> float:
    """The seeds' peer for blocking waits: ``ThreadPoolExecutor(64).map`` over the items."""
    from concurrent.futures import ThreadPoolExecutor

    from distloop.tasks.demo import fetch_data_blocking

    with ThreadPoolExecutor(workers) as pool:
        started = time.perf_counter()
        list(pool.map(fetch_data_blocking, range(items)))
        return time.perf_counter() - started


def gather_seconds(items: int, bound: int) -> float:
    """The seeds' peer for async waits: one ``asyncio.gather`` bounded by a semaphore of ``bound``."""
    import asyncio

    from distloop.tasks.demo import fetch_data

    async def main() -> None:
        gate = asyncio.Semaphore(bound)

        async def one(i: int) -> str:
            async with gate:
                return await fetch_data(i)

        await asyncio.gather(*(one(i) for i in range(items)))

    started = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - started


def distloop_seconds(settings: Settings, target: str, items: int, backend: str, repeat: int = 3) -> float:
    report = run_bench(target, range(items), [backend], settings=settings, repeat=repeat)
    run = report.runs[backend]
    print(f"  {target} {backend}: {run.wall_s:.3f} s, {run.chunks} chunks, cpu {run.cpu_util:.0%}", flush=True)
    return run.wall_s


def io_rows(settings: Settings) -> None:
    """Waiting loops (issue 15): distloop against the seeds' threads and asyncio.gather."""
    blocking, awaiting = "distloop.tasks.demo:fetch_data_blocking", "distloop.tasks.demo:fetch_data"
    peer = best_of(3, lambda: thread_pool_seconds(400))
    ours = distloop_seconds(settings, blocking, 400, "thread")
    record("400 x 20 ms sleep: thread / ThreadPoolExecutor(64)", f"{ours:.3f} / {peer:.3f} s = {ours / peer:.2f}",
           "<= 1.3", ours / peer <= 1.3)  # fmt: skip
    threads = settings.replace(pool="threads")
    ours = distloop_seconds(threads, blocking, 400, "celery")
    record("400 x 20 ms sleep: celery --pool threads / ThreadPoolExecutor(64)",
           f"{ours:.3f} / {peer:.3f} s = {ours / peer:.2f}", "<= 1.5", ours / peer <= 1.5)  # fmt: skip
    # The same bound in total: each of the cluster's processes awaits IO_CONCURRENCY items.
    processes = os.cpu_count() or 2
    bound = processes * defaults.IO_CONCURRENCY
    peer = best_of(3, lambda: gather_seconds(2000, bound))
    ours = distloop_seconds(settings, awaiting, 2000, "celery")
    record(f"2000 x 20 ms asyncio.sleep: celery / gather(Semaphore({bound}))",
           f"{ours:.3f} / {peer:.3f} s = {ours / peer:.2f}", "<= 1.5", ours / peer <= 1.5)  # fmt: skip


def multihost_async_row() -> None:
    """8,000 awaited 50 ms items on 1 and 4 network-namespace hosts (root only; else said, not counted)."""
    from tests.multihost_scale import host_walls
    from tests.netlab import can_make_namespaces

    reason = can_make_namespaces()
    if reason:
        print(f"  multi-host async row not measured: {reason}", flush=True)
        return
    (_, one), (_, four) = host_walls([1, 4], 8000, "auto", "tests.workloads:async_sleep_square", 3)
    record("8000 x 50 ms asyncio.sleep: 4 hosts vs 1 host", f"{one:.2f} / {four:.2f} s = {one / four:.2f}x",
           ">= 3.5x", one / four >= 3.5)  # fmt: skip


def array_rows(settings: Settings) -> None:
    result_s, both_s = array_seconds(settings)
    record("1e6 float64 array as a result, celery", f"{result_s:.3f} s", "< 0.1 s", result_s < 0.1)
    record("1e6 float64 array as argument and result, celery", f"{both_s:.3f} s", "< 0.1 s", both_s < 0.1)


def main() -> int:
    redis = start_redis()
    # tests.workloads holds the array workloads (the demo workloads are always allowed).
    settings = Settings(broker_url=redis.url, allow=("tests.workloads",))
    fd, log = tempfile.mkstemp(prefix="distloop-perf-worker-", suffix=".log")
    os.close(fd)
    worker = start_worker(settings, concurrency=os.cpu_count() or 2, hostname="perf@%h", cwd=str(ROOT), log_path=log)
    # A threads-pool worker on the same Redis, for blocking waits (its own queue).
    threads = start_worker(settings.replace(pool="threads"), concurrency=defaults.THREAD_WORKERS,
                           hostname="perf-threads@%h", cwd=str(ROOT), log_path=log)  # fmt: skip
    try:
        if os.environ.get("DISTLOOP_PERF_ONLY") == "io":  # a quick look at these rows alone
            io_rows(settings)
            multihost_async_row()
            return 0
        if os.environ.get("DISTLOOP_PERF_ONLY") == "facades":  # the facades' and the arrays' rows alone
            facade_rows(settings, 20_000 / plain_group_seconds(settings, 20_000))
            array_rows(settings)
            return 0
        io_rows(settings)
        s = speedups(settings, "distloop.tasks.demo:calc_stuff", range(2000), ["process", "celery"], repeat=5)
        record("calc_stuff 0:2000 celery speedup", f"{s['celery']:.2f}x", ">= 1.85x", s["celery"] >= 1.85)
        ratio = s["celery"] / s["process"]
        record("calc_stuff celery / process speedup", f"{ratio:.2f}", ">= 0.97", ratio >= 0.97)

        n = skewed_items(5.0)
        s = speedups(settings, "distloop.tasks.demo:skewed", range(n), ["celery"], repeat=3)
        record(f"skewed 0:{n} celery speedup", f"{s['celery']:.2f}x", ">= 1.8x", s["celery"] >= 1.8)

        report = run_bench(
            "distloop.tasks.demo:square", range(1_000_000), ["process", "celery"], settings=settings, repeat=3
        )
        wall = {n: r.wall_s for n, r in report.runs.items()}
        ratio = wall["celery"] / wall["process"]
        print(f"  square 0:1000000 walls: {json.dumps({k: round(v, 3) for k, v in wall.items()})}")
        record("square 0:1000000 celery / process wall", f"{ratio:.2f}", "<= 2.0", ratio <= 2.0 and report.identical)

        ours, plain = dispatch_rates(settings, 20_000)
        ratio = ours / plain
        record("dispatch chunk-size 1 vs group+join_native", f"{ours:.0f}/s vs {plain:.0f}/s = {ratio:.2f}x", ">= 3x",
               ratio >= 3)  # fmt: skip
        facade_rows(settings, plain)

        env = {**os.environ, "DISTLOOP_BROKER_URL": redis.url}
        cmd = [
            sys.executable,
            "-m",
            "distloop.cli.main",
            "run",
            "distloop.tasks.demo:square",
            "--reduce",
            "sum",
            "--range",
        ]
        array_rows(settings)

        small = peak_rss_mib([*cmd, "0:1000000"], env)
        big = peak_rss_mib([*cmd, "0:100000000"], env)
        record("reduce sum peak RSS 1e8 / 1e6 items", f"{big:.1f} / {small:.1f} MiB = {big / small:.2f}", "<= 1.2",
               big / small <= 1.2)  # fmt: skip
    finally:
        threads.stop()
        worker.stop()
        redis.stop()
        os.unlink(log)
    multihost_async_row()
    up = median_of(3, startup_seconds)
    record("embedded cluster start-up", f"{up:.2f} s", "<= 2.5 s", up <= 2.5)
    local = median_of(3, lambda: first_result_seconds("--backend", "process"))
    first = median_of(3, first_result_seconds)
    record("distloop run to its first result, embedded cluster", f"{first:.2f} s (process pool {local:.2f} s)",
           "<= 1.0 s", first <= 1.0)  # fmt: skip
    failed = [r for r in RESULTS if not r[3]]
    print(f"{len(RESULTS) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
