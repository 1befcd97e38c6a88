"""Celery's task and worker events, with a bound on how long one waits for a broker.

Celery's worker heartbeat (an event every 2 s, sent from a timer thread while the
pool shuts down too) publishes with ``retry=True`` and no retry policy, and kombu
then retries for ever while the event dispatcher's lock is held; the worker's
shutdown sends ``worker-offline`` under the same lock. With the broker gone for
good (an embedded cluster whose owner was killed loses its Redis at the same
moment) the worker hung in its shutdown and outlived everything. Here a retried
event without a policy of its own gets the app's ``task_publish_retry_policy``
(three quick retries by default); an event that still cannot go is buffered, as
Celery buffers events while the broker is away.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery.app.events import Events as CeleryEvents
from celery.events.dispatcher import EventDispatcher


class BoundedEventDispatcher(EventDispatcher):
    """Celery's dispatcher; ``retry=True`` without a policy retries as a task's publish does."""

    app: Any  # set by Celery's app.subclass_with_self

    def send(
        self, type: str, blind: bool = False, *, retry: bool = False, retry_policy: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Any:  # fmt: skip
        if retry and retry_policy is None:
            retry_policy = self.app.conf.task_publish_retry_policy
        return super().send(type, blind, retry=retry, retry_policy=retry_policy, **fields)


class Events(CeleryEvents):
    """``app.events`` with :class:`BoundedEventDispatcher` (``Celery(events=...)``)."""

    dispatcher_cls = "distloop.tasks.events:BoundedEventDispatcher"
