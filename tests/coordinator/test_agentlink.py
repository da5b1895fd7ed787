"""Agent link behaviour behind the load benchmarks (surgical fixes, each pinned by a test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event

from protocol import Accepted, Assign, Progress, ResultAck
from tests.support.agentws import farm


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
