"""One settings object, built from flags and environment; Celery's config derives from it."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from distloop.tasks.core import defaults
from distloop.tasks.core.errors import UsageError
from distloop.tasks.core.tls import check_tls_url, is_tls, strip_tls_query, tls_options

if TYPE_CHECKING:  # redis-py is imported where a client is made: 0.1-0.3 s that `distloop run` spends later
    import redis

# Values larger than this are sent as they lie, not copied into the command (redis-py's default).
_BUFFER_CUTOFF = 6000

ENV_BROKER = "DISTLOOP_BROKER_URL"
ENV_RESULT = "DISTLOOP_RESULT_URL"
ENV_ALLOW = "DISTLOOP_ALLOW"
ENV_TIME_LIMIT = "DISTLOOP_CHUNK_TIME_LIMIT"
ENV_VISIBILITY = "DISTLOOP_VISIBILITY_TIMEOUT"
ENV_ALLOW_FROM_STORE = "DISTLOOP_ALLOW_FROM_STORE"
ENV_TLS_CA = "DISTLOOP_TLS_CA_FILE"
ENV_TLS_CERT = "DISTLOOP_TLS_CERT_FILE"
ENV_TLS_KEY = "DISTLOOP_TLS_KEY_FILE"
ENV_TLS_INSECURE = "DISTLOOP_TLS_INSECURE"
ENV_TASK_EVENTS = "DISTLOOP_TASK_EVENTS"
ENV_MAX_TASKS_PER_CHILD = "DISTLOOP_MAX_TASKS_PER_CHILD"
ENV_FORWARD_OUTPUT = "DISTLOOP_FORWARD_OUTPUT"
ENV_STRAGGLERS = "DISTLOOP_STRAGGLERS"
#: A standing cluster (``distloop up``): where its environment file is, and ``0`` to never use one.
ENV_ENV_FILE = "DISTLOOP_ENV_FILE"
ENV_STANDING = "DISTLOOP_STANDING"
ENV_IO_CONCURRENCY = "DISTLOOP_IO_CONCURRENCY"
ENV_POOL = "DISTLOOP_POOL"
#: Set by whoever starts a worker and waits for it (the embedded cluster): a file the
#: worker creates once it consumes tasks.
ENV_READY_FILE = "DISTLOOP_READY_FILE"


def split_patterns(text: str | None) -> tuple[str, ...]:
    """Split a comma-separated allow-list into stripped, non-empty patterns."""
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


FLAG_VALUES = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def env_flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    """A yes/no variable: unset or empty is ``default``; anything but 1/0, true/false, yes/no, on/off is refused."""
    text = env.get(name, "").strip().lower()
    if not text:
        return default
    if text not in FLAG_VALUES:
        raise UsageError(f"{name}={env[name]!r}: expected 1 or 0 (or true/false, yes/no, on/off)")
    return FLAG_VALUES[text]


def env_count(env: Mapping[str, str], name: str, most: int | None = None) -> int | None:
    """A count variable, a whole number above 0 (and at most ``most``); None when unset or empty."""
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if most is not None and not 1 <= value <= most:
        raise UsageError(f"{name}={env[name]!r}: expected a whole number from 1 to {most}")
    if value < 1:
        raise UsageError(f"{name}={env[name]!r}: expected a whole number above 0, such as 100")
    return value


def env_seconds(env: Mapping[str, str], name: str, whole: bool = False) -> float | None:
    """A duration variable in seconds, above 0 (``whole``: an integer); None when unset or empty."""
    text = env.get(name, "").strip()
    if not text:
        return None
    expected = "a whole number of seconds above 0, such as 3600" if whole else "a number of seconds above 0"
    try:
        value = float(int(text)) if whole else float(text)
    except ValueError:
        raise UsageError(f"{name}={env[name]!r}: expected {expected}") from None
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{name}={env[name]!r}: expected {expected}")
    return value


def mask_url(url: str | None) -> str:
    """Return ``url`` with its password replaced by ``***`` (for every output line)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            host = parts.hostname or ""
            if parts.port:
                host = f"{host}:{parts.port}"
            netloc = f"{parts.username or ''}:***@{host}"
        # redis-py also takes ?password=...: mask that too.
        query = "&".join(
            f"{k}=***" if k.lower() == "password" else f"{k}={v}" if sep else k
            for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item)
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
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
    # Workers also allow the modules listed in their Redis (``JobStore.allow``).
    # Only the embedded cluster sets it: its Redis is private (random password,
    # loopback), so whoever can write there already runs code as this user.
    # Never set it on workers that serve a shared broker.
    allow_from_store: bool = False
    #: TLS (``rediss://`` URLs): CA bundle that signs the server's certificate
    #: (None: the system's trust store), and a client certificate and key for
    #: servers that ask for one. Certificate and host name checks are always on
    #: unless ``tls_insecure`` turns them off explicitly.
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_insecure: bool = False
    #: Task events from the start (``DISTLOOP_TASK_EVENTS=1``). Off by default: they
    #: cost a worker about 1 ms of CPU per chunk, and a monitor that wants them
    #: (Flower, ``distloop flower``) switches them on by remote control.
    task_events: bool = False
    #: Chunks a worker's pool process runs before it is replaced (Celery's
    #: ``worker_max_tasks_per_child``; ``Pool(maxtasksperchild=N)`` on the embedded cluster).
    max_tasks_per_child: int | None = None
    #: Show on the producer's terminal what ``f`` prints or logs on Celery workers
    #: (``DISTLOOP_FORWARD_OUTPUT=0``, ``--no-forward-output`` or ``forward_output=False``
    #: turn it off; see :mod:`distloop.tasks.output`). A producer setting: each chunk's
    #: message says whether its worker forwards.
    forward_output: bool = True
    #: Re-send a job's slowest last chunks to idle workers, and shrink the tail for slower
    #: hosts (``DISTLOOP_STRAGGLERS=0`` turns both off; see :mod:`distloop.backends.stragglers`).
    #: A producer setting.
    stragglers: bool = True
    #: Items of an ``async def`` target awaited at once per worker process
    #: (``DISTLOOP_IO_CONCURRENCY``, ``--io-concurrency``). None: a job sends none, and
    #: each worker uses its own setting, else :data:`defaults.IO_CONCURRENCY`.
    io_concurrency: int | None = None
    #: The workers' pool kind (``DISTLOOP_POOL``, ``--pool``): a worker serves that kind's
    #: queue, a producer sends its chunks there (:func:`defaults.queue_for`).
    pool: str = "prefork"
    #: With no broker configured, use the standing cluster of ``env_file`` (``distloop up``)
    #: when it answers and a worker serves it, instead of starting an embedded one
    #: (``DISTLOOP_STANDING=0`` or ``--embedded``: always the embedded cluster).
    standing: bool = True
    #: The environment file ``distloop up`` writes and producers read (``DISTLOOP_ENV_FILE``).
    env_file: str = defaults.UP_ENV_FILE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``DISTLOOP_*`` variables; non-None ``overrides`` (flags) win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {
            "broker_url": env.get(ENV_BROKER) or None,
            "result_url": env.get(ENV_RESULT) or None,
            "allow": split_patterns(env.get(ENV_ALLOW)),
            "allow_from_store": env_flag(env, ENV_ALLOW_FROM_STORE),
            "tls_ca_file": env.get(ENV_TLS_CA) or None,
            "tls_cert_file": env.get(ENV_TLS_CERT) or None,
            "tls_key_file": env.get(ENV_TLS_KEY) or None,
            "tls_insecure": env_flag(env, ENV_TLS_INSECURE),
            "task_events": env_flag(env, ENV_TASK_EVENTS),
            "forward_output": env_flag(env, ENV_FORWARD_OUTPUT, default=True),
            "standing": env_flag(env, ENV_STANDING, default=True),
            "env_file": env.get(ENV_ENV_FILE) or defaults.UP_ENV_FILE,
            "stragglers": env_flag(env, ENV_STRAGGLERS, default=True),
        }
        io_concurrency = env_count(env, ENV_IO_CONCURRENCY, defaults.MAX_IO_CONCURRENCY)
        if io_concurrency is not None:
            values["io_concurrency"] = io_concurrency
        pool = env.get(ENV_POOL, "").strip()
        if pool:
            if pool not in defaults.POOLS:
                raise UsageError(f"{ENV_POOL}={env[ENV_POOL]!r}: expected one of {', '.join(defaults.POOLS)}")
            values["pool"] = pool
        limit = env_seconds(env, ENV_TIME_LIMIT)
        if limit is not None:
            values["chunk_time_limit"] = limit
            values["chunk_soft_time_limit"] = max(limit - 60.0, limit * 0.9)
            values["visibility_timeout"] = int(max(defaults.VISIBILITY_TIMEOUT, limit + 600))
        visibility = env_seconds(env, ENV_VISIBILITY, whole=True)
        if visibility is not None:
            values["visibility_timeout"] = int(visibility)
        max_tasks = env_count(env, ENV_MAX_TASKS_PER_CHILD)
        if max_tasks is not None:
            values["max_tasks_per_child"] = max_tasks
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
    def effective_io_concurrency(self) -> int:
        return self.io_concurrency or defaults.IO_CONCURRENCY

    @property
    def queue(self) -> str:
        """The queue of this pool kind's workers."""
        return defaults.queue_for(self.pool)

    @property
    def allowed_patterns(self) -> tuple[str, ...]:
        return defaults.ALWAYS_ALLOWED + tuple(p for p in self.allow if p not in defaults.ALWAYS_ALLOWED)

    def to_env(self) -> dict[str, str]:
        """The environment that gives a worker process these settings."""
        env = {ENV_BROKER: self.effective_broker_url, ENV_ALLOW: ",".join(self.allow)}
        if self.result_url:
            env[ENV_RESULT] = self.result_url
        if self.allow_from_store:
            env[ENV_ALLOW_FROM_STORE] = "1"
        for name, value in ((ENV_TLS_CA, self.tls_ca_file), (ENV_TLS_CERT, self.tls_cert_file),
                            (ENV_TLS_KEY, self.tls_key_file)):  # fmt: skip
            if value:
                env[name] = value
        if self.tls_insecure:
            env[ENV_TLS_INSECURE] = "1"
        if self.task_events:
            env[ENV_TASK_EVENTS] = "1"
        if self.io_concurrency:
            env[ENV_IO_CONCURRENCY] = str(self.io_concurrency)
        if self.pool != "prefork":
            env[ENV_POOL] = self.pool
        if self.max_tasks_per_child:
            env[ENV_MAX_TASKS_PER_CHILD] = str(self.max_tasks_per_child)
        return env

    def check_tls(self) -> None:
        """Refuse (:class:`UsageError`, one line) URLs that skip certificate checks or misplace TLS.

        The options derived below are safe either way (checks stay on unless
        ``tls_insecure``); this tells the user why, instead of failing later.
        """
        tls_files = bool(self.tls_ca_file or self.tls_cert_file or self.tls_key_file)
        for url in {self.effective_broker_url, self.effective_result_url}:
            check_tls_url(url, self.tls_insecure, tls_files)
        if any(is_tls(url) for url in (self.effective_broker_url, self.effective_result_url)):
            # Only where TLS is used: the embedded cluster's plain redis:// leaves them aside.
            for name, path in ((ENV_TLS_CA, self.tls_ca_file), (ENV_TLS_CERT, self.tls_cert_file),
                               (ENV_TLS_KEY, self.tls_key_file)):  # fmt: skip
                if path and not os.path.isfile(path):
                    raise UsageError(f"{name}={path!r}: no such file (expected a PEM file)")

    def tls_for(self, url: str) -> dict[str, Any] | None:
        """redis-py's TLS options for ``url`` (None for ``redis://``): checks on unless ``tls_insecure``."""
        return tls_options(url, self.tls_ca_file, self.tls_cert_file, self.tls_key_file, self.tls_insecure)

    def redis_options(self, url: str | None = None) -> dict[str, Any]:
        """Socket and TLS options shared by broker, result backend, job store and heartbeats.

        ``url`` (default: the result store) decides whether TLS options apply.
        """
        options: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
            "health_check_interval": self.health_check_interval,
            "retry_on_timeout": False,
        }
        options.update(self.tls_for(url or self.effective_result_url) or {})
        return options

    def redis_client(self, url: str | None = None) -> redis.Redis:
        """A redis-py client for ``url`` (default: the result store) with every option above."""
        import redis
        from redis._parsers.encoders import Encoder
        from redis.connection import PythonRespSerializer

        url = url or self.effective_result_url
        # hiredis parses replies (a large array's bytes read 3-5x faster) but packs each command
        # into one new buffer, byte by byte: redis-py's own packer sends a large value as it lies.
        packer = PythonRespSerializer(_BUFFER_CUTOFF, Encoder("utf-8", "strict", False).encode)
        return redis.Redis.from_url(strip_tls_query(url), command_packer=packer, **self.redis_options(url))

    def celery_config(self) -> dict[str, Any]:
        """Celery's configuration, derived in this one place."""
        transport = {
            "visibility_timeout": self.visibility_timeout,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
            "health_check_interval": self.health_check_interval,
        }
        # kombu's Redis transport base64-encodes every message body by default, on top of the
        # JSON body, which already is text: a numpy array argument would be base64 twice.
        broker_transport = {**transport, "body_encoding": "utf-8"}
        broker_tls = self.tls_for(self.effective_broker_url)
        result_tls = self.tls_for(self.effective_result_url)
        return {
            # TLS options travel in broker_use_ssl / redis_backend_use_ssl, never in the
            # URL: a bare rediss:// URL would make kombu skip certificate checks.
            "broker_url": strip_tls_query(self.effective_broker_url),
            "result_backend": strip_tls_query(self.effective_result_url),
            "broker_use_ssl": broker_tls,
            "redis_backend_use_ssl": result_tls,
            "broker_transport_options": broker_transport,
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
            # Flower needs both to show queued chunks before they start. Off unless asked:
            # Flower turns the workers' on by remote control, their heartbeats say so,
            # and producers then send task-sent events too (see distloop.tasks.store.workers).
            "worker_send_task_events": self.task_events,
            "task_send_sent_event": self.task_events,
            "task_track_started": True,
            "task_default_queue": self.queue,
            # Each worker also consumes its own queue (``<hostname>.dq2``): a chunk one worker
            # refused (its code or allow-list differs) is handed to another by name.
            "worker_direct": True,
            "worker_max_tasks_per_child": self.max_tasks_per_child,
        }
