"""Migrations over a database that holds data: nothing lost, no id handed out twice."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from coordinator.store.migrations import upgrade_sync


def _db(tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "shapefarm.db"
    return f"sqlite+aiosqlite:///{path}", path


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys=ON")  # as the app runs it
    return conn


def _add_user(conn: sqlite3.Connection, name: str) -> int:
    cursor = conn.execute(
        "INSERT INTO users (username, password_hash, is_admin, tier, banned, credit, created_at)"
        " VALUES (?, 'x', 0, 'free', 0, 0, 1)",
        (name,),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _add_audit(conn: sqlite3.Connection, actor: int | None) -> int:
    cursor = conn.execute(
        "INSERT INTO audit_log (at, actor_id, action, target, detail) VALUES (1, ?, 'x', '', '')",
        (actor,),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def test_migrations_0002_keeps_data_and_never_reuses_ids(tmp_path: Path) -> None:
    url, path = _db(tmp_path)
    upgrade_sync(url, "0001")
    with _connect(path) as conn:
        conn.execute(
            "INSERT INTO users (username, password_hash, is_admin, tier, banned,"
            " session_version, credit, created_at) VALUES ('alice', 'h', 0, 'free', 0, 1, 0, 1)"
        )
        for name in ("bob", "carol", "dave"):
            conn.execute(
                "INSERT INTO users (username, password_hash, is_admin, tier, banned,"
                " session_version, credit, created_at) VALUES (?, 'h', 0, 'free', 0, 1, 0, 1)",
                (name,),
            )
        for i, owner in enumerate((1, 1, 2, 3)):
            conn.execute(
                "INSERT INTO jobs (id, user_id, prompt, seed, guidance, steps, model, state,"
                " attempt, attempt_base, priority, public, created_at, enqueued_at)"
                " VALUES (?, ?, 'a chair', 1, 3, 8, 'm', 'queued', 0, 0, 0, 0, 1, 1)",
                (f"job{i}", owner),
            )
        conn.execute(
            "INSERT INTO api_keys (id, user_id, name, key_hash, created_at)"
            " VALUES ('k1', 2, 'key', 'h', 1)"
        )
        for actor in (4, 4, None):
            conn.execute(
                "INSERT INTO audit_log (at, actor_id, action, target, detail)"
                " VALUES (1, ?, 'user.ban', 'bob', '')",
                (actor,),
            )
        # dave (id 4, the newest) goes before the upgrade: without care the
        # upgraded table would hand out 4 again, to someone the audit log then blames.
        conn.execute("DELETE FROM users WHERE id = 4")

    upgrade_sync(url)

    with _connect(path) as conn:
        users = conn.execute("SELECT id, username FROM users ORDER BY id").fetchall()
        assert users == [(1, "alice"), (2, "bob"), (3, "carol")]
        jobs = conn.execute("SELECT id, user_id FROM jobs ORDER BY id").fetchall()
        assert jobs == [("job0", 1), ("job1", 1), ("job2", 2), ("job3", 3)]
        assert conn.execute("SELECT user_id FROM api_keys").fetchall() == [(2,)]
        columns = {row[1] for row in conn.execute("PRAGMA table_info(users)")}
        assert "session_version" not in columns
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []

        erin = _add_user(conn, "erin")
        assert erin == 5  # past dave, whom the audit log still names
        conn.execute("DELETE FROM users WHERE id = ?", (erin,))
        assert _add_user(conn, "frank") == 6
        # Deleting a user still cascades to what it owns, and only that.
        conn.execute("DELETE FROM users WHERE id = 1")
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (2,)

        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (3,)
        entry = _add_audit(conn, None)
        assert entry == 4
        conn.execute("DELETE FROM audit_log WHERE id = ?", (entry,))
        assert _add_audit(conn, None) == 5


def test_migrations_fresh_database_never_reuses_ids(tmp_path: Path) -> None:
    url, path = _db(tmp_path)
    upgrade_sync(url)
    with _connect(path) as conn:
        first = _add_user(conn, "alice")
        conn.execute("DELETE FROM users WHERE id = ?", (first,))
        assert _add_user(conn, "bob") == first + 1


def test_migrations_head_matches_the_models(tmp_path: Path) -> None:
    """The ORM models and the migrated schema agree (tables, columns, indexes)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from coordinator.store import models

    url, path = _db(tmp_path)
    upgrade_sync(url, "head")
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), models.Base.metadata)
    finally:
        engine.dispose()
    assert diffs == []


def test_migrations_0005_subscriptions_upgrade_and_downgrade(tmp_path: Path) -> None:
    url, path = _db(tmp_path)
    upgrade_sync(url, "head")
    with _connect(path) as conn:
        uid = _add_user(conn, "alice")
        conn.execute(
            "INSERT INTO vouchers (code_hash, hint, tier, days, max_uses, uses, note, revoked,"
            " created_at) VALUES ('h', 'ABCD', 'plus', 30, 1, 0, '', 0, 1)"
        )
        conn.execute("INSERT INTO voucher_redemptions VALUES (1, ?, 1)", (uid,))
        try:
            conn.execute("INSERT INTO voucher_redemptions VALUES (1, ?, 2)", (uid,))
        except sqlite3.IntegrityError:
            pass
        else:
            raise AssertionError("a second redemption of one code by one user was stored")
        conn.execute("DELETE FROM users WHERE id = ?", (uid,))
        assert conn.execute("SELECT count(*) FROM voucher_redemptions").fetchone() == (0,)
    from alembic import command

    from coordinator.store.migrations import alembic_config

    command.downgrade(alembic_config(url), "0004_drop_job_lease_expiry")
    with _connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "subscriptions" not in tables and "vouchers" not in tables


def test_migration_0006_backfills_folded_prompts(tmp_path: Path) -> None:
    url, path = _db(tmp_path)
    upgrade_sync(url, "0003_user_locale")
    with _connect(path) as conn:
        owner = _add_user(conn, "alice")
        for i, prompt in enumerate(("Красный СТУЛ", "Große Straße", "a Lamp")):
            conn.execute(
                "INSERT INTO jobs (id, user_id, prompt, seed, guidance, steps, model, state,"
                " attempt, attempt_base, priority, public, created_at, enqueued_at)"
                " VALUES (?, ?, ?, 1, 3, 8, 'm', 'queued', 0, 0, 0, 0, 1, 1)",
                (f"job{i}", owner, prompt),
            )
    upgrade_sync(url)
    with _connect(path) as conn:
        rows = conn.execute("SELECT id, prompt_folded FROM jobs ORDER BY id").fetchall()
    assert rows == [("job0", "красный стул"), ("job1", "grosse strasse"), ("job2", "a lamp")]


def test_migration_0007_mail_keeps_users_and_jobs_and_goes_back(tmp_path: Path) -> None:
    from alembic import command

    from coordinator.store.migrations import alembic_config

    url, path = _db(tmp_path)
    upgrade_sync(url, "0003_user_locale")
    with _connect(path) as conn:
        conn.execute(
            "INSERT INTO users (username, email, password_hash, is_admin, tier, banned, credit,"
            " created_at) VALUES ('alice', 'a@example.org', 'h', 0, 'free', 0, 0, 1)"
        )
        conn.execute(
            "INSERT INTO jobs (id, user_id, prompt, seed, guidance, steps, model, state,"
            " attempt, attempt_base, priority, public, created_at, enqueued_at)"
            " VALUES ('job1', 1, 'a chair', 1, 3, 8, 'm', 'succeeded', 1, 0, 0, 0, 1, 1)"
        )
    upgrade_sync(url)
    with _connect(path) as conn:
        # Existing addresses start unproven; nobody is opted in; no job counts as mailed.
        assert conn.execute(
            "SELECT email, email_verified_at, notify_email FROM users"
        ).fetchall() == [("a@example.org", None, 0)]
        assert conn.execute("SELECT notified_at FROM jobs").fetchall() == [(None,)]
        assert conn.execute("SELECT count(*) FROM mail_tokens").fetchone() == (0,)
        assert _add_user(conn, "bob") == 2
    command.downgrade(alembic_config(url), "0006_gallery")
    with _connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(users)")}
        assert "notify_email" not in columns and "email_verified_at" not in columns
        assert conn.execute("SELECT username FROM users ORDER BY id").fetchall() == [
            ("alice",),
            ("bob",),
        ]
    upgrade_sync(url)
