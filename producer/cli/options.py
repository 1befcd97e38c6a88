"""Checks of option values shared by the subcommands: each refusal is one line naming the option.

The ``argparse`` types raise :class:`argparse.ArgumentTypeError` (argparse prints
``argument --opt: ...``, exit 2); the others raise :class:`UsageError` the same way.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import math
import os
import socket
import stat
from collections.abc import Sequence

from distloop.tasks.core import defaults
from distloop.tasks.core.errors import UsageError
from distloop.tasks.core.settings import split_patterns


def pool_choices() -> tuple[str, ...]:
    """Pool kinds this host can run: gevent only where it is installed (Celery imports it)."""
    return tuple(p for p in defaults.POOLS if p != "gevent" or importlib.util.find_spec("gevent") is not None)


#: Options whose value may start with "-" (a negative range bound): ``--range -5:5`` is
#: read as ``--range=-5:5``, where argparse alone would take ``-5:5`` for an option.
NEGATIVE_VALUE_OPTIONS = ("--range",)


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """Join ``--range -5:5:2`` into ``--range=-5:5:2`` (before a ``--``), so argparse reads it as the value."""
    out: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token == "--":
            out.append(token)
            out.extend(tokens)
            break
        if token in NEGATIVE_VALUE_OPTIONS:
            value = next(tokens, None)
            if value is not None and value[:1] == "-" and value[1:2].isdigit():
                out.append(f"{token}={value}")
                continue
            out.append(token)
            if value is not None:
                out.append(value)
            continue
        out.append(token)
    return out


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}")
    return value


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 to 65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number (0 to 65535), not {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number (0 to 65535; 0 picks a free one), not {value}")
    return value


def check_listen(host: str, port: int, option: str) -> None:
    """Refuse an address this host cannot listen on, or a port in use, before anything starts there."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is in use: pass {option} 0 for any free port") from None
        raise UsageError(f"--bind {host}: cannot listen there: {exc.strerror}") from None


def allow_option(text: str, option: str = "--allow") -> tuple[str, ...]:
    """``--allow``'s comma-separated modules; an empty list is refused (it would allow nothing new)."""
    patterns = split_patterns(text)
    if not patterns:
        raise UsageError(f"{option} {text!r}: expected comma-separated module names, such as 'myproject.*'")
    return patterns


def check_url(url: str | None, option: str = "--broker") -> str | None:
    """A given ``--broker`` must not be empty (it would silently mean another Redis)."""
    if url is not None and not url.strip():
        raise UsageError(f"{option} must not be empty: give a Redis URL, or leave the option out")
    return url


def kernel_devices() -> set[int]:
    """Device numbers of /proc and /sys, whose files are the kernel's, not the user's."""
    devices = set()
    for mount in ("/proc", "/sys"):
        try:
            devices.add(os.stat(mount).st_dev)
        except OSError:
            pass
    return devices


def check_env_file(path: str, option: str = "--env-file") -> None:
    """Refuse an environment file that cannot be one: empty, a directory, not a regular file, the kernel's."""
    if not path.strip():
        raise UsageError(f"{option} must not be empty: give a file name")
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return  # created, with its folders, mode 600
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror}") from None
    if stat.S_ISDIR(found.st_mode):
        raise UsageError(f"{option} {path}: is a directory")
    if not stat.S_ISREG(found.st_mode) or found.st_dev in kernel_devices():
        raise UsageError(f"{option} {path}: not a regular file")
