"""Hot-path statements through the sqlite3 cursor: the same rows, values and types as
SQLAlchemy's execute, inside the unit's transaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Table, bindparam, create_engine, insert, select, update

from coordinator.farm import lifecycle
from coordinator.store import models
from coordinator.store.migrations import upgrade
from coordinator.store.prepared import Prepared

_JOBS = cast(Table, models.Job.__table__)


def _job(job_id: str, user_id: int, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c.key: None for c in _JOBS.c}
    row.update(
        id=job_id, user_id=user_id, prompt="a cup", prompt_folded="a cup", seed=7,
        guidance=3.5, steps=8, model="shap-e", state="queued", attempt=0, attempt_base=0,
        priority=0, public=False, hidden=False, like_count=0, created_at=1.5,
        enqueued_at=1.5, mesh_target_faces=5000, mesh_printable=True,
    )  # fmt: skip
    row.update(changes)
    return row


async def test_prepared_statements_match_sqlalchemy_and_stay_in_the_transaction(
    tmp_path: Path,
) -> None:
    await upgrade(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    with engine.connect() as db:
        user = db.execute(
            insert(models.User).values(username="ann", password_hash="x", created_at=0.0)
        ).inserted_primary_key[0]
        db.commit()
        keys = tuple(c.key for c in _JOBS.c)
        Prepared(insert(_JOBS), keys).many(db, [_job("a", user), _job("b", user)])
        db.execute(insert(_JOBS), [_job("c", user)])
        rows = {r.id: dict(r._mapping) for r in db.execute(select(_JOBS))}
        assert rows["a"] == rows["b"] | {"id": "a"} == rows["c"] | {"id": "a"}
        assert rows["a"]["mesh_printable"] is True and rows["a"]["public"] is False

        claimed = lifecycle.claim(db, "agent-1", ("a", "nope"))  # Prepared
        assert [(s.job, s.attempt, s.mesh.printable if s.mesh else None) for s in claimed] == [
            ("a", 1, True)
        ]
        assert lifecycle.start(db, "a", 1, 2.5) and not lifecycle.start(db, "a", 9, 2.5)
        finished = lifecycle.succeed(db, "a", 1, 3.5)
        assert finished is not None
        assert finished == dict(db.execute(select(_JOBS).where(_JOBS.c.id == "a")).one()._mapping)
        assert finished["state"] == "succeeded" and finished["mesh_printable"] is True
        assert type(finished["public"]) is bool and finished["finished_at"] == 3.5
        assert lifecycle.succeed(db, "a", 1, 4.0) is None  # moved on: no row
        db.rollback()  # all of it was in the connection's transaction
        assert db.execute(select(_JOBS.c.id)).all() == []


def test_prepared_leaves_expanding_statements_to_sqlalchemy_and_wants_every_value(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'q.db'}")
    models.Base.metadata.create_all(engine)
    with engine.connect() as db:
        db.execute(insert(models.User).values(username="ann", password_hash="x", created_at=0.0))
        users = cast(Table, models.User.__table__)
        expanding = Prepared(select(users.c.username).where(users.c.username.in_(["ann", "bo"])))
        assert expanding.first(db, {}) == {"username": "ann"}
        touch = Prepared(
            update(users).where(users.c.username == bindparam("b_name")).values(credit=2.5)
        )
        assert touch.rowcount(db, {"b_name": "ann"}) == 1
        with pytest.raises(KeyError, match="b_name"):
            touch.rowcount(db, {})
