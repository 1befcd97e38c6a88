"""Finding a standing cluster (``distloop up``) that a producer can use instead of starting one.

``distloop up`` writes its broker URL to an environment file (``~/.distloop/up.env``,
or ``DISTLOOP_ENV_FILE``). With no broker configured, ``distloop run`` and the
facades read it, and use that cluster when:

- the file is a regular file owned by this user with no access for anyone else
  (else it is ignored, with one warning line: someone else could have written it);
- it was started in this working directory (its workers import the project's
  modules from their own, the folder ``distloop up`` ran in);
- its Redis answers PING within :data:`defaults.STANDING_PING_TIMEOUT`, and a live
  distloop worker of the job's pool kind heartbeats there (:mod:`distloop.tasks.store.workers`).

Otherwise the producer starts the embedded cluster as usual. Whichever is chosen
when a file was found, one line on stderr says so, with the URL's password masked.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from pathlib import Path

from distloop.tasks.core import defaults
from distloop.tasks.core.settings import ENV_BROKER, ENV_STANDING, Settings, mask_url

#: The folder ``distloop up`` ran in (its workers' project folder), in its environment file.
ENV_UP_PROJECT = "DISTLOOP_UP_PROJECT"


class EnvFileRefused(Exception):
    """The environment file exists but cannot be trusted (the message says why)."""


def read_env_file(path: Path) -> dict[str, str] | None:
    """The ``export NAME='value'`` lines of ``path``; None if there is no such file.

    Raises :class:`EnvFileRefused` unless it is a regular file (not a symbolic link)
    owned by this user, readable and writable by nobody else.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symbolic link
        raise EnvFileRefused(f"cannot open it safely ({exc.strerror})") from None
    with os.fdopen(fd, encoding="utf-8", errors="replace") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise EnvFileRefused("it is not a regular file")
        if info.st_uid != os.getuid():
            raise EnvFileRefused(f"it is owned by uid {info.st_uid}, not by you")
        if info.st_mode & 0o077:
            raise EnvFileRefused(f"its mode is {info.st_mode & 0o777:o}, not 600: chmod 600 it")
        text = stream.read(64 * 1024)
    values = {}
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            values[name] = value
    return values


def find_standing(settings: Settings) -> str | None:
    """The broker URL of a usable standing cluster, or None (then start the embedded one).

    Only when ``settings`` names no broker and ``settings.standing`` allows it.
    """
    if settings.broker_url is not None or not settings.standing:
        return None
    path = Path(os.path.expanduser(settings.env_file))
    try:
        values = read_env_file(path)
    except EnvFileRefused as exc:
        say(f"ignoring {path}: {exc}")
        return None
    if values is None:
        return None
    url = values.get(ENV_BROKER)
    if not url:
        say(f"ignoring {path}: it sets no {ENV_BROKER}")
        return None
    why_not = unusable(url, values.get(ENV_UP_PROJECT), settings.pool)
    if why_not:
        say(f"the standing cluster of {path} {why_not}: starting an embedded cluster")
        return None
    say(f"using the standing cluster at {mask_url(url)} (from {path}; --embedded or {ENV_STANDING}=0: a private one)")
    return url


def unusable(url: str, project: str | None, pool: str = "prefork") -> str | None:
    """Why the standing cluster at ``url`` cannot serve this producer (its jobs for ``pool``), or None."""
    here = os.path.realpath(os.getcwd())
    if project and os.path.realpath(project) != here:
        return f"serves {project}, not this folder"
    import redis  # only once an environment file is found: `distloop run` starts its cluster before redis-py loads

    from distloop.tasks.store.workers import live_workers

    timeout = defaults.STANDING_PING_TIMEOUT
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ValueError:
        return "has a malformed broker URL"
    try:
        client.ping()
        workers = live_workers(client)
    except (redis.RedisError, OSError) as exc:
        return f"does not answer ({type(exc).__name__})"
    finally:
        client.close()
    if not workers:
        return "has no live worker"
    if not any(w.get("pool", "prefork") == pool for w in workers.values()):
        return f"has no live {pool} worker"
    return None


def say(line: str) -> None:
    print(f"distloop: {line}", file=sys.stderr, flush=True)
