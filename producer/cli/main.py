"""``distloop``: the command line. Each subcommand lives in its own module of this package.

Exit codes: 0 ok, 1 the loop's own function failed, 2 bad usage or input,
3 broker or worker unavailable, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any, NoReturn

import distloop
from distloop.cli.options import join_negative_values
from distloop.tasks.core.errors import BrokerUnavailable, DistloopError
from distloop.tasks.core.settings import Settings

#: Subcommand modules; each has ``NAME``, ``add_arguments(parser)`` and ``main(args) -> int``.
COMMANDS = (
    "distloop.cli.run",
    "distloop.cli.bench",
    "distloop.cli.worker",
    "distloop.cli.up",
    "distloop.cli.status",
    "distloop.cli.flower",
    "distloop.cli.resume",
)

EXIT_INTERRUPTED = 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line, with exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _Version(argparse.Action):
    """``--version``, read only when asked (argparse's own action takes the string at once)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"distloop {distloop.__version__}")  # on stdout, as argparse's version action
        parser.exit()


def build_parser(only: str | None = None) -> tuple[ArgumentParser, dict[str, Any]]:
    """The parser of every subcommand; with ``only`` (a subcommand's name), that one's arguments alone.

    Each subcommand's module is imported to add its arguments. ``distloop run`` imports
    ``run``'s alone (the others get an empty parser): the embedded cluster starts sooner.
    """
    parser = ArgumentParser(prog="distloop", description="Run a Python loop on many cores and many machines.")
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    handlers = {}
    for name in COMMANDS:
        if only is not None and name.rpartition(".")[2] != only:
            sub.add_parser(name.rpartition(".")[2])  # never parsed: another subcommand runs
            continue
        module = importlib.import_module(name)
        command = sub.add_parser(module.NAME, help=(module.__doc__ or "").splitlines()[0], description=module.__doc__)
        module.add_arguments(command)
        handlers[module.NAME] = module
    return parser, handlers


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; map every error to one line on stderr and an exit code."""
    try:  # a bad DISTLOOP_* variable: one line, before any module reads the environment on import
        Settings.from_env()
    except DistloopError as exc:
        print(f"distloop: error: {exc}", file=sys.stderr)
        return exc.exit_code
    given = join_negative_values(sys.argv[1:] if argv is None else argv)
    chosen = given[0] if given and given[0] in {name.rpartition(".")[2] for name in COMMANDS} else None
    parser, handlers = build_parser(chosen)
    args = parser.parse_args(given)
    # SIGTERM cleans up like Ctrl-C: every process we started is stopped by pid.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(handlers[args.command].main(args))
    except DistloopError as exc:
        return fail(args, str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return fail(args, "interrupted", EXIT_INTERRUPTED)
    except Exception as exc:
        if not _redis_error(exc):
            raise
        # One line, not a traceback, for what Redis answered unexpectedly.
        return fail(args, f"Redis: {exc}", BrokerUnavailable.exit_code)


def _redis_error(exc: Exception) -> bool:
    """Whether ``exc`` is redis-py's (loaded only once a command connects: not imported here for it)."""
    redis = sys.modules.get("redis")
    return redis is not None and isinstance(exc, redis.RedisError)


def fail(args: argparse.Namespace, message: str, code: int) -> int:
    print(f"distloop {args.command}: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "exit_code": code}))
    return code


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
