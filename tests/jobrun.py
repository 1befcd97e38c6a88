"""A `distloop run` producer as a user starts it, in the background: its job id read from its first line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.conftest import ROOT, Workers


class Producer:
    """``distloop run ARGS`` against ``workers``' Redis; stderr collected line by line."""

    def __init__(self, workers: Workers, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DISTLOOP_BROKER_URL"}
        env.update(DISTLOOP_BROKER_URL=workers.settings.effective_broker_url, DISTLOOP_ALLOW="tests.workloads")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "distloop", "run", *args], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._first = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            self._first.set()
        self._first.set()

    def job_id(self, timeout: float = 60) -> str:
        """The id on the first line the producer prints (``distloop: job ID: ...``)."""
        assert self._first.wait(timeout), "the producer printed nothing"
        first = self.lines[0] if self.lines else ""
        assert first.startswith("distloop: job "), f"the first line is not the job's: {self.lines}"
        return first.split()[2].rstrip(":")

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        """Exit code and stdout once the producer ends."""
        out, _ = self.process.communicate(timeout=timeout)
        self._reader.join(5)
        return self.process.returncode, out

    def signal(self, sig: int = signal.SIGINT) -> None:
        self.process.send_signal(sig)

    def stop(self) -> None:
        """Kill it by pid if it still runs (on a test's failure)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def open_gate(folder: Path) -> None:
    (folder / "gate").write_text("open")
