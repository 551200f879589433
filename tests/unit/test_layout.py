"""The package's layout holds: no module imports across its grain (docs/architecture.md).

The API and the worker are two programs over one shared base; the web server hosts the API;
only the command line (and the development tools) bring them together."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "asyncqueue"
ROOMS = ("api", "worker", "web", "dev", "cli")
# What each room may not import (the shared base, every other module, may import none of them).
FORBIDDEN = {
    "api": {"worker", "web", "dev", "cli"},
    "worker": {"api", "web", "dev", "cli"},
    "web": {"worker", "dev", "cli"},
    "dev": set(),
    "cli": {"dev"},
    "base": set(ROOMS),
}


def room_of(module: str) -> str:
    """`asyncqueue.api.tasks` -> "api"; a module outside every room -> "base"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else "base"


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.startswith("asyncqueue.")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_imports_across_the_grain(path):
    room = room_of(module_name(path))
    crossing = sorted(m for m in imported_modules(path) if room_of(m) in FORBIDDEN[room])
    assert not crossing, f"{module_name(path)} ({room}) imports {crossing}"


def test_the_rule_sees_a_crossing():
    assert room_of("asyncqueue.worker.runner") == "worker"
    assert room_of("asyncqueue.domain") == "base"
    assert "worker" in FORBIDDEN[room_of("asyncqueue.api.tasks")]
    assert len(MODULES) > 40  # the walk found the package
