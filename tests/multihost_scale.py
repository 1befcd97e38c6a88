"""Scale and stragglers across simulated worker hosts (network namespaces), end to end.

Two tables for the README, in one run (root only)::

    sudo .venv/bin/python -m tests.multihost_scale [--hosts 1,2,4,8] [--only scale|stragglers]

**Scale**: for each host count N, N fresh worker hosts (2 processes each) are started
at once, then ``distloop run`` (a new process: interpreter, imports, connecting,
probing, the job, exit) runs a sleep-bound loop (50 ms per item, needing no CPU: the
distribution itself) and a CPU-bound one (``calc_stuff``, about 2.6 ms of CPU per
item), with automatic chunk sizes. The ideal is the hosts' summed capacity with no
overhead: serial time / (2 N). On a 2-core machine the CPU-bound rows cannot go past
about 2x whatever N is.

**Stragglers**: three hosts, one made half as fast (its items sleep 100 ms, not 50:
``DISTLOOP_TEST_SLOWDOWN=2`` on its worker), the same job with the tail handling off
(``DISTLOOP_STRAGGLERS=0``, what the producer did before) and on, alternately. The
ideal is items / summed capacity (40 + 40 + 20 items per second).

``--workload async``: instead, the same 50 ms awaited (``async def``), each process
awaiting up to 100 items at once (the default --io-concurrency), 8,000 items, chunks
sized automatically, on worker hosts added one by one::

    sudo .venv/bin/python -m tests.multihost_scale --workload async [--hosts 1,2,4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from distloop.tasks.core import defaults
from distloop.tasks.core.settings import ENV_STRAGGLERS
from distloop.tasks.store.jobs import JobStore
from tests import workloads
from tests.multihost import MultiHost, scale_run
from tests.netlab import NetLab, can_make_namespaces

ITEM_S = 0.05  # tests.workloads:sleep_square
PROCESSES = 2  # per worker host


def timed_run(
    cluster: MultiHost, target: str, items: int, env: dict[str, str] | None = None, chunk: str = "auto"
) -> dict[str, Any]:
    """``distloop run TARGET --range 0:items`` as a new process; its report, with ``_outer_s`` (exec to exit)."""
    started = time.perf_counter()
    report = cluster.run(f"tests.workloads:{target}", "--range", f"0:{items}", "--chunk-size", chunk, env=env)
    report["_outer_s"] = time.perf_counter() - started
    assert report["result"] == [i * i for i in range(items)], f"{target}: wrong results"
    assert sum(h["items"] for h in report["hosts"].values()) == items, "an item counted twice or never"
    return report


def serial_cpu_s(items: int) -> float:
    """The CPU-bound loop run serially here (the baseline its ideal divides)."""
    started = time.perf_counter()
    for i in range(items):
        workloads.cpu_square(i)
    return time.perf_counter() - started


def scale(cluster: MultiHost, counts: list[int], sleep_items: int, cpu_items: int) -> list[str]:
    serial_cpu = serial_cpu_s(cpu_items)
    rows = []
    for hosts in counts:
        started = time.perf_counter()
        cluster.start_workers(hosts, PROCESSES)
        up = time.perf_counter() - started
        for kind, target, items, serial in (
            ("sleep", "sleep_square", sleep_items, sleep_items * ITEM_S),
            ("CPU", "cpu_square", cpu_items, serial_cpu),
        ):
            report = timed_run(cluster, target, items)
            ideal = serial / (PROCESSES * hosts)
            rows.append((kind, hosts, up, report["wall_s"], report["_outer_s"], ideal, len(report["hosts"])))
            print(f"{kind} {hosts} host(s): up {up:.2f} s, job {report['wall_s']:.2f} s,"
                  f" end to end {report['_outer_s']:.2f} s, ideal {ideal:.2f} s", file=sys.stderr)  # fmt: skip
        cluster.stop_workers()
    lines = [
        f"Sleep-bound: {sleep_items} items x 50 ms; CPU-bound: {cpu_items} x calc_stuff"
        f" ({serial_cpu:.2f} s serial here); automatic chunk sizes; {PROCESSES} processes per host.",
        "",
        "| workload | worker hosts | processes | hosts up | job | `distloop run`, end to end | ideal |"
        " efficiency (end to end) | with hosts' start-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ("sleep", "CPU"):
        for k, hosts, up, wall, outer, ideal, used in rows:
            if k != kind:
                continue
            note = "" if used == hosts else f" ({used} used)"
            lines.append(
                f"| {kind}-bound | {hosts}{note} | {PROCESSES * hosts} | {up:.2f} s | {wall:.2f} s | {outer:.2f} s"
                f" | {ideal:.2f} s | {ideal / outer:.0%} | {ideal / (outer + up):.0%} |"
            )
    return lines


def sent_twice(cluster: MultiHost, job_id: str) -> list[int]:
    """The chunks the producer sent again (the job's outcome note in the ledger)."""
    assert cluster.redis is not None
    client = cluster.redis.client()
    try:
        outcome = JobStore(client, 3600).outcome(job_id) or {}
    finally:
        client.close()
    return list(outcome.get("copies", []))


def stragglers(cluster: MultiHost, items: int, repeat: int, chunks: list[str]) -> list[str]:
    cluster.start_workers(2, PROCESSES)
    cluster.start_workers(1, PROCESSES, env={workloads.ENV_SLOWDOWN: "2"})
    capacity = 2 * PROCESSES / ITEM_S + PROCESSES / (2 * ITEM_S)  # items per second, summed
    ideal = items / capacity
    walls: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(repeat):
        for chunk in chunks:
            for label, value in (("off (before)", "0"), ("on (after)", "1")):
                report = timed_run(cluster, "sleep_square_host", items, env={ENV_STRAGGLERS: value}, chunk=chunk)
                walls.setdefault((chunk, label), []).append((report["wall_s"], report["_outer_s"]))
                copies = sent_twice(cluster, report["job_id"])
                print(f"stragglers {label}, chunks {chunk}: job {report['wall_s']:.2f} s,"
                      f" end to end {report['_outer_s']:.2f} s, chunks sent twice {copies},"
                      f" hosts {report['hosts']}", file=sys.stderr)  # fmt: skip
    cluster.stop_workers()
    lines = [
        f"{items} items x 50 ms sleep on 3 hosts x {PROCESSES} processes, one host at half speed (100 ms);"
        f" ideal {ideal:.2f} s ({capacity:.0f} items/s summed); median of {repeat}:",
        "",
        "| chunk size | straggler handling | job | ratio to ideal | `distloop run`, end to end | ratio to ideal |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (chunk, label), runs in walls.items():
        wall = statistics.median(w for w, _ in runs)
        outer = statistics.median(o for _, o in runs)
        lines.append(
            f"| {chunk} | {label} | {wall:.2f} s | {wall / ideal:.2f}x | {outer:.2f} s | {outer / ideal:.2f}x |"
        )
    return lines


def host_walls(counts: list[int], items: int, chunk: int | str, target: str, repeat: int) -> list[tuple[int, float]]:
    """Median wall time of the job on each number of worker hosts in ``counts`` (2 processes each)."""
    cluster = MultiHost(NetLab().open(), Path(tempfile.mkdtemp(prefix="distloop-scale-")))
    rows = []
    try:
        cluster.start_redis()
        for hosts in counts:
            while len(cluster.workers) < hosts:
                cluster.start_worker(concurrency=2)
            walls = [scale_run(cluster, items, chunk, target)["wall_s"] for _ in range(repeat)]
            rows.append((hosts, statistics.median(walls)))
            print(f"{hosts} host(s): {', '.join(f'{w:.2f}' for w in walls)} s", file=sys.stderr)
    finally:
        cluster.close()
    return rows


def awaited_table(counts: list[int], items: int | None, chunk: str | None, repeat: int) -> int:
    """The ``--workload async`` table: awaited sleeps on 1, 2, 4 hosts."""
    items = items or 8000
    chunk = chunk or "auto"
    concurrency = defaults.IO_CONCURRENCY  # items each process waits on at once
    rows = host_walls(counts, items, chunk, "tests.workloads:async_sleep_square", repeat)
    base = rows[0][1]
    ideal = items * ITEM_S / (2 * concurrency)  # one host, 2 processes, no overhead
    print(f"{items} items x {ITEM_S * 1000:.0f} ms asyncio.sleep, {concurrency} awaited per process,"
          f" chunks of {chunk}, 2 processes per host, median of {repeat}:\n")  # fmt: skip
    print("| worker hosts | processes | wall time | speedup vs 1 host | ideal |")
    print("|---:|---:|---:|---:|---:|")
    for hosts, wall in rows:
        print(f"| {hosts} | {2 * hosts} | {wall:.2f} s | {base / wall:.2f}x | {ideal / hosts:.2f} s |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,2,4,8")
    parser.add_argument("--sleep-items", type=int, default=400)
    parser.add_argument("--cpu-items", type=int, default=4000)
    parser.add_argument("--straggler-items", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=3, help="straggler runs per setting")
    parser.add_argument("--straggler-chunks", default="auto,25", help="chunk sizes for the straggler runs")
    parser.add_argument("--only", choices=("scale", "stragglers"))
    parser.add_argument("--workload", choices=("blocking", "async"), default="blocking")
    parser.add_argument("--items", type=int, help="--workload async: items (default 8,000)")
    parser.add_argument("--chunk", default=None, help="--workload async: items per chunk, or auto")
    args = parser.parse_args(argv)
    reason = can_make_namespaces()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    counts = [int(n) for n in args.hosts.split(",")]
    if args.workload == "async":
        return awaited_table(counts, args.items, args.chunk, args.repeat)
    cluster = MultiHost(NetLab().open(), Path(tempfile.mkdtemp(prefix="distloop-scale-")))
    tables = []
    try:
        cluster.start_redis()
        if args.only != "stragglers":
            tables.append(scale(cluster, counts, args.sleep_items, args.cpu_items))
        if args.only != "scale":
            tables.append(stragglers(cluster, args.straggler_items, args.repeat, args.straggler_chunks.split(",")))
    finally:
        cluster.close()
    print(time.strftime("Measured %Y-%m-%d %H:%M UTC", time.gmtime()))
    for table in tables:
        print("\n" + "\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
