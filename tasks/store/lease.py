"""One producer per job: a lease in Redis that the job's producer renews while it runs.

``distloop:job:<id>:lease`` holds the owning producer's token (a JSON object: a random
id, its host name and pid) with a time-to-live of :data:`TTL_MS`; the producer renews it
every few seconds (each recovery check). A second producer (``distloop resume JOB``, or a
run given the same job id) takes the lease only once it is gone: its producer ended, or
was killed and stopped renewing. A producer that finds its lease taken stops, so two
producers never split one job's results between them.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass

import redis

#: Milliseconds a lease lives without renewal: a killed producer's job can be resumed after this.
TTL_MS = 10_000

# KEYS: lease. ARGV: token, ttl ms. Take (or renew) the lease unless another token holds it;
# returns the holder's token and its remaining milliseconds.
_TAKE = """
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {ARGV[1], tonumber(ARGV[2])}
end
return {holder, redis.call('PTTL', KEYS[1])}
"""

# KEYS: lease. ARGV: token. Give the lease up, only if it is ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lease_key(job_id: str) -> str:
    return f"distloop:job:{job_id}:lease"


def new_token() -> str:
    """This producer's token: unique, and saying where the producer runs."""
    return json.dumps({"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()})


@dataclass
class Holder:
    """Who holds a job's lease, and for how many more seconds unless renewed."""

    host: str
    pid: int | None
    left_s: float


def busy_message(job_id: str, holder: Holder) -> str:
    """The one line that refuses to attach to a job whose producer is alive."""
    return (
        f"job {job_id} is still run by its producer ({holder.host}, pid {holder.pid}), which renews its lease:"
        f" stop that producer first, or wait for it to end (if it died, its lease expires in {holder.left_s:.0f} s)"
    )


class Leases:
    """Take, renew and release job leases on one Redis, for one producer (one token)."""

    def __init__(self, client: redis.Redis, token: str | None = None, ttl_ms: int = TTL_MS) -> None:
        self.token = token or new_token()
        self.ttl_ms = ttl_ms
        self._take = client.register_script(_TAKE)
        self._release = client.register_script(_RELEASE)
        self.client = client

    def take(self, job_id: str) -> Holder | None:
        """Take or renew ``job_id``'s lease; None if now ours, else who holds it."""
        holder, left = self._take([lease_key(job_id)], [self.token, self.ttl_ms])
        holder = holder.decode() if isinstance(holder, bytes) else holder
        if holder == self.token:
            return None
        try:
            info = json.loads(holder)
        except ValueError:
            info = {}
        return Holder(str(info.get("host", "?")), info.get("pid"), max(int(left), 0) / 1000)

    def release(self, job_id: str) -> None:
        self._release([lease_key(job_id)], [self.token])

    def taken(self, job_id: str) -> Holder | None:
        """Who holds ``job_id``'s lease, if not this producer (None: ours, or nobody's)."""
        raw = self.client.get(lease_key(job_id))
        if raw is None or (raw.decode() if isinstance(raw, bytes) else raw) == self.token:
            return None
        return self.holder(job_id)

    def holder(self, job_id: str) -> Holder | None:
        """Who holds ``job_id``'s lease now (None: nobody, its producer is gone)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.get(lease_key(job_id))
        pipe.pttl(lease_key(job_id))
        raw, left = pipe.execute()
        if raw is None:
            return None
        try:
            info = json.loads(raw)
        except ValueError:
            info = {}
        return Holder(str(info.get("host", "?")), info.get("pid"), max(int(left), 0) / 1000)
