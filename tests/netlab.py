"""Separate hosts on one machine: Linux network namespaces joined by a bridge.

::

    root namespace (producer) --veth--+
    <lab>-redis  10.77.S.2  --veth----+-- bridge in <lab>-sw
    <lab>-w0     10.77.S.10 --veth----+
    <lab>-w1     10.77.S.11 --veth----+

Every name carries a random token, and the subnet ``10.77.S.0/24`` is one not
in use on this machine, so parallel runs do not clash. The root namespace gets
one new interface of its own (``dl<token>r``, 10.77.S.1); nothing existing is
touched. :meth:`NetLab.close` deletes the namespaces (and with them every
interface made here). Root only.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from distloop.worker.processes import ManagedProcess, stop_all

ROOT = Path(__file__).resolve().parent.parent


def can_make_namespaces() -> str | None:
    """None if this process can build the lab, else the reason it cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run the tests as root"
    if subprocess.run(["ip", "-V"], capture_output=True).returncode != 0:
        return "the ip command (iproute2) is missing"
    return None


def ip(*args: str, ns: str | None = None) -> None:
    argv = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def free_subnet() -> int:
    """A third octet S such that 10.77.S.0/24 is not used on this machine."""
    used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    for _ in range(100):
        candidate = secrets.randbelow(250) + 1
        if f"10.77.{candidate}." not in used:
            return candidate
    raise RuntimeError("no free 10.77.x.0/24 subnet")


@dataclass
class Host:
    """One simulated host: a namespace with one address."""

    ns: str
    address: str

    def prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.ns)


@dataclass
class NetLab:
    """Namespaces on one bridge, reachable from the root namespace."""

    token: str = field(default_factory=lambda: secrets.token_hex(3))
    subnet: int = field(default_factory=free_subnet)
    namespaces: list[str] = field(default_factory=list)
    processes: list[ManagedProcess] = field(default_factory=list)
    _next: int = 1

    @property
    def switch(self) -> str:
        return f"dl{self.token}-sw"

    def open(self) -> NetLab:
        self._add_ns(self.switch)
        ip("link", "add", "br0", "type", "bridge", ns=self.switch)
        ip("link", "set", "br0", "up", ns=self.switch)
        # The root namespace's own leg, for the producer.
        self._wire(None, f"dl{self.token}r", f"10.77.{self.subnet}.1")
        self._next += 1
        return self

    def _add_ns(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("link", "set", "lo", "up", ns=name)

    def _wire(self, ns: str | None, inner: str, address: str) -> None:
        """A veth pair: ``inner`` in ``ns`` (None: root) with ``address``, its peer on the bridge."""
        outer = f"dl{self.token}p{self._next}"
        made = f"dl{self.token}i{self._next}" if ns else inner  # root may have an eth0 already
        ip("link", "add", made, "type", "veth", "peer", "name", outer)
        if ns:
            ip("link", "set", made, "netns", ns)
            ip("link", "set", made, "name", inner, ns=ns)
        ip("link", "set", outer, "netns", self.switch)
        ip("link", "set", outer, "master", "br0", ns=self.switch)
        ip("link", "set", outer, "up", ns=self.switch)
        ip("addr", "add", f"{address}/24", "dev", inner, ns=ns)
        ip("link", "set", inner, "up", ns=ns)

    def add_host(self, role: str) -> Host:
        """A new namespace ``<lab>-<role>`` with the next free address."""
        name = f"dl{self.token}-{role}"
        self._add_ns(name)
        address = f"10.77.{self.subnet}.{self._next}"
        self._wire(name, "eth0", address)
        self._next += 1
        return Host(name, address)

    def spawn(
        self, host: Host, argv: Sequence[str], log: IO[Any] | int, env: dict[str, str] | None = None
    ) -> ManagedProcess:
        """Run ``argv`` on ``host``, as a process group stopped by pid at :meth:`close`."""
        process = ManagedProcess(f"{argv[0]} on {host.ns}", [*host.prefix(), *argv], env=env, cwd=str(ROOT), log=log)
        self.processes.append(process)
        return process

    def close(self) -> None:
        stop_all(self.processes)
        self.processes.clear()
        # Deleting a namespace deletes its interfaces, and a veth's peer with it.
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        self.namespaces.clear()
        subprocess.run(["ip", "link", "delete", f"dl{self.token}r"], capture_output=True)


def distloop_argv(*args: str) -> list[str]:
    """``distloop ARGS`` run by this interpreter (the worktree's own package)."""
    return [sys.executable, "-m", "distloop", *args]
