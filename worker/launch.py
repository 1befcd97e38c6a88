"""``python -m distloop.worker.launch OPTIONS``: Celery's own ``worker`` command on distloop's app, started sooner.

``celery -A distloop.tasks worker`` first loads every plugin of Celery's umbrella
command (Flower's, and click-repl with prompt_toolkit for ``celery shell``): about
0.3 s of imports on a 2-core machine before the worker begins. This runs the very
same ``worker`` click command (:mod:`celery.bin.worker`: the same options, the same
``app.Worker``) on :data:`distloop.tasks.app.app`, without the umbrella, and without
the pygments lexer Celery's click helpers build for colours (0.1 s more). Users still
start workers with ``celery -A distloop.tasks worker`` or ``distloop worker``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from celery import maybe_patch_concurrency


@contextmanager
def _without_pygments() -> Iterator[None]:
    """Celery's click helpers import pygments, if installed, to colour ``celery inspect``
    output, and build its Python lexer at import: 0.1 s of regular expressions compiled
    before a worker starts, for colours a worker never prints. Hidden from that import
    only (Celery then uses its plain fallback); the tasks import pygments as usual."""
    hidden = "pygments" not in sys.modules
    if hidden:
        sys.modules["pygments"] = None  # type: ignore[assignment]  # import pygments -> ImportError
    try:
        yield
    finally:
        if hidden and sys.modules.get("pygments", 0) is None:
            del sys.modules["pygments"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``celery worker`` with ``argv`` (the options after ``worker``); exits with its code."""
    args = list(sys.argv[1:] if argv is None else argv)
    maybe_patch_concurrency(["celery", *args])  # what `python -m celery` does first (eventlet/gevent)
    with _without_pygments():
        from celery.bin.base import CLIContext
        from celery.bin.worker import worker

    from distloop.tasks.app import app

    worker.main(
        args=args,
        prog_name="celery worker",
        obj=CLIContext(app=app, no_color=True, workdir=None),
        auto_envvar_prefix="CELERY_WORKER",  # as under `celery` (CELERY_WORKER_AUTOSCALE=...)
    )


if __name__ == "__main__":
    main()
