"""Agent link behaviour behind the load benchmarks (surgical fixes, each pinned by a test)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from coordinator.link import agentlink, results
from protocol import Accepted, Assign, Progress, ResultAck
from tests.support.agentws import farm, valid_glb
from tests.support.coordinators import TWO_A_DAY


def test_agentlink_only_the_first_progress_of_an_attempt_touches_the_database(
    tmp_path: Path,
) -> None:
    with farm(tmp_path, agents=1, lease_s=600.0) as f:
        job = f.submit()
        statements: list[str] = []

        def count(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
            statements.append(sql)

        engine = f.state.sessions.kw["bind"].sync_engine
        with f.connect(f.tokens[0]) as agent:
            spec = agent.receive_until(Assign)
            assert isinstance(spec, Assign)
            attempt = spec.jobs[0].attempt
            agent.send(Accepted(job=job, attempt=attempt))
            assert isinstance(agent.probe(), ResultAck)  # the accepted was handled
            assert f.job(job)["state"] == "running"
            event.listen(engine, "before_cursor_execute", count)
            try:
                for step in range(1, 51):
                    agent.send(Progress(job=job, attempt=attempt, stage="sampling",
                                        step=step, total=50))  # fmt: skip
                assert isinstance(agent.probe(), ResultAck)
            finally:
                event.remove(engine, "before_cursor_execute", count)
            live = f.job(job)["progress"]
            assert (live["step"], live["total"]) == (50, 50)
        # 50 progress messages: no job row read or written (the probe reads one row).
        assert not [s for s in statements if "UPDATE jobs" in s], statements
        assert len(statements) <= 2, statements


def test_agentlink_the_next_job_goes_out_and_comes_back_while_a_result_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent is free once its upload is in: its next assign does not wait for the
    previous result's check, write and commit, and the connection is read meanwhile (the
    next result is stored and acknowledged while the first is still held back)."""
    storing = threading.Event()
    proceed = threading.Event()
    check_and_write = results._check_and_write

    def held_back(farm: Any, job_id: str, *args: Any) -> Any:
        if job_id == held[0]:
            storing.set()
            if not proceed.wait(10):
                raise AssertionError("the test never let the store go on")
        return check_and_write(farm, job_id, *args)

    held: list[str] = []
    monkeypatch.setattr(results, "_check_and_write", held_back)
    tiers = tmp_path / "tiers.toml"  # the user may have two jobs running at once
    tiers.write_text(TWO_A_DAY.replace("max_concurrent = 1", "max_concurrent = 2"))
    with farm(tmp_path, agents=1, lease_s=600.0, tiers_file=tiers) as f:
        first, second = f.submit(), f.submit()
        held.append(first)
        with f.connect(f.tokens[0]) as agent:
            assign = agent.receive_until(Assign)
            assert isinstance(assign, Assign) and assign.jobs[0].job == first
            agent.send(Accepted(job=first, attempt=1))
            agent.upload(first, 1, valid_glb())
            nxt = agent.receive_until(Assign)  # the first result's store cannot have ended
            assert isinstance(nxt, Assign) and nxt.jobs[0].job == second
            assert storing.wait(10)  # it was (or is about to be) held back
            agent.send(Accepted(job=second, attempt=1))
            agent.upload(second, 1, valid_glb(2))
            ack = agent.receive_until(ResultAck)
            assert isinstance(ack, ResultAck) and (ack.job, ack.status) == (second, "stored")
            assert not proceed.is_set()  # the first is still being stored
            proceed.set()
            ack = agent.receive_until(ResultAck, job=first)
            assert isinstance(ack, ResultAck) and ack.status == "stored"
        assert f.job(first)["state"] == f.job(second)["state"] == "succeeded"


def test_agentlink_bounds_the_results_of_one_connection_taken_in_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_INTAKE results being stored, the next waits (the connection is not read)."""
    monkeypatch.setattr(agentlink, "MAX_INTAKE", 1)
    proceed = threading.Event()
    entered = threading.Semaphore(0)
    check_and_write = results._check_and_write

    def held_back(*args: Any) -> Any:
        entered.release()
        if not proceed.wait(10):
            raise AssertionError("the test never let the store go on")
        return check_and_write(*args)

    monkeypatch.setattr(results, "_check_and_write", held_back)
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(TWO_A_DAY.replace("max_concurrent = 1", "max_concurrent = 2"))
    with farm(tmp_path, agents=1, lease_s=600.0, tiers_file=tiers) as f:
        first, second = f.submit(), f.submit()
        with f.connect(f.tokens[0]) as agent:
            agent.receive_until(Assign)
            agent.upload(first, 1, valid_glb())
            agent.receive_until(Assign)
            assert entered.acquire(timeout=10)  # the first is being stored
            agent.upload(second, 1, valid_glb(2))
            assert not entered.acquire(timeout=1.0)  # with a bound of 4 it would start
            proceed.set()
            assert entered.acquire(timeout=10)
            acks = [agent.receive_until(ResultAck), agent.receive_until(ResultAck)]
            assert {(a.job, a.status) for a in acks if isinstance(a, ResultAck)} == {
                (first, "stored"),
                (second, "stored"),
            }
