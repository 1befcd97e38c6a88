"""`distloop run` progress: a rich bar on a terminal, plain periodic lines otherwise, or nothing."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from tests.conftest import ROOT, Workers, run_cli

# 200 items of 20 ms in chunks of 10 on 2 processes: at least 2 s, with 20 chunk results.
JOB = ("run", "tests.workloads:sleep_ms", "--range", "0:200", "--chunk-size", "10", "--reduce", "sum")
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\r")


def run_in_terminal(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[int, str, str]:
    """Run ``distloop ARGS`` with stderr on a pseudo-terminal (160 columns); (code, stdout, terminal text)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    full_env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "DISTLOOP_BROKER_URL")}
    full_env.update(env, TERM="xterm-256color", COLUMNS="160")
    process = subprocess.Popen(
        [sys.executable, "-m", "distloop", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, cwd=ROOT, env=full_env,
    )  # fmt: skip
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the last writer closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        stdout = process.stdout.read().decode() if process.stdout else ""
        code = process.wait(timeout=30)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, stdout, b"".join(chunks).decode(errors="replace")


@pytest.mark.integration
def test_progress_bar_on_a_terminal_reaches_100_percent(shared_workers: Workers) -> None:
    env = {"DISTLOOP_BROKER_URL": shared_workers.settings.effective_broker_url}
    code, stdout, terminal = run_in_terminal(env, *JOB)
    assert code == 0, terminal
    assert stdout.strip() == str(sum(range(200)))
    screen = ANSI.sub("", terminal)
    assert "\x1b[" in terminal  # drawn live, with cursor control, not printed as lines
    assert re.search(
        r"100%\s+200/200 items\s+20/20 chunks\s+[\d,]+ items/s\s+\d+:\d\d:\d\d\s+done\s+0 failed", screen
    ), screen
    assert re.search(r"\s0/200 items\s+0/20 chunks", screen), screen  # totals show before the first result


@pytest.mark.integration
def test_plain_progress_lines_when_stderr_is_not_a_terminal(shared_workers: Workers) -> None:
    env = {"DISTLOOP_BROKER_URL": shared_workers.settings.effective_broker_url}
    result = run_cli(*JOB, "--progress-every", "0.2", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(sum(range(200)))
    line = re.compile(
        r"distloop: (\d+)/200 items \((\d+)%\), (\d+)/20 chunks, [\d,]+ items/s, (ETA \d+ s|[\d.]+ s), (\d+) failed"
    )
    rows = [m.groups() for m in map(line.fullmatch, result.stderr.splitlines()) if m]
    assert len(rows) >= 2, result.stderr  # periodic: the job lasts at least 2 s, a line every 0.2 s
    items = [int(r[0]) for r in rows]
    assert items == sorted(items) and items[0] < 200
    assert rows[-1][:3] == ("200", "100", "20") and rows[-1][4] == "0"
    assert "\x1b[" not in result.stderr
    summary = result.stderr.splitlines()[-1]
    assert summary.startswith("distloop: 200 items in 20 chunks on celery")


@pytest.mark.integration
@pytest.mark.parametrize(
    "options", [("--no-progress", "--progress-every", "0.1"), ("--progress-every", "600")], ids=["off", "short-job"]
)
def test_only_the_summary_without_progress_or_for_a_short_job(shared_workers: Workers, options: tuple[str]) -> None:
    env = {"DISTLOOP_BROKER_URL": shared_workers.settings.effective_broker_url}
    result = run_cli(*JOB, *options, env=env)
    assert result.returncode == 0, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "200 items in 20 chunks" in result.stderr
