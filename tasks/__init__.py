"""What runs on a worker: the Celery app, the chunk kernel, and the demo workloads.

``celery -A tasks worker`` finds :data:`app` here. It is imported lazily, so that
local backends can use the kernel without configuring Celery.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from tasks.application import app

        return app
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
