"""``python -m distloop.worker.launch OPTIONS``: Celery's own ``worker`` command on distloop's app, started sooner.

``celery -A distloop.tasks worker`` first loads every plugin of Celery's umbrella
command (Flower's, and click-repl with prompt_toolkit for ``celery shell``): about
0.3 s of imports on a 2-core machine before the worker begins. This runs the very
same ``worker`` click command (:mod:`celery.bin.worker`: the same options, the same
``app.Worker``) on :data:`distloop.tasks.app.app`, without the umbrella. Users still
start workers with ``celery -A distloop.tasks worker`` or ``distloop worker``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from celery import maybe_patch_concurrency


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``celery worker`` with ``argv`` (the options after ``worker``); exits with its code."""
    args = list(sys.argv[1:] if argv is None else argv)
    maybe_patch_concurrency(["celery", *args])  # what `python -m celery` does first (eventlet/gevent)
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
