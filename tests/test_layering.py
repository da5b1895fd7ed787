"""Imports go one way: the pure packages stay pure, the apps never import each other.

Parses every module with :mod:`ast` (nothing is imported), so a violation is
caught even in code no test executes, including ``TYPE_CHECKING`` blocks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = frozenset({"protocol", "scheduler", "meshkit", "coordinator", "agent", "webui"})
# meshkit: array code both apps run (decimation); pure like the other two.
PURE = ("protocol", "scheduler", "meshkit")

# I/O, concurrency, clocks and randomness: the pure packages are handed time
# and seeds instead of reading them.
BANNED_IN_PURE = frozenset(
    {
        "asyncio",
        "starlette",
        "sqlalchemy",
        "websockets",
        "uvicorn",
        "aiosqlite",
        "httpx",
        "socket",
        "threading",
        "random",
        "time",
        "datetime",
        "secrets",
        "uuid",
    }
)
# Attribute or bare-name calls that read a clock, e.g. ``time.monotonic()``,
# ``datetime.now()``, ``loop.time()``, ``date.today()``.
CLOCK_CALLS = frozenset(
    {
        "monotonic",
        "monotonic_ns",
        "perf_counter",
        "perf_counter_ns",
        "process_time",
        "process_time_ns",
        "time_ns",
        "clock_gettime",
        "now",
        "utcnow",
        "today",
    }
)
# Imports that dodge a static check.
DYNAMIC_IMPORTS = frozenset({"__import__", "import_module"})

# package → the packages of ours it may import (None: any but the forbidden ones)
ALLOWED: dict[str, frozenset[str]] = {
    "protocol": frozenset({"protocol"}),
    "scheduler": frozenset({"scheduler", "protocol"}),
    "meshkit": frozenset({"meshkit"}),
    "client": frozenset({"client"}),  # the API client: the standard library only
}
FORBIDDEN: dict[str, frozenset[str]] = {
    "agent": frozenset({"coordinator", "webui", "scheduler"}),
    "coordinator": frozenset({"agent"}),
}

# coordinator/'s parts, bottom to top (docs/architecture.md): each may import only the
# parts listed, so storage never reaches up into views and views never into the
# agent link. A part not listed here (a new sub-package) fails the test until placed.
_BASE = frozenset({"settings", "i18n", "formats", "labels"})
COORDINATOR_PARTS: dict[str, frozenset[str] | None] = {
    "settings": frozenset(),
    "i18n": frozenset(),
    "formats": frozenset({"i18n"}),
    "labels": frozenset({"i18n"}),
    "meshes": _BASE,
    "store": _BASE | {"meshes"},
    "farm": _BASE | {"meshes", "store"},
    "services": _BASE | {"meshes", "store", "farm"},
    "link": _BASE | {"meshes", "store", "farm", "services"},
    "request_context": _BASE | {"farm"},
    "web": _BASE | {"meshes", "store", "farm", "services", "request_context"},
    "api": _BASE | {"meshes", "store", "farm", "services", "request_context"},
    "app": _BASE | {"meshes", "store", "farm", "services", "link", "request_context", "web", "api"},
    "cli": None,  # the entry points assemble everything
}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of every import, relative ones resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                # In a package's __init__, "." is the package itself.
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            if name:
                yield node.lineno, name
            for alias in node.names:  # ``from protocol import session`` names a module too
                yield node.lineno, f"{name}.{alias.name}" if name else alias.name


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    if isinstance(node.func, ast.Name):
        return node.func.id
    return None


def check_source(source: str, module: str, path: str = "<string>") -> list[Violation]:
    """Every layering violation in one module's source; ``module`` is its dotted name."""
    tree = ast.parse(source, filename=path)
    package = module.split(".")[0]
    is_package = path.endswith("__init__.py")
    found: list[Violation] = []
    for line, name in imported_modules(tree, module, is_package):
        top = name.split(".")[0]
        if package in PURE and top in BANNED_IN_PURE:
            found.append(Violation(path, line, f"{package}/ imports {name}"))
        if top in OURS:
            allowed = ALLOWED.get(package)
            if allowed is not None and top not in allowed:
                found.append(Violation(path, line, f"{package}/ imports {top}"))
            if top in FORBIDDEN.get(package, frozenset()):
                found.append(Violation(path, line, f"{package}/ imports {top}"))
    if package == "coordinator":
        found += _coordinator_part_violations(tree, module, is_package, path)
    if package in PURE:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                called = _call_name(node)
                if called in CLOCK_CALLS:
                    found.append(
                        Violation(path, node.lineno, f"{package}/ reads a clock: {called}()")
                    )
                if called in DYNAMIC_IMPORTS:
                    found.append(Violation(path, node.lineno, f"{package}/ imports dynamically"))
    return found


def _coordinator_part_violations(
    tree: ast.AST, module: str, is_package: bool, path: str
) -> list[Violation]:
    parts = module.split(".")
    if len(parts) < 2:
        return []  # coordinator/__init__
    part = parts[1]
    if part not in COORDINATOR_PARTS:
        return [Violation(path, 1, f"coordinator/{part} is in no layer of COORDINATOR_PARTS")]
    allowed = COORDINATOR_PARTS[part]
    found: list[Violation] = []
    for line, name in imported_modules(tree, module, is_package):
        names = name.split(".")
        if names[0] != "coordinator" or len(names) < 2 or allowed is None:
            continue
        other = names[1]
        if other != part and other not in allowed and other in COORDINATOR_PARTS:
            found.append(Violation(path, line, f"coordinator/{part} imports coordinator/{other}"))
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _check_package(package: str) -> list[Violation]:
    found: list[Violation] = []
    for path in _sources(package):
        source = path.read_text(encoding="utf-8")
        found += check_source(source, _module_name(path), str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", [*PURE, "agent", "coordinator", "client"])
def test_layering_package_imports_go_one_way(package: str) -> None:
    if package in PURE:
        assert _sources(package), f"{package}/ has no modules: is ROOT right?"
    violations = _check_package(package)
    assert not violations, "\n".join(map(str, violations))


# --------------------------------------------------------------------------
# the checker itself


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("import time\n", "protocol.codec"),
        ("import time as clock\n", "scheduler.plan"),
        ("from time import monotonic\n", "scheduler.plan"),
        ("import asyncio.queues\n", "protocol.session"),
        ("from datetime import datetime\n", "scheduler.tiers"),
        ("from sqlalchemy.orm import Session\n", "scheduler.plan"),
        ("import random\n", "protocol.frames"),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import websockets\n",
            "protocol.codec",
        ),
        ("def f():\n    import socket\n", "protocol.codec"),
        ("from scheduler import plan\n", "protocol.codec"),
        ("from coordinator.db import Job\n", "scheduler.plan"),
        ("from ..scheduler import plan\n", "protocol.codec"),
        ("from .. import coordinator\n", "scheduler.plan"),
        ("from coordinator import app\n", "agent.runner"),
        ("import webui\n", "agent.runner"),
        ("from scheduler.lease import grant\n", "agent.runner"),
        ("from agent.runner import run\n", "coordinator.app"),
        ("from coordinator.web.base import render\n", "coordinator.store.models"),
        ("from coordinator.store import models\n", "coordinator.meshes.glb"),
        ("from coordinator.link import agentlink\n", "coordinator.web.contribute"),
        ("from coordinator.web import base\n", "coordinator.api.v1"),
        ("from coordinator import web\n", "coordinator.services.jobs"),
        ("from ..web import base\n", "coordinator.farm.engine"),
        ("import os\n", "coordinator.newpart.thing"),
        ("def f(loop):\n    return loop.time_ns()\n", "protocol.session"),
        ("def f(clock):\n    return clock.monotonic()\n", "scheduler.lease"),
        ("def f(dt):\n    return dt.now()\n", "scheduler.lease"),
        ("mod = __import__('time')\n", "protocol.codec"),
        ("import importlib\nm = importlib.import_module('time')\n", "protocol.codec"),
    ],
)
def test_layering_checker_catches_violation(source: str, module: str) -> None:
    assert check_source(source, module), f"missed a violation in {module}: {source!r}"


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("from protocol.messages import Hello\n", "scheduler.plan"),
        ("from . import messages\n", "protocol.codec"),
        ("from .errors import ProtocolError\n", "protocol.codec"),
        ("from scheduler.tiers import Tier\n", "scheduler.plan"),
        ("import timeit_like_but_not_time\n", "protocol.codec"),
        ("import dataclasses, math, hashlib, struct\n", "protocol.frames"),
        ("def plan(now: float) -> float:\n    return now + 1\n", "scheduler.plan"),
        ("import asyncio, websockets, time\nfrom protocol import encode\n", "agent.loop"),
        ("import asyncio\nfrom scheduler import plan\nfrom webui import x\n", "coordinator.app"),
        ("from coordinator.services import jobs\n", "coordinator.web.pages"),
        ("from coordinator.store import models\n", "coordinator.farm.engine"),
        ("from coordinator.web import base\n", "coordinator.cli.demo"),
        ("from . import units\n", "coordinator.farm.engine"),
    ],
)
def test_layering_checker_allows_legal_imports(source: str, module: str) -> None:
    assert check_source(source, module) == []


def test_layering_checker_reports_file_and_line() -> None:
    (violation,) = check_source('"""doc"""\n\nimport time\n', "protocol.x", "protocol/x.py")
    assert str(violation) == "protocol/x.py:3: protocol/ imports time"


def test_layering_relative_import_in_package_init_resolves_to_the_package() -> None:
    tree = ast.parse("from .codec import encode\nfrom .. import agent\n")
    names = [name for _, name in imported_modules(tree, "protocol", is_package=True)]
    assert names[:2] == ["protocol.codec", "protocol.codec.encode"]
    assert "agent" in names  # '..' from protocol/__init__ escapes to the top level


# --------------------------------------------------------------------------
# tests share code only through tests/support


def _test_module_imports(path: Path) -> list[str]:
    """Imports in a test file that reach another test module instead of tests.support."""
    local = {p.stem for p in path.parent.glob("*.py")}
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for line, name in imported_modules(tree, _module_name(path), path.name == "__init__.py"):
        top = name.split(".")[0]
        if top == "tests" and name not in ("tests", "tests.support"):
            if not name.startswith("tests.support."):
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {name}")
        elif top in local and top not in OURS:
            found.append(f"{path.relative_to(ROOT)}:{line}: imports the test module {top}")
    return found


def test_layering_tests_import_helpers_only_from_tests_support() -> None:
    paths = [p for p in sorted((ROOT / "tests").rglob("*.py")) if "support" not in p.parts]
    assert len(paths) > 20
    found = [violation for path in paths for violation in _test_module_imports(path)]
    assert not found, "\n".join(found)
