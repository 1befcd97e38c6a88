"""Scale simulation: sleeping chunks on 1, 2 and 4 worker hosts (network namespaces).

Each item sleeps 50 ms (a stand-in for I/O-bound or remote work, so the hosts
need no CPU of their own); every worker host runs 2 processes. Prints a
Markdown table for the README. Root only::

    sudo .venv/bin/python -m tests.multihost_scale [--items 400] [--chunk 5] [--repeat 3]

``--workload async``: the same 50 ms awaited (``async def``), each process awaiting up to
100 items at once (the default --io-concurrency), 8,000 items, chunks sized automatically::

    sudo .venv/bin/python -m tests.multihost_scale --workload async
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from distloop.tasks.core import defaults
from tests.multihost import MultiHost, scale_run
from tests.netlab import NetLab, can_make_namespaces

ITEM_S = 0.05


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("blocking", "async"), default="blocking")
    parser.add_argument("--items", type=int)
    parser.add_argument("--chunk", default=None, help="items per chunk, or auto")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hosts", default="1,2,4")
    args = parser.parse_args(argv)
    reason = can_make_namespaces()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    awaited = args.workload == "async"
    items = args.items or (8000 if awaited else 400)
    chunk = args.chunk or ("auto" if awaited else "5")
    target = "tests.workloads:async_sleep_square" if awaited else "tests.workloads:sleep_square"
    concurrency = defaults.IO_CONCURRENCY if awaited else 1  # items each process waits on at once
    counts = [int(n) for n in args.hosts.split(",")]
    rows = host_walls(counts, items, chunk, target, args.repeat)
    base = rows[0][1]
    ideal = items * ITEM_S / (2 * concurrency)  # one host, 2 processes, no overhead
    kind = f"asyncio.sleep, {concurrency} awaited per process" if awaited else "sleep"
    print(f"{items} items x {ITEM_S * 1000:.0f} ms {kind}, chunks of {chunk}, 2 processes per host,"
          f" median of {args.repeat}:\n")  # fmt: skip
    print("| worker hosts | processes | wall time | speedup vs 1 host | ideal |")
    print("|---:|---:|---:|---:|---:|")
    for hosts, wall in rows:
        print(f"| {hosts} | {2 * hosts} | {wall:.2f} s | {base / wall:.2f}x | {ideal / hosts:.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
