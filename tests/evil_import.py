"""Not on any allow-list: importing it leaves a trace, which the security test looks for."""

import os
import pathlib

pathlib.Path(os.environ.get("DISTLOOP_TEST_DIR", "/nonexistent"), "evil-imported").touch()


def f(i: int) -> int:
    return i
