"""Child processes that are always stopped by their own pid, even if we die first."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from distloop.tasks.core import defaults

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Any:
    def preexec() -> None:
        # If the process that started us is killed outright (SIGKILL), the kernel
        # sends us `sig`, so nothing we start outlives its owner.
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    return preexec


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``, from /proc.

    Orphaned pool children are reaped by init, which may take its time; a
    zombie no longer runs, so it does not count.
    """
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


class ManagedProcess:
    """A subprocess leading its own process group, stopped by pid on :meth:`stop`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        log: IO[Any] | int | None = subprocess.DEVNULL,
        death_signal: int = signal.SIGKILL,
        own_session: bool = True,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.own_session = own_session
        self.popen = subprocess.Popen(
            self.argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log not in (None, subprocess.DEVNULL) else log,
            start_new_session=own_session,
            preexec_fn=_die_with_parent(death_signal),
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the process and, as group leader, to its children."""
        try:
            if self.own_session:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, sig: int = signal.SIGTERM, grace: float = defaults.STOP_GRACE_SECONDS) -> int | None:
        """Ask the process to stop, then kill its whole group after ``grace`` seconds."""
        self.ask(sig)
        return self.finish(time.monotonic() + grace, grace)

    def ask(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the main process alone: a Celery worker shuts its own pool down cleanly."""
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def finish(self, until: float, grace: float = defaults.STOP_GRACE_SECONDS) -> int | None:
        """Wait until ``until`` (a monotonic time) for it to exit, then kill its whole group; its exit code."""
        try:
            self.popen.wait(timeout=max(0.0, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        # Children (a prefork pool) may outlive their parent briefly: kill the group,
        # and return only once every member is gone.
        self.send_signal(signal.SIGKILL)
        try:
            code = self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            return None
        if self.own_session:
            deadline = time.monotonic() + grace
            while group_members(self.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
        return code

    def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        """Poll ``predicate`` until true; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while not predicate():
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with code {self.popen.returncode} before {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not {what} after {timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)


def stop_all(
    processes: Sequence[ManagedProcess], sig: int = signal.SIGTERM, grace: float = defaults.STOP_GRACE_SECONDS
) -> None:
    """Stop several processes at once, each by pid: all are asked, then each is waited for.

    A Celery worker's warm shutdown takes about 2 s even when idle (its event loop
    notices the signal within a second, its pool's threads stop within 1.5 s more):
    stopped one after the other, N workers take N times as long.
    """
    for process in processes:
        process.ask(sig)
    until = time.monotonic() + grace
    for process in processes:
        process.finish(until, grace)
