"""Reaching the result Redis: one clear error (and exit code) when it cannot be used."""

from __future__ import annotations

import redis

from distloop.tasks.core.errors import BrokerUnavailable, UsageError
from distloop.tasks.core.settings import Settings, mask_url
from distloop.tasks.store.jobs import JobStore


def connect_store(settings: Settings) -> JobStore:
    """A job store on the result Redis, checked with PING; one clear error if unusable."""
    url = settings.effective_result_url
    settings.check_tls()
    try:
        client = settings.redis_client(url)
        client.ping()
    except redis.AuthenticationError:
        raise BrokerUnavailable(f"Redis at {mask_url(url)} refused the credentials") from None
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise BrokerUnavailable(f"Redis at {mask_url(url)} refused the credentials") from None
        raise BrokerUnavailable(f"Redis at {mask_url(url)}: {exc}") from None
    except (redis.RedisError, OSError) as exc:
        raise BrokerUnavailable(f"cannot reach Redis at {mask_url(url)}: {exc}") from None
    except ValueError as exc:  # a malformed URL is bad input, not an unavailable broker
        raise UsageError(f"bad broker URL {mask_url(url)}: {exc}") from None
    return JobStore(client, settings.result_expires)
