"""One owner for each piece of state, checked on the source with :mod:`ast`.

- Only ``coordinator/farm/`` changes the farm's attributes: everything else calls
  its methods (``Farm.drain_agent``, ``Farm.set_priority``, ...).
- Only ``coordinator/farm/lifecycle.py`` writes a job's state.
"""

from __future__ import annotations

import ast
from pathlib import Path

import jinja2
import jinja2.nodes
import pytest

ROOT = Path(__file__).resolve().parents[2]
COORDINATOR = ROOT / "coordinator"
MUTATORS = frozenset(
    {"add", "discard", "pop", "popitem", "update", "clear", "append", "extend", "remove",
     "setdefault", "insert"}
)  # fmt: skip


def _is_farm(node: ast.expr) -> bool:
    """``farm``, ``x.farm`` or ``farm_of(request)``."""
    if isinstance(node, ast.Name):
        return node.id == "farm"
    if isinstance(node, ast.Attribute):
        return node.attr == "farm"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id == "farm_of"
    return False


def _farm_attribute(node: ast.expr) -> str | None:
    """The farm attribute an expression reaches into (``farm.queue[x].y`` → queue)."""
    while isinstance(node, ast.Subscript | ast.Attribute):
        if isinstance(node, ast.Attribute) and _is_farm(node.value):
            return node.attr
        node = node.value
    return None


def farm_writes(source: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign | ast.Delete):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            name = _farm_attribute(target)
            if name is not None:
                found.append((node.lineno, f"assigns farm.{name}"))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in MUTATORS
        ):
            name = _farm_attribute(node.func.value)
            if name is not None:
                found.append((node.lineno, f"mutates farm.{name} with {node.func.attr}()"))
    return found


def _writes_columns(func: ast.expr) -> bool:
    """``update(...).values(...)``, ``insert(...)``, ``Job(...)``: calls whose ``state=``
    is a value written, not a filter."""
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in ("values", "insert", "Job")


def job_state_writes(source: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):  # a, b = ... unpacks into several targets
            targets = [
                t
                for tgt in node.targets
                for t in (tgt.elts if isinstance(tgt, ast.Tuple) else [tgt])
            ]
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and target.attr == "state"
                and not (isinstance(target.value, ast.Name) and target.value.id == "self")
            ):
                found.append((node.lineno, f"assigns {ast.unparse(target)}"))
        if isinstance(node, ast.Call) and _writes_columns(node.func):
            for keyword in node.keywords:
                if keyword.arg == "state":
                    found.append((node.lineno, f"passes state= to {ast.unparse(node.func)}"))
    return found


def _modules(exclude: Path | None = None) -> list[Path]:
    paths = sorted(COORDINATOR.rglob("*.py"))
    assert paths, "no coordinator modules: is ROOT right?"
    return [p for p in paths if exclude is None or not p.is_relative_to(exclude)]


def test_ownership_only_the_farm_package_changes_farm_state() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in _modules(exclude=COORDINATOR / "farm")
        for line, what in farm_writes(path.read_text(encoding="utf-8"))
    ]
    assert not found, "\n".join(found)


def test_ownership_only_the_lifecycle_module_writes_job_state() -> None:
    owner = COORDINATOR / "farm" / "lifecycle.py"
    writers = {
        str(path.relative_to(ROOT))
        for path in _modules()
        if "migrations" not in path.parts and job_state_writes(path.read_text(encoding="utf-8"))
    }
    assert writers == {str(owner.relative_to(ROOT))}


@pytest.mark.parametrize(
    "source",
    [
        "farm.queue[job.id] = x\n",
        "farm.drained.add(agent_id)\n",
        "self.farm.usage.setdefault(1, u)\n",
        "farm_of(request).avg_job_s = 3\n",
        "del farm.agents[conn.id]\n",
        "farm.version += 1\n",
        "farm.leases[j].x = 1\n",
    ],
)
def test_ownership_checker_catches_farm_writes(source: str) -> None:
    assert farm_writes(source)


@pytest.mark.parametrize(
    "source",
    ["farm.drain_agent(a)\n", "x = farm.queue.get(j)\n", "farms.add(x)\n", "conn.farm_id = 1\n"],
)
def test_ownership_checker_allows_reads_and_methods(source: str) -> None:
    assert farm_writes(source) == []


@pytest.mark.parametrize(
    "source",
    [
        "job.state = 'cancelled'\n",
        "job.state, job.error = a, b\n",
        "update(t).values(state='failed')\n",
        "models.Job(id=1, state='queued')\n",
    ],
)
def test_ownership_checker_catches_job_state_writes(source: str) -> None:
    assert job_state_writes(source)


@pytest.mark.parametrize(
    "source",
    [
        "self.state = State.READY\n",
        "x = job.state\n",
        "app.state.farm = farm\n",
        "jobs.list_jobs(db, state='failed')\n",
    ],
)
def test_ownership_checker_allows_session_state_reads_and_filters(source: str) -> None:
    assert job_state_writes(source) == []


TEMPLATES = ROOT / "webui" / "templates"


def farm_uses(source: str) -> list[int]:
    """Lines where a template uses the name ``farm`` (parsed by Jinja, so the word in
    text is not a use)."""
    env = jinja2.Environment(extensions=["jinja2.ext.i18n"])
    tree = env.parse(source)
    return [node.lineno for node in tree.find_all(jinja2.nodes.Name) if node.name == "farm"]


def test_ownership_templates_get_plain_values_not_the_farm() -> None:
    found = {
        str(path.relative_to(ROOT)): uses
        for path in sorted(TEMPLATES.rglob("*.html"))
        if (uses := farm_uses(path.read_text(encoding="utf-8")))
    }
    assert len(list(TEMPLATES.rglob("*.html"))) > 20
    assert not found, found


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("{% if not farm.agents %}x{% endif %}", True),
        ("{{ (farm.clock() - t)|duration }}", True),
        ("{% set live = describe(farm, job, positions) %}", True),
        ('{{ _("The farm right now") }}', False),
        ("{{ describe(job, positions) }} the farm", False),
    ],
)
def test_ownership_template_check_finds_the_farm(source: str, found: bool) -> None:
    assert bool(farm_uses(source)) is found
