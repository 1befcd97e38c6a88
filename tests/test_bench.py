"""``distloop bench``: every backend side by side, the same results, a table, JSON and a plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Workers, run_cli


@pytest.mark.integration
def test_bench_json_and_plot(shared_workers: Workers, tmp_path: Path) -> None:
    plot = tmp_path / "speedup.png"
    done = run_cli(
        "bench", "distloop.tasks.demo:calc_stuff", "--range", "0:200", "--repeat", "2", "--json", "--plot", str(plot),
        "--broker", shared_workers.settings.effective_broker_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["backends"]) == {"serial", "thread", "process", "celery"}
    assert report["identical"] is True
    for figures in report["backends"].values():
        assert figures["wall_s"] > 0 and figures["speedup"] > 0 and len(figures["walls"]) == 2
    assert report["backends"]["serial"]["speedup"] == 1.0
    assert report["startup_s"] >= 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_reports_when_backends_disagree(tmp_path: Path) -> None:
    # Each backend runs f in different processes, so process ids differ from serial's.
    done = run_cli("bench", "tests.workloads:pid", "--range", "0:50", "--backends", "serial,process", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["identical"] is False
    assert "different results" in done.stderr


def test_bench_table_names_every_backend() -> None:
    done = run_cli("bench", "distloop.tasks.demo:square", "--range", "0:5000", "--backends", "serial,thread")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split()[:4] == ["backend", "workers", "wall", "s"]
    assert [line.split()[0] for line in lines[2:4]] == ["serial", "thread"]
    assert "identical results: yes" in done.stdout


def test_plot_without_matplotlib_is_refused_before_the_benchmark_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import distloop.cli.bench
    from distloop.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    ran: list[object] = []
    monkeypatch.setattr(distloop.cli.bench, "run_bench", lambda *a, **k: ran.append(a))
    code = main(["bench", "distloop.tasks.demo:square", "--range", "0:10", "--backends", "serial", "--plot", "x.png"])
    assert code == 2 and ran == []
