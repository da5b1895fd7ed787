"""agent presence: when the holding replica took the agent's connection, so the admin
pages of the other replicas show its uptime

Revision ID: 0017_presence_connected_at
Revises: 0016_job_mail_outbox
Create Date: 2026-12-03 15:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_presence_connected_at"
down_revision = "0016_job_mail_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "agent_presence",
        sa.Column("connected_at", sa.Float(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("agent_presence", "connected_at")  # SQLite >= 3.35 drops columns in place
