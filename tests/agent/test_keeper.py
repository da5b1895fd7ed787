"""The keeper between a finished result and the disk: a result the coordinator
acknowledges within the grace is never written; one it does not is written after it;
held results and writes in flight are bounded; a stop writes everything held."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from agent import keeper as keeper_module
from agent.keeper import Keeper
from agent.spool import Spool, SpooledResult
from tests.support.agent_fakes import TIMEOUT_S
from tests.support.coordinators import wait_for

LONG_S = 60.0  # a grace no test waits out


class GatedSpool(Spool):
    """Disk writes wait for their job's gate; the jobs whose write began are noted."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gates: dict[str, threading.Event] = {}
        self.begun: list[str] = []

    def gate(self, job: str) -> threading.Event:
        return self.gates.setdefault(job, threading.Event())

    def put(self, result: SpooledResult) -> None:
        self.begun.append(result.job)
        if not self.gate(result.job).wait(TIMEOUT_S):
            raise AssertionError("the test never opened the gate")
        super().put(result)


def result(job: str) -> SpooledResult:
    return SpooledResult(job, 1, (("glb", job.encode() * 10),))


def on_disk(root: Path) -> list[tuple[str, int]]:
    return sorted(Spool(root).pending())  # a fresh spool sees only what is on disk


async def settle() -> None:
    for _ in range(20):  # give every task its chance to run
        await asyncio.sleep(0)


async def test_a_result_acknowledged_within_the_grace_is_never_written(tmp_path: Path) -> None:
    spool = GatedSpool(tmp_path)
    keeper = Keeper(spool, write_after_s=LONG_S)
    held = await keeper.keep(result("a"))
    assert spool.recall(held.key) == held and ("a", 1) in spool.pending()  # uploadable
    await keeper.discard(("a", 1))  # the coordinator's result_ack
    async with asyncio.timeout(TIMEOUT_S):
        await keeper.flush()
    assert spool.begun == [] and spool.pending() == [] and on_disk(tmp_path) == []
    assert not keeper.writing(("a", 1))


async def test_a_result_not_acknowledged_is_written_after_the_grace(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    keeper = Keeper(spool, write_after_s=0.05)
    await keeper.keep(result("a"))
    assert on_disk(tmp_path) == [] and keeper.writing(("a", 1))

    async def written() -> bool:
        return not keeper.writing(("a", 1))

    await wait_for(written, TIMEOUT_S, "the write after the grace", interval=0.01)
    assert on_disk(tmp_path) == [("a", 1)]
    assert Spool(tmp_path).load("a", 1).artifacts == result("a").artifacts
    await keeper.discard(("a", 1))  # acknowledged late: deleted from disk
    assert on_disk(tmp_path) == []


async def test_a_stop_writes_every_held_result_at_once(tmp_path: Path) -> None:
    keeper = Keeper(Spool(tmp_path), write_after_s=LONG_S)
    for job in ("a", "b"):
        await keeper.keep(result(job))
    async with asyncio.timeout(TIMEOUT_S):
        await keeper.flush()
    assert on_disk(tmp_path) == [("a", 1), ("b", 1)]


async def test_held_results_are_bounded_and_the_oldest_written_to_make_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keeper_module, "MAX_HELD", 2)
    monkeypatch.setattr(keeper_module, "MAX_WRITES", 1)
    spool = GatedSpool(tmp_path)
    keeper = Keeper(spool, write_after_s=LONG_S)
    await keeper.keep(result("a"))
    await keeper.keep(result("b"))
    third = asyncio.create_task(keeper.keep(result("c")))
    await settle()
    assert not third.done() and ("c", 1) not in spool  # two held: it waits
    assert spool.begun == ["a"]  # the oldest is written at once, one write at a time
    spool.gate("a").set()
    async with asyncio.timeout(TIMEOUT_S):
        await third
    assert ("c", 1) in spool and not keeper.writing(("a", 1)) and keeper.writing(("c", 1))
    for job in ("b", "c"):
        spool.gate(job).set()
    async with asyncio.timeout(TIMEOUT_S):
        await keeper.flush()
    assert on_disk(tmp_path) == [("a", 1), ("b", 1), ("c", 1)]


async def test_a_discard_waits_for_a_write_that_began(tmp_path: Path) -> None:
    spool = GatedSpool(tmp_path)
    keeper = Keeper(spool, write_after_s=0)
    await keeper.keep(result("a"))

    async def begun() -> bool:
        return spool.begun == ["a"]

    await wait_for(begun, TIMEOUT_S, "the write to begin", interval=0.01)
    keeper.discard_later(("a", 1))  # acknowledged while its write still runs
    await settle()
    spool.gate("a").set()
    async with asyncio.timeout(TIMEOUT_S):
        await keeper.flush()
    assert spool.pending() == [] and on_disk(tmp_path) == []


async def test_held_bytes_are_bounded_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keeper_module, "MAX_HELD_BYTES", 15)  # each result is 10 bytes
    spool = GatedSpool(tmp_path)
    keeper = Keeper(spool, write_after_s=LONG_S)
    await keeper.keep(result("a"))
    await keeper.keep(result("b"))  # 10 < 15 held before it: let in
    assert keeper.held_bytes == 20
    third = asyncio.create_task(keeper.keep(result("c")))
    await settle()
    assert not third.done() and spool.begun == ["a", "b"]  # both written to make room
    spool.gate("a").set()
    async with asyncio.timeout(TIMEOUT_S):
        await third
    for job in ("b", "c"):
        spool.gate(job).set()
    async with asyncio.timeout(TIMEOUT_S):
        await keeper.flush()
    assert keeper.held_bytes == 0 and on_disk(tmp_path) == [("a", 1), ("b", 1), ("c", 1)]
