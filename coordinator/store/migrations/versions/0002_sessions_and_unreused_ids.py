"""server-side login sessions; user and audit ids never reused

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00

SQLite gives a deleted row's id to the next insert unless the table is
AUTOINCREMENT, and that cannot be switched on in place: ``users`` and
``audit_log`` are rebuilt (env.py turns foreign keys off first, or dropping the
old ``users`` would cascade into jobs, agents and keys). The users' sequence
starts past every id the database still names, audit actors included, so a user
deleted before this upgrade does not come back either. PostgreSQL's sequences
never go back: there only the columns change.

``users.session_version`` goes: sessions are rows now, and every cookie signed
before this upgrade names none, so all users log in again once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _seed_sqlite_sequence(table: str, floor_sql: str) -> None:
    """Make the next id of ``table`` larger than ``floor_sql`` (a scalar query)."""
    bind = op.get_bind()
    floor = int(bind.exec_driver_sql(floor_sql).scalar() or 0)
    updated = bind.exec_driver_sql(
        "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (floor, table)
    ).rowcount
    if not updated:
        bind.exec_driver_sql(
            "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, floor)
        )


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        with op.batch_alter_table(
            "users", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ) as batch_op:
            batch_op.drop_column("session_version")
        with op.batch_alter_table(
            "audit_log", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
        _seed_sqlite_sequence(
            "users",
            "SELECT max(coalesce((SELECT max(id) FROM users), 0),"
            " coalesce((SELECT max(actor_id) FROM audit_log), 0))",
        )
        _seed_sqlite_sequence("audit_log", "SELECT coalesce(max(id), 0) FROM audit_log")
    else:
        op.drop_column("users", "session_version")

    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_seen_at", sa.Float(), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sessions_user_id"), ["user_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_sessions_last_seen_at"), ["last_seen_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_last_seen_at"))
        batch_op.drop_index(batch_op.f("ix_sessions_user_id"))
    op.drop_table("sessions")
    # Ids stay unreused (AUTOINCREMENT is kept on SQLite): handing them out again
    # is exactly what this revision fixed.
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("session_version", sa.Integer(), nullable=False, server_default="1")
        )
