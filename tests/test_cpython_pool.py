"""CPython's own ``_TestPool`` (``Lib/test/_test_multiprocessing.py``), run against ``distloop.Pool``.

Adapted from CPython 3.11's ``_TestPool`` (with 3.13's ``test_terminate``; PSF license),
as its "processes" variant: the bodies kept, with only these changes:

- functions travel by name from allowed modules: ``sqr``, ``mul``, ``int``,
  ``time.sleep``... are in :mod:`tests.cpython_workloads`, and so are the
  classmethods ``_test_traceback`` and ``_test_wrapped_exception`` (as module functions);
- what cannot travel as JSON (an unpicklable object in the original) is refused
  with :class:`~distloop.ResultNotSerializable`, at once, instead of a pickling error;
- ``len(p._pool)`` (internal) is ``p.processes``, the public count;
- a test that needs what distribution rules out is skipped, with the reason.

One redis-server and one prefork worker (2 processes) serve the whole module;
``pool`` is the class's ``Pool(4)``, as in ``setUpClass``.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from distloop import Pool, ResultNotSerializable
from distloop.tasks.core.errors import RemoteTraceback
from distloop.worker.redis_server import start_redis
from tests import cpython_workloads as cw
from tests.conftest import Workers, settings_for

pytestmark = pytest.mark.integration

TIMEOUT1 = TIMEOUT2 = 0.1  # CHECK_TIMINGS off, as in CPython's default run
SHORT_TIMEOUT = 30.0  # support.SHORT_TIMEOUT
LONG_TIMEOUT = 300.0  # support.LONG_TIMEOUT


class SayWhenError(ValueError):
    pass


def exception_throwing_generator(total: int, when: int) -> Iterator[int]:
    if when == -1:
        raise SayWhenError("Somebody said when")
    for i in range(total):
        if i == when:
            raise SayWhenError("Somebody said when")
        yield i


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """One redis-server and one prefork worker for the module, stopped by pid."""
    server = start_redis()
    workers = Workers(settings_for(server), tmp_path_factory.mktemp("cpython-pool"))
    try:
        workers.start(concurrency=2)
        yield workers
    finally:
        workers.stop()
        server.stop()


@pytest.fixture(scope="class")
def class_pool(cluster: Workers) -> Iterator[Pool]:
    pool = Pool(4, settings=cluster.settings)
    yield pool
    pool.terminate()
    pool.join()


class TestPool:
    TYPE = "processes"
    pool: Pool

    @pytest.fixture(autouse=True)
    def _pools(self, class_pool: Pool, cluster: Workers) -> None:
        self.pool = class_pool
        self.settings = cluster.settings

    def Pool(self, processes: int | None = None, **kwargs: Any) -> Pool:
        return Pool(processes, settings=self.settings, **kwargs)

    def test_apply(self) -> None:
        papply = self.pool.apply
        assert papply(cw.sqr, (5,)) == cw.sqr(5)
        assert papply(cw.sqr, (), {"x": 3}) == cw.sqr(x=3)

    def test_map(self) -> None:
        pmap = self.pool.map
        assert pmap(cw.sqr, list(range(10))) == list(map(cw.sqr, list(range(10))))
        assert pmap(cw.sqr, list(range(100)), chunksize=20) == list(map(cw.sqr, list(range(100))))

    def test_starmap(self) -> None:
        psmap = self.pool.starmap
        tuples = list(zip(range(10), range(9, -1, -1), strict=True))
        assert psmap(cw.mul, tuples) == list(itertools.starmap(cw.mul, tuples))
        tuples = list(zip(range(100), range(99, -1, -1), strict=True))
        assert psmap(cw.mul, tuples, chunksize=20) == list(itertools.starmap(cw.mul, tuples))

    def test_starmap_async(self) -> None:
        tuples = list(zip(range(100), range(99, -1, -1), strict=True))
        assert self.pool.starmap_async(cw.mul, tuples).get() == list(itertools.starmap(cw.mul, tuples))

    def test_map_async(self) -> None:
        assert self.pool.map_async(cw.sqr, list(range(10))).get() == list(map(cw.sqr, list(range(10))))

    def test_map_async_callbacks(self) -> None:
        call_args: list[Any] = []
        self.pool.map_async(cw.int_, ["1"], callback=call_args.append, error_callback=call_args.append).wait()
        assert len(call_args) == 1
        assert call_args[0] == [1]
        self.pool.map_async(cw.int_, ["a"], callback=call_args.append, error_callback=call_args.append).wait()
        assert len(call_args) == 2
        assert isinstance(call_args[1], ValueError)

    def test_map_unplicklable(self) -> None:
        """Issue #19425: failure to serialize should not cause a hang (here: refused at once, named)."""

        class A:
            def __reduce__(self) -> Any:
                raise RuntimeError("cannot pickle")

        with pytest.raises(ResultNotSerializable, match=r"a value of type .*A cannot travel"):
            self.pool.map(cw.sqr, [A()] * 10)

    def test_map_chunksize(self) -> None:
        try:
            self.pool.map_async(cw.sqr, [], chunksize=1).get(timeout=TIMEOUT1)
        except multiprocessing.TimeoutError:
            pytest.fail("pool.map_async with chunksize stalled on null list")

    def test_map_handle_iterable_exception(self) -> None:
        with pytest.raises(SayWhenError):
            self.pool.map(cw.sqr, exception_throwing_generator(1, -1), 1)
        with pytest.raises(SayWhenError):
            self.pool.map(cw.sqr, exception_throwing_generator(1, -1), 1)
        with pytest.raises(SayWhenError):
            self.pool.map(cw.sqr, exception_throwing_generator(10, 3), 1)

        class SpecialIterable:
            def __iter__(self) -> SpecialIterable:
                return self

            def __next__(self) -> int:
                raise SayWhenError

            def __len__(self) -> int:
                return 1

        with pytest.raises(SayWhenError):
            self.pool.map(cw.sqr, SpecialIterable(), 1)
        with pytest.raises(SayWhenError):
            self.pool.map(cw.sqr, SpecialIterable(), 1)

    def test_async(self) -> None:
        res = self.pool.apply_async(cw.sqr, (7, TIMEOUT1))
        assert res.get() == 49

    def test_async_timeout(self) -> None:
        p = self.Pool(3)
        try:
            res = p.apply_async(cw.sqr, (6, TIMEOUT2 + SHORT_TIMEOUT))
            with pytest.raises(multiprocessing.TimeoutError):
                res.get(timeout=TIMEOUT2)
        finally:
            p.terminate()
            p.join()

    def test_imap(self) -> None:
        it = self.pool.imap(cw.sqr, list(range(10)))
        assert list(it) == list(map(cw.sqr, list(range(10))))

        it = self.pool.imap(cw.sqr, list(range(10)))
        for i in range(10):
            assert next(it) == i * i
        with pytest.raises(StopIteration):
            it.__next__()

        it = self.pool.imap(cw.sqr, list(range(1000)), chunksize=100)
        for i in range(1000):
            assert next(it) == i * i
        with pytest.raises(StopIteration):
            it.__next__()

    def test_imap_handle_iterable_exception(self) -> None:
        it = self.pool.imap(cw.sqr, exception_throwing_generator(1, -1), 1)
        with pytest.raises(SayWhenError):
            it.__next__()
        it = self.pool.imap(cw.sqr, exception_throwing_generator(1, -1), 1)
        with pytest.raises(SayWhenError):
            it.__next__()

        it = self.pool.imap(cw.sqr, exception_throwing_generator(10, 3), 1)
        for i in range(3):
            assert next(it) == i * i
        with pytest.raises(SayWhenError):
            it.__next__()

        # SayWhenError seen at start of problematic chunk's results
        it = self.pool.imap(cw.sqr, exception_throwing_generator(20, 7), 2)
        for i in range(6):
            assert next(it) == i * i
        with pytest.raises(SayWhenError):
            it.__next__()
        it = self.pool.imap(cw.sqr, exception_throwing_generator(20, 7), 4)
        for i in range(4):
            assert next(it) == i * i
        with pytest.raises(SayWhenError):
            it.__next__()

    def test_imap_unordered(self) -> None:
        it = self.pool.imap_unordered(cw.sqr, list(range(10)))
        assert sorted(it) == list(map(cw.sqr, list(range(10))))

        it = self.pool.imap_unordered(cw.sqr, list(range(1000)), chunksize=100)
        assert sorted(it) == list(map(cw.sqr, list(range(1000))))

    def test_imap_unordered_handle_iterable_exception(self) -> None:
        it = self.pool.imap_unordered(cw.sqr, exception_throwing_generator(1, -1), 1)
        with pytest.raises(SayWhenError):
            it.__next__()
        it = self.pool.imap_unordered(cw.sqr, exception_throwing_generator(1, -1), 1)
        with pytest.raises(SayWhenError):
            it.__next__()

        it = self.pool.imap_unordered(cw.sqr, exception_throwing_generator(10, 3), 1)
        expected_values = list(map(cw.sqr, list(range(10))))
        with pytest.raises(SayWhenError):
            # imap_unordered makes it difficult to anticipate the SayWhenError
            for _ in range(10):
                value = next(it)
                assert value in expected_values
                expected_values.remove(value)

        it = self.pool.imap_unordered(cw.sqr, exception_throwing_generator(20, 7), 2)
        expected_values = list(map(cw.sqr, list(range(20))))
        with pytest.raises(SayWhenError):
            for _ in range(20):
                value = next(it)
                assert value in expected_values
                expected_values.remove(value)

    def test_make_pool(self) -> None:
        with pytest.raises(ValueError):
            self.Pool(-1)
        with pytest.raises(ValueError):
            self.Pool(0)
        p = self.Pool(3)
        try:
            assert p.processes == 3  # the original: len(p._pool)
        finally:
            p.close()
            p.join()

    def test_terminate(self) -> None:
        # Simulate slow tasks which take "forever" to complete
        p = self.Pool(3)
        args = [LONG_TIMEOUT for _ in range(10_000)]
        p.map_async(cw.sleep, args, chunksize=1)
        time.sleep(0.2)  # give some tasks a chance to start
        p.terminate()
        p.join()

    def test_empty_iterable(self) -> None:
        # See Issue 12157
        p = self.Pool(1)
        assert p.map(cw.sqr, []) == []
        assert list(p.imap(cw.sqr, [])) == []
        assert list(p.imap_unordered(cw.sqr, [])) == []
        assert p.map_async(cw.sqr, []).get() == []
        p.close()
        p.join()

    def test_context(self) -> None:
        if self.TYPE == "processes":
            L = list(range(10))
            expected = [cw.sqr(i) for i in L]
            with self.Pool(2) as p:
                r = p.map_async(cw.sqr, L)
                assert r.get() == expected
            p.join()
            with pytest.raises(ValueError):
                p.map_async(cw.sqr, L)

    def test_traceback(self, capsys: pytest.CaptureFixture[str]) -> None:
        # We want ensure that the traceback from the child process is
        # contained in the traceback raised in the main process.
        if self.TYPE == "processes":
            with self.Pool(1) as p:
                try:
                    p.apply(cw.raise_runtime_123)
                except Exception as e:
                    exc = e
                else:
                    pytest.fail("expected RuntimeError")
            p.join()
            assert type(exc) is RuntimeError
            assert exc.args == (123,)
            cause = exc.__cause__
            assert type(cause) is RemoteTraceback  # the original: multiprocessing.pool.RemoteTraceback
            assert "raise RuntimeError(123)  # some comment" in cause.tb

            try:
                raise exc
            except RuntimeError:
                sys.excepthook(*sys.exc_info())
            assert "raise RuntimeError(123)  # some comment" in capsys.readouterr().err
            # _helper_reraises_exception should not make the error
            # a remote exception
            with self.Pool(1) as p:
                try:
                    p.map(cw.sqr, exception_throwing_generator(1, -1), 1)
                except Exception as e:
                    exc = e
                else:
                    pytest.fail("expected SayWhenError")
                assert type(exc) is SayWhenError
                assert exc.__cause__ is None
            p.join()

    def test_wrapped_exception(self) -> None:
        # Issue #20980: Should not wrap exception when using thread pool
        with self.Pool(1) as p, pytest.raises(RuntimeError):
            p.apply(cw.raise_runtime_foo)
        p.join()

    def test_map_no_failfast(self) -> None:
        # Issue #23992: the fail-fast behaviour when an exception is raised
        # during map() would make Pool.join() deadlock.
        t_start = time.monotonic()
        with pytest.raises(ValueError), self.Pool(2) as p:
            try:
                p.map(cw.raise_large_valuerror, [0, 1])
            finally:
                time.sleep(0.5)
                p.close()
                p.join()
        # check that we indeed waited for all jobs
        assert time.monotonic() - t_start > 0.9

    @pytest.mark.skip(reason="arguments and results travel as JSON: CountedObject instances (a user class) cannot "
                      "be sent, and JSON values keep no reference to the caller's objects")  # fmt: skip
    def test_release_task_refs(self) -> None:
        pass

    def test_enter(self) -> None:
        pool = self.Pool(1)
        with pool:
            pass
            # call pool.terminate()
        # pool is no longer running
        # bpo-35477: pool.__enter__() fails if the pool is not running
        with pytest.raises(ValueError), pool:
            pass
        pool.join()

    def test_resource_warning(self) -> None:
        pool: Pool | None = self.Pool(1)
        assert pool is not None
        pool.terminate()
        pool.join()
        # force state to RUN to emit ResourceWarning in __del__()
        pool._state = "RUN"  # multiprocessing.pool.RUN
        with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):
            pool = None
            gc.collect()
