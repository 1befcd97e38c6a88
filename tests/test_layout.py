"""The package's layout keeps its promises: one import name, layers that import downwards, no circles."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

#: Folder of the repository -> the import package it holds (pyproject's package-dir).
FOLDERS = {"producer": "distloop", "tasks": "distloop.tasks", "worker": "distloop.worker"}
#: The producer's side: what neither distloop.tasks nor distloop.worker may import.
PRODUCER_SIDE = ("distloop.api", "distloop.assemble", "distloop.backends", "distloop.bench", "distloop.cli",
                 "distloop.dispatch", "distloop.facades", "distloop.progress", "distloop.ranges",
                 "distloop.resume", "distloop.sizing", "distloop.status")  # fmt: skip


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [FOLDERS[folder], *rest]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))}


def imports_at_import_time(path: Path) -> set[str]:
    """distloop modules ``path`` imports when it is imported (not inside functions or TYPE_CHECKING)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    known = modules()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.ClassDef) else ():
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names}
            elif isinstance(sub, ast.ImportFrom) and sub.module:
                found.add(sub.module)
                found |= {f"{sub.module}.{a.name}" for a in sub.names if f"{sub.module}.{a.name}" in known}
    return {name for name in found if name in known}


def test_the_package_installs_one_top_level_name_from_the_three_folders() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {v: k for k, v in FOLDERS.items()}
    assert {p.split(".")[0] for p in config["packages"]} == {"distloop"}
    # Every folder with modules is listed, so `pip install .` leaves nothing out.
    packages = {module_name(p.parent / "__init__.py") for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")}
    assert packages == set(config["packages"])


@pytest.mark.parametrize("layer", ["distloop.tasks", "distloop.worker"])
def test_lower_layers_never_import_the_producer_side(layer: str) -> None:
    for name, path in modules().items():
        if name == layer or name.startswith(layer + "."):
            wrong = {i for i in imports_at_import_time(path) if i.startswith(PRODUCER_SIDE)}
            assert not wrong, f"{name} imports {wrong}"
            if layer == "distloop.tasks":
                assert not {i for i in imports_at_import_time(path) if i.startswith("distloop.worker")}, name


def test_no_module_imports_itself_through_a_circle() -> None:
    graph = {name: imports_at_import_time(path) for name, path in modules().items()}

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return [*trail, nxt]
                if nxt not in trail and len(trail) < 30:
                    stack.append((nxt, [*trail, nxt]))
        return None

    # A package importing its own submodules (the front door re-exporting) is not a circle.
    for name in graph:
        graph[name] = {i for i in graph[name] if not i.startswith(name + ".")}
    cycles = [c for name in graph if (c := cycle_from(name))]
    assert not cycles, cycles[0]
