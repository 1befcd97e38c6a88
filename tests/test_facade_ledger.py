"""What a facade's job keeps in Redis while its executor lives: nothing it has read.

A facade job lasts as long as its pool or executor, and cannot be resumed, so each
chunk's result (and its large arrays) leaves Redis once the producer has read it; a
tombstone marks it read, so a late copy of the chunk is still ignored, and the
tombstones go too once every chunk below them is back. Real prefork workers
(``shared_workers``).
"""

from __future__ import annotations

import time

import pytest

from distloop import CeleryExecutor, Pool
from distloop.tasks.core import defaults
from distloop.tasks.store.jobs import RECEIVED
from tests import workloads
from tests.conftest import Workers, wait_until
from tests.value_samples import np, same

pytestmark = pytest.mark.integration


def ledger(client: object, suffix: str) -> dict[bytes, bytes]:
    """Every facade job's ``suffix`` hash, merged (one job per function)."""
    found: dict[bytes, bytes] = {}
    for key in client.scan_iter(f"distloop:job:*:{suffix}"):  # type: ignore[attr-defined]
        found.update(client.hgetall(key))  # type: ignore[attr-defined]
    return found


def test_a_pool_keeps_only_tombstones_of_the_results_it_read(
    shared_workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaults, "RECOVERY_INTERVAL", 3600.0)  # no trim meanwhile: every mark stays
    client = shared_workers.settings.redis_client()
    with Pool(settings=shared_workers.settings) as pool:
        assert pool.map(workloads.echo, range(60), chunksize=1) == list(range(60))
        results = ledger(client, "results")
        # Every chunk came back; what stays of each is an empty mark, never its values.
        assert len(results) == 60 and set(results.values()) == {RECEIVED.encode()}
    client.close()


def test_read_results_and_their_tombstones_leave_while_the_executor_lives(
    shared_workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaults, "RECOVERY_INTERVAL", 0.05)  # the collector's bookkeeping tick
    client = shared_workers.settings.redis_client()
    with CeleryExecutor(settings=shared_workers.settings) as ex:
        assert list(ex.map(workloads.echo, range(40), chunksize=1)) == list(range(40))
        # One more call after a tick: everything below it came back, so nothing of the map stays
        # (the call's own mark may wait for the next tick, which an idle executor does not run).
        time.sleep(0.1)
        assert ex.submit(workloads.echo, 7).result(timeout=60) == 7
        wait_until(lambda: set(ledger(client, "results")) <= {b"40"}, 10, "the map's tombstones to go")
        assert ex.submit(workloads.echo, 8).result(timeout=60) == 8  # still running
    client.close()


@pytest.mark.skipif(np is None, reason="numpy is not installed")
def test_an_array_result_leaves_redis_once_read(shared_workers: Workers) -> None:
    client = shared_workers.settings.redis_client()
    array = workloads.million_floats(3)
    with CeleryExecutor(settings=shared_workers.settings) as ex:
        for seed in (3, 3, 3):
            assert same(ex.submit(workloads.million_floats, seed).result(timeout=60), array)
            assert not ledger(client, "blobs")  # 8 MB each: none of them waits for the executor's end
    client.close()
