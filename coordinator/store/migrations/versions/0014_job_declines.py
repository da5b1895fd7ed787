"""declines kept: the agents whose owners' blocklists refused a job are never offered it
again, also after a restart and on every replica

Revision ID: 0014_job_declines
Revises: 0013_replicas
Create Date: 2026-12-03 04:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_job_declines"
down_revision = "0013_replicas"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_declines",
        sa.Column(
            "job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("agent_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "agent_id"),
    )


def downgrade() -> None:
    op.drop_table("job_declines")
