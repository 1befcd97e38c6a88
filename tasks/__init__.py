"""What runs on a worker, and what the producer shares with it.

``celery -A distloop.tasks worker`` finds :data:`app` here, imported lazily so that
local backends and the producer can use the kernel without building the worker's app.

- :mod:`.app`: the Celery app and its tasks; :mod:`.signals`: a worker's life
  (heartbeat, ready file, chunks its pool lost); :mod:`.runtime`: a worker
  process's settings and ledger client.
- :mod:`.kernel`: the chunk kernel every backend runs; :mod:`.targets`: functions
  by name, and the allow-list.
- :mod:`.core`: settings, defaults, errors, the wire codec, TLS (no Celery).
- :mod:`.store`: what lives in Redis: job ledgers, worker heartbeats, reaching it.
- :mod:`.demo`: the seed articles' workloads.

Nothing here imports from the producer's side (``distloop.api``, backends,
facades, CLI) or from ``distloop.worker``.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from distloop.tasks.app import app

        return app
    raise AttributeError(f"module 'distloop.tasks' has no attribute {name!r}")
