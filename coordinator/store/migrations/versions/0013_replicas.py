"""replicas: the coordinator processes sharing one PostgreSQL database (their heartbeats),
which replica holds each connected agent (and what the leader plans with), and the
leader's fencing epoch (with its fair-share state, for the next leader)

Revision ID: 0013_replicas
Revises: 0012_job_webhooks
Create Date: 2026-12-03 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_replicas"
down_revision = "0012_job_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_replicas_heartbeat_at", "replicas", ["heartbeat_at"])
    op.create_table(
        "agent_presence",
        sa.Column(
            "agent_id",
            sa.String(32),
            sa.ForeignKey("agents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("replica_id", sa.String(32), nullable=False),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("models", sa.Text(), nullable=False),
        sa.Column("max_batch", sa.Integer(), nullable=False),
        sa.Column("max_steps", sa.Integer(), nullable=False),
        sa.Column("preferred_users", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_agent_presence_replica_id", "agent_presence", ["replica_id"])
    op.create_table(
        "replica_leadership",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("replica_id", sa.String(32), nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
        sa.Column("fair_state", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("replica_leadership")
    op.drop_index("ix_agent_presence_replica_id", "agent_presence")
    op.drop_table("agent_presence")
    op.drop_index("ix_replicas_heartbeat_at", "replicas")
    op.drop_table("replicas")
