from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from agent import keeper as keeper_module
from agent.keeper import Keeper
from agent.spool import Spool, SpooledResult
from tests.support.agent_fakes import TIMEOUT_S


class GatedSpool(Spool):
    """Disk writes wait for their job's gate."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gates: dict[str, threading.Event] = {}

    def put(self, result: SpooledResult) -> None:
        if not self.gates.setdefault(result.job, threading.Event()).wait(TIMEOUT_S):
            raise AssertionError("the test never opened the gate")
        super().put(result)


def result(job: str) -> SpooledResult:
    return SpooledResult(job, 1, (("glb", job.encode() * 10),))


async def test_keeper_bounds_the_writes_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keeper_module, "MAX_WRITES", 2)
    spool = GatedSpool(tmp_path)
    keeper = Keeper(spool)
    await keeper.keep(result("a"))
    await keeper.keep(result("b"))
    third = asyncio.create_task(keeper.keep(result("c")))
    for _ in range(20):  # give it every chance to get past the bound
        await asyncio.sleep(0)
    assert not third.done() and ("c", 1) not in spool  # waits: two writes in flight
    spool.gates.setdefault("b", threading.Event()).set()
    async with asyncio.timeout(TIMEOUT_S):
        await third
    assert ("c", 1) in spool and keeper.writing(("c", 1)) and not keeper.writing(("b", 1))
    for job in ("a", "c"):
        spool.gates.setdefault(job, threading.Event()).set()
    async with asyncio.timeout(TIMEOUT_S):
        await keeper.flush()
    assert sorted(Spool(tmp_path).pending()) == [("a", 1), ("b", 1), ("c", 1)]


async def test_keeper_discard_waits_for_the_write(tmp_path: Path) -> None:
    spool = GatedSpool(tmp_path)
    keeper = Keeper(spool)
    await keeper.keep(result("a"))
    keeper.discard_later(("a", 1))  # acknowledged while its write still runs
    spool.gates.setdefault("a", threading.Event()).set()
    async with asyncio.timeout(TIMEOUT_S):
        await keeper.flush()
    assert spool.pending() == [] and not (tmp_path / "a.1").exists()
    assert Spool(tmp_path).pending() == []
