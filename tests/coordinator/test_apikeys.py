from __future__ import annotations

from pathlib import Path

from coordinator.cli.admin_cli import admin_db
from coordinator.services import apikeys
from coordinator.store import models
from tests.support.coordinators import make_settings


async def test_apikeys_authenticate_and_last_used_to_the_minute(tmp_path: Path) -> None:
    async with admin_db(make_settings(tmp_path)) as db:
        user = models.User(username="alice", password_hash="x", created_at=0.0)
        db.add(user)
        await db.flush()
        key, token = await apikeys.create(db, user, "laptop", now=0.0)
        await db.commit()
        assert token.startswith("sfk.") and key.key_hash not in token
        seen = []
        for now in (1000.0, 1030.0, 1061.0):
            assert (await apikeys.authenticate(db, token, now)) is not None
            seen.append(key.last_used_at)
        assert seen == [1000.0, 1000.0, 1061.0]
        wrong = token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")
        for bad in (wrong, "sfk.nope.secret", "sfa." + token[4:], "garbage"):
            assert await apikeys.authenticate(db, bad, 2000.0) is None
        assert await apikeys.revoke(db, user, key.id)
        await db.commit()
        assert await apikeys.authenticate(db, token, 2000.0) is None
