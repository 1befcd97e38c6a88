"""A private redis-server on a free loopback port, without persistence."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from distloop.tasks.core import defaults
from distloop.tasks.core.errors import BrokerUnavailable
from distloop.worker.processes import ManagedProcess

if TYPE_CHECKING:  # imported once a client is made: the server starts before redis-py loads
    import redis


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """A running redis-server we started; :meth:`stop` stops it by pid."""

    process: ManagedProcess
    host: str
    port: int
    password: str | None
    workdir: str = field(repr=False)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def client(self) -> redis.Redis:
        import redis

        return redis.Redis(host=self.host, port=self.port, password=self.password, socket_timeout=5)

    def answers(self) -> bool:
        """Whether it answers PING now."""
        from redis import RedisError

        client = self.client()
        try:
            return bool(client.ping())
        except RedisError:
            return False
        finally:
            client.close()

    def wait_answering(self, timeout: float = defaults.STARTUP_TIMEOUT) -> None:
        """Return once it answers PING; RuntimeError if it exits first, TimeoutError after ``timeout``."""
        self.process.wait_for(self.answers, timeout, "answering PING")

    def stop(self) -> None:
        self.process.stop(signal.SIGTERM)
        shutil.rmtree(self.workdir, ignore_errors=True)


def spawn_redis(
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    password: str | None = "generate",
    extra_args: tuple[str, ...] = (),
    command_prefix: tuple[str, ...] = (),
) -> RedisServer:
    """Start redis-server and return at once (see :meth:`RedisServer.wait_answering`).

    Its URL is known before it answers, so workers can be started alongside it.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise BrokerUnavailable(
            "redis-server is not installed: apt-get install redis-server (in a clone, `make run` installs it)"
        )
    if password == "generate":
        password = secrets.token_hex(16)
    chosen = port or free_port(host)
    workdir = tempfile.mkdtemp(prefix="distloop-redis-")  # mode 700: ours alone
    # The password goes in a config file in that folder, never on the command line
    # (other users of the host can read command lines with `ps`).
    config = os.path.join(workdir, "redis.conf")
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as stream:
        if password:
            stream.write(f"requirepass {password}\n")
    argv = [
        *command_prefix, binary, config, "--port", str(chosen), "--bind", host, "--save", "",
        "--appendonly", "no", "--dir", workdir, "--maxmemory-policy", "noeviction", "--protected-mode", "no",
        "--daemonize", "no", "--loglevel", "warning", *extra_args,
    ]  # fmt: skip
    try:
        return RedisServer(ManagedProcess("redis-server", argv), host, chosen, password, workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def start_redis(
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    password: str | None = "generate",
    extra_args: tuple[str, ...] = (),
    timeout: float = defaults.STARTUP_TIMEOUT,
    command_prefix: tuple[str, ...] = (),
) -> RedisServer:
    """Start redis-server and return once it answers PING.

    ``command_prefix`` runs it through another command, such as
    ``ip netns exec NS`` for a server on another (simulated) host.
    """
    if password == "generate":
        password = secrets.token_hex(16)
    last_error: Exception | None = None
    for _ in range(5):  # another process may grab the free port before redis binds it
        server = spawn_redis(
            host=host, port=port, password=password, extra_args=extra_args, command_prefix=command_prefix
        )
        try:
            server.wait_answering(timeout)
            return server
        except (RuntimeError, TimeoutError) as exc:
            last_error = exc
            server.stop()
            if port:
                break
    raise BrokerUnavailable(f"could not start redis-server: {last_error}")
