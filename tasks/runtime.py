"""A worker process's own state: its settings, read once from the environment, and its ledger client."""

from __future__ import annotations

import sys

from distloop.tasks.core.errors import DistloopError
from distloop.tasks.core.settings import Settings
from distloop.tasks.output import OutputStore
from distloop.tasks.store.jobs import JobStore


def _settings() -> Settings:
    """This process's settings; a bad DISTLOOP_* variable ends it with one line, not an import traceback
    (``celery -A distloop.tasks worker`` imports this module before anything can catch it)."""
    try:
        return Settings.from_env()
    except DistloopError as exc:
        print(f"distloop worker: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


settings = _settings()
_store: JobStore | None = None
_output: OutputStore | None = None


def job_store() -> JobStore:
    """The job ledger on this worker's result Redis (one client per process)."""
    global _store
    if _store is None:
        _store = JobStore(settings.redis_client(), settings.result_expires)
    return _store


def output_store() -> OutputStore:
    """Where this worker pushes the output its chunks forward (the job ledger's Redis)."""
    global _output
    if _output is None:
        store = job_store()
        _output = OutputStore(store.client, store.expires)
    return _output
