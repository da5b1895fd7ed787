"""webhook outbox: a job's end and its deliveries kept until sent, across restarts and
replicas

Revision ID: 0015_webhook_outbox
Revises: 0014_job_declines
Create Date: 2026-12-03 15:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_webhook_outbox"
down_revision = "0014_job_declines"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "api_key_id",
            sa.String(32),
            sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("url", sa.String(2000), nullable=True),
        sa.Column("per_job", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("delivery_id", sa.String(32), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("claim", sa.String(32), nullable=True),
        sa.Column("claimed_until", sa.Float(), nullable=False, server_default="0"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_webhook_outbox_next_at", "webhook_outbox", ["next_at"])
    op.create_index("ix_webhook_outbox_key_id", "webhook_outbox", ["api_key_id"])
    op.create_index("ix_webhook_outbox_job_id", "webhook_outbox", ["job_id"])


def downgrade() -> None:
    op.drop_table("webhook_outbox")
