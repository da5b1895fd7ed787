"""The order the suite runs in: the expensive tests first, on both workers at once.

pytest-xdist's ``worksteal`` gives the first idle worker the first half of the collected
tests and the other worker the second half; a worker that runs out steals from the END
of the other's queue. In collection (file) order the browser and integration tests sat
in the middle and near the end of the halves, so a run often ended with one worker in a
30 s browser test while the other had nothing left to steal.

Here the tests are reordered, keeping what runs together together:

- a unit is one test, or a whole module when its tests share a module-scoped fixture,
  or every test that uses one of SHARED_FIXTURES (the session's PostgreSQL cluster), so
  that one worker sets such a fixture up once;
- the heavy units (marked ``browser`` or ``slow``) are spread over the two halves by
  weight, the heaviest first, and each half starts with its heavy units;
- the light tests fill each half up to the count xdist will send it, in collection order.

Every test still runs exactly once and by itself; only the order changes. Without xdist
the same order is used, which is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

# Rough relative costs; only their order of magnitude matters.
BROWSER_WEIGHT = 10.0
SLOW_WEIGHT = 5.0
LIGHT_WEIGHT = 0.1
# Session-scoped fixtures that are expensive to set up (tests/conftest.py): their tests
# run on one worker, which starts the resource once.
SHARED_FIXTURES = ("migrated_postgres",)


def item_weight(item: pytest.Item) -> float:
    if item.get_closest_marker("browser") is not None:
        return BROWSER_WEIGHT
    if item.get_closest_marker("slow") is not None:
        return SLOW_WEIGHT
    return LIGHT_WEIGHT


def _unit_key(item: pytest.Item) -> object:
    """What the item must run together with: a shared fixture's name, its module, or
    nothing (the item itself)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return item
    for name in SHARED_FIXTURES:
        if name in info.name2fixturedefs:
            return name
    if any(
        defs and defs[-1].scope in ("module", "package", "class")
        for defs in info.name2fixturedefs.values()
    ):
        return item.nodeid.split("::", 1)[0]
    return item


@dataclass
class _Unit:
    items: list[pytest.Item]
    weight: float = 0.0
    heavy: bool = False


@dataclass
class _Half:
    heavy: list[_Unit] = field(default_factory=list)
    weight: float = 0.0

    @property
    def count(self) -> int:
        return sum(len(unit.items) for unit in self.heavy)


def _units(items: Sequence[pytest.Item]) -> list[_Unit]:
    """Tests grouped into units in collection order (see the module docstring)."""
    grouped: dict[object, _Unit] = {}
    units: list[_Unit] = []
    for item in items:
        key = _unit_key(item)
        unit = grouped.get(key)
        if unit is None:
            unit = grouped[key] = _Unit([])
            units.append(unit)
        unit.items.append(item)
        weight = item_weight(item)
        unit.weight += weight
        unit.heavy = unit.heavy or weight > LIGHT_WEIGHT
    return units


def heavy_first(items: Sequence[pytest.Item]) -> list[pytest.Item]:
    """The new order of ``items`` (a permutation of them)."""
    units = _units(items)
    # sorted() is stable: equal weights keep their collection order.
    heavy = sorted((u for u in units if u.heavy), key=lambda u: u.weight, reverse=True)
    light = [u for u in units if not u.heavy]
    halves = (_Half(), _Half())
    for unit in heavy:  # longest processing time first, onto the lighter half
        half = min(halves, key=lambda h: h.weight)
        half.heavy.append(unit)
        half.weight += unit.weight
    first = [item for unit in halves[0].heavy for item in unit.items]
    second = [item for unit in halves[1].heavy for item in unit.items]
    # xdist sends the first len // 2 tests to one worker: fill the first half up to that.
    light_items = [item for unit in light for item in unit.items]
    room = max(0, len(items) // 2 - len(first))
    ordered = first + light_items[:room] + second + light_items[room:]
    assert len(ordered) == len(items)
    return ordered


def order_heavy_first(items: list[pytest.Item]) -> None:
    items[:] = heavy_first(items)
