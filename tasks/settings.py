"""One settings object, built from flags and environment; Celery's config derives from it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tasks import defaults

ENV_BROKER = "DISTLOOP_BROKER_URL"
ENV_RESULT = "DISTLOOP_RESULT_URL"
ENV_ALLOW = "DISTLOOP_ALLOW"
ENV_TIME_LIMIT = "DISTLOOP_CHUNK_TIME_LIMIT"
ENV_VISIBILITY = "DISTLOOP_VISIBILITY_TIMEOUT"


def split_patterns(text: str | None) -> tuple[str, ...]:
    """Split a comma-separated allow-list into stripped, non-empty patterns."""
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def mask_url(url: str | None) -> str:
    """Return ``url`` with its password replaced by ``***`` (for every output line)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        netloc = f"{user}:***@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<unparseable URL>"


@dataclass(frozen=True)
class Settings:
    """Everything configurable about distloop, for producer and workers alike.

    ``broker_url`` None means "not configured": the producer then starts the
    embedded cluster, and a worker falls back to the local default Redis.
    """

    broker_url: str | None = None
    result_url: str | None = None
    allow: tuple[str, ...] = ()
    chunk_time_limit: float = defaults.CHUNK_TIME_LIMIT
    chunk_soft_time_limit: float = defaults.CHUNK_SOFT_TIME_LIMIT
    visibility_timeout: int = defaults.VISIBILITY_TIMEOUT
    result_expires: int = defaults.RESULT_EXPIRES
    socket_timeout: float = defaults.SOCKET_TIMEOUT
    socket_connect_timeout: float = defaults.SOCKET_CONNECT_TIMEOUT
    health_check_interval: int = defaults.HEALTH_CHECK_INTERVAL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``DISTLOOP_*`` variables; non-None ``overrides`` (flags) win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {
            "broker_url": env.get(ENV_BROKER) or None,
            "result_url": env.get(ENV_RESULT) or None,
            "allow": split_patterns(env.get(ENV_ALLOW)),
        }
        if env.get(ENV_TIME_LIMIT):
            limit = float(env[ENV_TIME_LIMIT])
            values["chunk_time_limit"] = limit
            values["chunk_soft_time_limit"] = max(limit - 60.0, limit * 0.9)
            values["visibility_timeout"] = int(max(defaults.VISIBILITY_TIMEOUT, limit + 600))
        if env.get(ENV_VISIBILITY):
            values["visibility_timeout"] = int(env[ENV_VISIBILITY])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or defaults.WORKER_BROKER_URL

    @property
    def effective_result_url(self) -> str:
        return self.result_url or self.effective_broker_url

    @property
    def allowed_patterns(self) -> tuple[str, ...]:
        return defaults.ALWAYS_ALLOWED + tuple(p for p in self.allow if p not in defaults.ALWAYS_ALLOWED)

    def to_env(self) -> dict[str, str]:
        """The environment that gives a worker process these settings."""
        env = {ENV_BROKER: self.effective_broker_url, ENV_ALLOW: ",".join(self.allow)}
        if self.result_url:
            env[ENV_RESULT] = self.result_url
        return env

    def redis_options(self) -> dict[str, Any]:
        """Socket options shared by broker, result backend and the job store."""
        return {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
            "health_check_interval": self.health_check_interval,
            "retry_on_timeout": False,
        }

    def celery_config(self) -> dict[str, Any]:
        """Celery's configuration, derived in this one place."""
        transport = {"visibility_timeout": self.visibility_timeout, **self.redis_options()}
        transport.pop("retry_on_timeout")
        return {
            "broker_url": self.effective_broker_url,
            "result_backend": self.effective_result_url,
            "broker_transport_options": transport,
            "result_backend_transport_options": dict(transport),
            "redis_socket_timeout": self.socket_timeout,
            "redis_socket_connect_timeout": self.socket_connect_timeout,
            "redis_backend_health_check_interval": self.health_check_interval,
            "broker_connection_retry_on_startup": True,
            "broker_connection_timeout": self.socket_connect_timeout,
            # JSON only: nobody who can write to Redis gets to unpickle on a worker.
            "task_serializer": "json",
            "result_serializer": "json",
            "accept_content": ["json"],
            "result_accept_content": ["json"],
            # A chunk is acknowledged only after it ran, and requeued if its process dies.
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            # ...but as a retry with a cap (the task's max_retries), not forever.
            "task_retry_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "worker_disable_prefetch": True,
            "task_time_limit": self.chunk_time_limit,
            "task_soft_time_limit": self.chunk_soft_time_limit,
            "result_expires": self.result_expires,
            # Flower needs both to show queued chunks before they start.
            "worker_send_task_events": True,
            "task_send_sent_event": True,
            "task_track_started": True,
            "task_default_queue": defaults.QUEUE,
        }
