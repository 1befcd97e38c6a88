"""docker-compose.yml as Compose reads it: the YAML, and variable interpolation.

No Docker engine runs here, so the tests take each service's command, entrypoint,
health check and environment from the file, substitute variables as Compose would,
and run them as local processes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from tests.conftest import ROOT

COMPOSE_PATH = ROOT / "docker-compose.yml"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_PATH.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]

# $$ (a literal $ for the container's shell), ${VAR}, ${VAR:-default}, ${VAR-default},
# ${VAR:?error}, ${VAR?error}, and a bare $VAR: the forms Compose substitutes.
_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class MissingVariable(KeyError):
    """A ``${VAR:?message}`` whose variable is unset (or empty): Compose refuses the file."""


def interpolate(value: Any, variables: Mapping[str, str]) -> Any:
    """``value`` (a string, or lists and mappings of them) with variables substituted as Compose does."""
    if isinstance(value, str):
        return _REFERENCE.sub(lambda match: _substitute(match, variables), value)
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    return value


def _substitute(match: re.Match[str], variables: Mapping[str, str]) -> str:
    if match.group(0) == "$$":
        return "$"
    name = match.group(1) or match.group(5)
    colon, kind, word = match.group(2), match.group(3), match.group(4)
    value = variables.get(name)
    unset = value is None or (colon == ":" and value == "")
    if kind == "?" and unset:
        raise MissingVariable(f"{name}: {word}")
    if kind == "-" and unset:
        return str(word)
    return value or ""


def variables_in(text: str) -> set[str]:
    """Names of the variables that Compose substitutes in ``text`` (not ``$$NAME``)."""
    return {m.group(1) or m.group(5) for m in _REFERENCE.finditer(text) if m.group(0) != "$$"}


def strings(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every string in the file with the path of keys (and list positions) that leads to it."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from strings(item, (*path, str(index)))
    elif isinstance(node, dict):
        for key, item in node.items():
            yield from strings(item, (*path, str(key)))


def argv(service: str, variables: Mapping[str, str], *, with_entrypoint: bool = True) -> list[str]:
    """What the service's container runs: its entrypoint (if any) followed by its command."""
    spec = SERVICES[service]
    entrypoint = (spec.get("entrypoint") or []) if with_entrypoint else []
    parts = [*entrypoint, *spec["command"]]
    return [str(part) for part in interpolate(parts, variables)]


def environment(service: str, variables: Mapping[str, str]) -> dict[str, str]:
    """The service's ``environment:`` after interpolation."""
    return {key: str(value) for key, value in interpolate(SERVICES[service]["environment"], variables).items()}


def healthcheck_shell(service: str, variables: Mapping[str, str]) -> str:
    """The service's ``CMD-SHELL`` health check, as the container's ``sh -c`` receives it."""
    test = interpolate(SERVICES[service]["healthcheck"]["test"], variables)
    assert test[0] == "CMD-SHELL", test
    return str(test[1])
