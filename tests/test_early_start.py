"""``distloop run`` starts its embedded cluster before it imports Celery, and its backend adopts that cluster.

The first result of a job on the embedded cluster waits for the worker's own imports;
they now run beside the producer's (issue 16.3; the time is measured by ``make perf``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from distloop.backends import get_backend
from distloop.tasks.core.limits import worker_cap
from distloop.tasks.core.settings import Settings
from distloop.worker import early as early_module
from distloop.worker.early import adopt, started_early
from distloop.worker.embedded import EmbeddedCluster
from tests.conftest import ROOT, running


def pids(cluster: EmbeddedCluster) -> list[int]:
    assert cluster.worker is not None and cluster.redis is not None
    return [cluster.worker.popen.pid, cluster.redis.process.popen.pid]


def embedded_settings() -> Settings:
    return Settings(standing=False, allow=("tests.workloads",))


def test_run_starts_the_cluster_before_celery_kombu_or_redis_py_load() -> None:
    # What `distloop run` imports before its cluster starts: its command line and distloop.worker.early.
    code = (
        "import sys, distloop.cli.main, distloop.cli.run, distloop.worker.early; "
        "print(sorted(m for m in ('celery', 'kombu', 'redis', 'rich', 'distloop.api') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.integration
def test_the_backend_adopts_the_cluster_started_early_and_stops_it() -> None:
    settings = embedded_settings()
    with started_early(2, ("tests.workloads",), settings) as early:
        assert early is not None
        started = pids(early)
        engine = get_backend("celery", settings, 2)
        try:
            engine.start(("tests.workloads",))
            assert engine.cluster is early  # no second redis-server, no second worker
            from distloop.api import run_job

            assert run_job("tests.workloads:echo", range(50), backend=engine).result == list(range(50))
        finally:
            engine.close()
        assert not [pid for pid in started if running(pid)]


@pytest.mark.integration
def test_a_cluster_started_for_other_arguments_is_stopped_when_the_backend_starts_its_own() -> None:
    settings = embedded_settings()
    with started_early(1, ("tests.workloads",), settings) as early:
        assert early is not None
        started = pids(early)
        engine = get_backend("celery", settings, 2)  # 2 workers, not 1
        try:
            engine.start(("tests.workloads",))
            assert engine.cluster is not None and engine.cluster is not early
            assert not [pid for pid in started if running(pid)]
        finally:
            engine.close()


@pytest.mark.integration
def test_a_cluster_nobody_adopts_is_stopped_when_the_block_ends() -> None:
    with pytest.raises(ValueError), started_early(1, (), embedded_settings()) as early:
        assert early is not None
        started = pids(early)
        raise ValueError("the job failed before its backend started")
    assert not [pid for pid in started if running(pid)]
    assert adopt(1, (), embedded_settings()) is None


def test_nothing_starts_early_with_a_broker_or_an_environment_file_of_distloop_up(tmp_path: os.PathLike[str]) -> None:
    with started_early(1, (), Settings(broker_url="redis://127.0.0.1:1/0")) as early:
        assert early is None
    env_file = os.path.join(tmp_path, "up.env")
    with open(env_file, "w") as f:
        f.write("export DISTLOOP_BROKER_URL='redis://127.0.0.1:1/0'\n")
    with started_early(1, (), Settings(env_file=env_file)) as early:
        assert early is None  # the backend looks at the standing cluster, as before


def test_a_refused_worker_count_starts_nothing_early() -> None:
    with started_early(100_000, (), embedded_settings()) as early:
        assert early is None
    # Within a threads worker's own cap, above the backend's: refused before anything forks too.
    with started_early(worker_cap() + 1, (), embedded_settings().replace(pool="threads")) as early:
        assert early is None


@pytest.mark.integration
def test_run_job_and_the_facades_start_one_cluster_early_and_adopt_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from distloop import Pool, run_job
    from distloop.tasks.demo import square

    starts: list[EmbeddedCluster] = []
    adopted: list[EmbeddedCluster | None] = []
    real_start, real_adopt = EmbeddedCluster.start, early_module.adopt

    def start(self: EmbeddedCluster, wait: bool = True) -> EmbeddedCluster:
        starts.append(self)
        return real_start(self, wait)

    def watch_adopt(*args: object) -> EmbeddedCluster | None:
        found = real_adopt(*args)  # type: ignore[arg-type]
        adopted.append(found)
        return found

    monkeypatch.setattr(EmbeddedCluster, "start", start)
    monkeypatch.setattr("distloop.backends.celery.adopt", watch_adopt)
    settings = Settings(standing=False)
    assert run_job(square, range(20), settings=settings, workers=1).result == [i * i for i in range(20)]
    assert len(starts) == 1 and adopted == starts  # started early, then adopted: no second cluster
    with Pool(1, settings=settings) as pool:
        assert pool.map(square, range(20)) == [i * i for i in range(20)]
    assert len(starts) == 2 and adopted == starts


def test_the_worker_launcher_skips_pygments_for_celerys_cli_only() -> None:
    # Celery's click helpers build pygments' Python lexer at import (0.1 s of a worker's start-up,
    # for colours a worker never prints); the launcher hides pygments from that import alone.
    code = (
        "import sys\n"
        "from distloop.worker.launch import _without_pygments\n"
        "with _without_pygments():\n"
        "    import celery.bin.base, celery.bin.worker\n"
        "assert celery.bin.base.LEXER is None and 'pygments.lexers' not in sys.modules\n"
        "import pygments.lexers\n"  # what runs in the worker afterwards (a task) imports it as usual
        "print(pygments.lexers.PythonLexer.name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Python"
