"""A worker process's own state: its settings, read once from the environment, and its ledger client."""

from __future__ import annotations

from distloop.tasks.core.settings import Settings
from distloop.tasks.store.jobs import JobStore

settings = Settings.from_env()
_store: JobStore | None = None


def job_store() -> JobStore:
    """The job ledger on this worker's result Redis (one client per process)."""
    global _store
    if _store is None:
        _store = JobStore(settings.redis_client(), settings.result_expires)
    return _store
