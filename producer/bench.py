"""Side-by-side benchmark: the same loop on every backend, timed after start-up, in rounds."""

from __future__ import annotations

import importlib.util
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from distloop.api import JobReport, run_job
from distloop.backends import get_backend
from distloop.backends.base import Backend
from distloop.ranges import range_length
from distloop.tasks.core.errors import UsageError
from distloop.tasks.core.settings import Settings


@dataclass
class BackendRun:
    """One backend's figures: median wall time over the repeats, and derived ratios."""

    name: str
    workers: int
    wall_s: float
    walls: list[float]
    chunks: int
    compute_s: float
    startup_s: float
    speedup: float = 0.0
    efficiency: float = 0.0
    overhead: float = 0.0  # share of the workers' wall time not spent in f
    cpu_s: float = 0.0  # CPU seconds f's threads used (the workers' own measure, per chunk)
    cores: int = 1
    cpu_util: float = 0.0  # cpu_s / (wall_s x cores): low for waiting work, near 1 for computing on every core
    result: Any = field(default=None, repr=False)

    def figures(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("result")
        return data


@dataclass
class BenchReport:
    target: str
    items: int
    runs: dict[str, BackendRun]
    identical: bool

    @property
    def startup_s(self) -> float:
        return max((r.startup_s for r in self.runs.values()), default=0.0)


def summarize(name: str, engine: Backend, reports: list[JobReport], result: Any) -> BackendRun:
    """One backend's figures from its timed runs: the median run, and its overhead."""
    walls = [r.wall_s for r in reports]
    median = sorted(reports, key=lambda r: r.wall_s)[len(reports) // 2]
    overhead = 1.0 - median.compute_s / (median.wall_s * engine.workers) if median.wall_s > 0 else 0.0
    cores = engine.cores
    util = median.cpu_s / (median.wall_s * cores) if median.wall_s > 0 else 0.0
    return BackendRun(
        name, engine.workers, statistics.median(walls), walls, median.chunks, median.compute_s,
        engine.startup_s, overhead=max(0.0, overhead), cpu_s=median.cpu_s, cores=cores, cpu_util=util, result=result,
    )  # fmt: skip


def run_bench(
    target: str,
    items: range,
    backends: Sequence[str] = ("serial", "thread", "process", "celery"),
    *,
    settings: Settings | None = None,
    workers: int | None = None,
    chunk_size: int | str = "auto",
    reduce: str | None = None,
    repeat: int = 1,
    io_concurrency: int | None = None,
) -> BenchReport:
    """Run the loop on each backend and compare against serial (always run, always first).

    Every backend is started and warmed up (pools forked and workers ready, the
    target imported) before any timing. Then the repeats run in rounds, each
    round every backend once, so a machine that slows down for a while (these
    are shared) weighs on all backends alike; each backend's median is reported.
    """
    if repeat < 1:
        raise UsageError(f"--repeat must be at least 1, not {repeat}")
    names = ["serial", *dict.fromkeys(b for b in backends if b != "serial")]
    engines: dict[str, Backend] = {}
    try:
        for name in names:
            engine = engines[name] = get_backend(name, settings, workers)
            engine.start((target.rpartition(":")[0],))
            warm = items[: 4 * engine.workers]
            run_job(target, warm, backend=engine, reduce=reduce, io_concurrency=io_concurrency)  # warm-up, untimed
        reports: dict[str, list[JobReport]] = {name: [] for name in names}
        results: dict[str, Any] = {}  # each backend's first result; later ones are compared, then dropped
        identical = True
        for _ in range(repeat):
            for name, engine in engines.items():
                report = run_job(
                    target, items, backend=engine, reduce=reduce, chunk_size=chunk_size, io_concurrency=io_concurrency
                )
                results.setdefault(name, report.result)
                identical = identical and report.result == results["serial"]
                report.result = None  # memory stays at one result per backend, however many repeats
                reports[name].append(report)
    finally:
        for engine in engines.values():
            engine.close()
    runs = {name: summarize(name, engines[name], reports[name], results[name]) for name in names}
    base = runs["serial"].wall_s
    for run in runs.values():
        run.speedup = base / run.wall_s if run.wall_s > 0 else float("inf")
        run.efficiency = run.speedup / run.workers
    return BenchReport(target, range_length(items), runs, identical)


def format_table(report: BenchReport) -> str:
    """The human table: wall time, speedup, efficiency per worker, chunks, overhead, CPU utilisation."""
    lines = [
        f"{report.target} over {report.items} items",
        f"{'backend':<8} {'workers':>7} {'wall s':>9} {'speedup':>8} {'efficiency':>10} {'chunks':>7} {'overhead':>8}"
        f" {'cpu':>5}",
    ]
    for r in report.runs.values():
        lines.append(
            f"{r.name:<8} {r.workers:>7} {r.wall_s:>9.3f} {r.speedup:>7.2f}x {r.efficiency:>9.0%} "
            f"{r.chunks:>7} {r.overhead:>8.0%} {r.cpu_util:>5.0%}"
        )
    lines.append("cpu: CPU time of the threads running f over wall time x cores (low: the loop waits)")
    lines.append(f"identical results: {'yes' if report.identical else 'NO'}; cluster start-up {report.startup_s:.2f} s")
    return "\n".join(lines)


def require_matplotlib() -> None:
    """Raise :class:`UsageError` with the install line when matplotlib (for ``--plot``) is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib: pip install 'distloop[plot]'")


def plot(report: BenchReport, path: str) -> None:
    """Speedup per backend against the ideal (one per worker), as a PNG."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report.runs)
    fig, ax = plt.subplots(figsize=(7, 4))
    speedups = [report.runs[n].speedup for n in names]
    ax.bar(names, speedups, color="#4C72B0", label="measured speedup")
    # The ideal per backend (its worker count), as a dashed mark across its bar.
    ideal = [report.runs[n].workers for n in names]
    ax.hlines(ideal, [i - 0.45 for i in range(len(names))], [i + 0.45 for i in range(len(names))],
              colors="black", linestyles="dashed", label="ideal (workers)")  # fmt: skip
    top = max(ideal + speedups) * 1.15
    for i, value in enumerate(speedups):  # inside the bar's top, clear of the ideal mark; above a short bar
        inside = value > 0.12 * top
        ax.annotate(f"{value:.2f}x", (i, value), xytext=(0, -14 if inside else 3), textcoords="offset points",
                    ha="center", color="white" if inside else "black", fontweight="bold")  # fmt: skip
    ax.set_ylim(0, top)
    ax.set_ylabel("speedup vs serial")
    ax.set_title(f"{report.target}, {report.items} items")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
