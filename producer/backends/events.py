"""Task-sent events only while a monitor watches.

A producer's task-sent events (Flower's PENDING rows) cost a message each. They are
sent only while a live worker's heartbeat says its task events are on, which is the
case while Flower (or ``distloop flower``) watches, or always with
``DISTLOOP_TASK_EVENTS=1``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from distloop.tasks.core.settings import Settings
from distloop.tasks.store.workers import events_watched


def follow_monitors(app: Celery, settings: Settings, workers: dict[str, dict[str, Any]]) -> None:
    """Send task-sent events from ``app`` while one of ``workers`` (their heartbeats) sends task events."""
    app.conf.task_send_sent_event = settings.task_events or events_watched(workers)
