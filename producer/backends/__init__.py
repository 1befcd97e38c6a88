"""The backends: one interface (:mod:`.base`), picked by name.

``serial``, ``thread`` and ``process`` (:mod:`.local`) run the chunk kernel on this
machine; ``celery`` (:mod:`.celery`) sends chunks through Redis to Celery workers.
An implementation is imported only when it is chosen, and none of them imports
this registry, so there is no import circle.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING

from distloop.tasks.core.errors import UsageError
from distloop.tasks.core.limits import check_workers
from distloop.tasks.core.settings import Settings
from distloop.worker.early import started_early

if TYPE_CHECKING:  # `distloop run` reads BACKEND_NAMES before its embedded cluster starts: the rest loads later
    from distloop.backends.base import Backend

#: Backend name -> ``module:class``, in the order ``--help`` and the benchmark show them.
BACKENDS = {
    "celery": "distloop.backends.celery:CeleryBackend",
    "process": "distloop.backends.local:ProcessBackend",
    "thread": "distloop.backends.local:ThreadBackend",
    "serial": "distloop.backends.local:SerialBackend",
}
BACKEND_NAMES = tuple(BACKENDS)


def backend_class(name: str) -> type[Backend]:
    """The class of the backend called ``name``; :class:`UsageError` for an unknown name."""
    try:
        module, _, cls = BACKENDS[name].partition(":")
    except KeyError:
        raise UsageError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}") from None
    found: type[Backend] = getattr(importlib.import_module(module), cls)
    return found


def get_backend(
    name: str, settings: Settings | None = None, workers: int | None = None, option: str = "--workers"
) -> Backend:
    """The backend called ``name``, not yet started (``option``: how a refused ``workers`` is named)."""
    cls = backend_class(name)
    settings = settings or Settings.from_env()
    check_workers(workers, option, cls.worker_cap(settings))  # before anything forks
    return cls(settings, workers)


def check_timeout(engine: Backend, timeout: float | None) -> None:
    """Refuse a job's per-chunk ``timeout`` on a backend that cannot stop a stuck item."""
    if timeout is not None and not engine.supports_timeout:
        raise UsageError(f"--timeout needs the celery backend; the {engine.name} backend cannot stop a stuck item")


def start_backend(
    name: str,
    settings: Settings,
    workers: int | None = None,
    allow: Sequence[str] = (),
    *,
    option: str = "--workers",
    timeout: float | None = None,
) -> Backend:
    """The backend called ``name``, started (``allow``: modules its embedded cluster allows from the start).

    The embedded cluster, if it uses one, starts before the Celery backend is imported
    (:mod:`distloop.worker.early`). ``timeout``: a job's per-chunk timeout, refused before
    anything starts by a backend that cannot stop a stuck item.
    """
    with started_early(workers, allow, settings) if name == "celery" else nullcontext():
        engine = get_backend(name, settings, workers, option)
        check_timeout(engine, timeout)
        try:
            engine.start(allow)
        except BaseException:
            engine.close()
            raise
    return engine
