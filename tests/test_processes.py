"""Processes we start are stopped by their own pid, together: ``distloop.worker.processes.stop_all``."""

from __future__ import annotations

import subprocess
import sys

from distloop.worker.processes import ManagedProcess, group_members, stop_all


def test_stop_all_asks_every_process_first_then_kills_each_group_by_pid() -> None:
    # One exits on SIGTERM; one ignores it and has a child: its whole group is killed after the grace.
    polite = ManagedProcess("polite", [sys.executable, "-c", "import time; time.sleep(60)"])
    stubborn = ManagedProcess("stubborn", [sys.executable, "-c", (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print('up', flush=True); "
        "time.sleep(60)")], log=subprocess.PIPE)  # fmt: skip
    try:
        assert stubborn.popen.stdout is not None and stubborn.popen.stdout.readline() == b"up\n"
        assert len(group_members(stubborn.pid)) == 2
        stop_all([stubborn, polite], grace=0.5)
        assert not polite.alive() and polite.popen.returncode == -15  # SIGTERM, asked before the stubborn one ended
        assert not stubborn.alive() and stubborn.popen.returncode == -9
        assert group_members(stubborn.pid) == [] and group_members(polite.pid) == []
    finally:
        for process in (polite, stubborn):
            process.stop(grace=0.1)
