"""job mail outbox: a finished job's "your model is ready" mail kept until sent,
retried while the mail server refuses

Revision ID: 0016_job_mail_outbox
Revises: 0015_webhook_outbox
Create Date: 2026-12-03 15:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_job_mail_outbox"
down_revision = "0015_webhook_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_mail_outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("claim", sa.String(32), nullable=True),
        sa.Column("claimed_until", sa.Float(), nullable=False, server_default="0"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_job_mail_outbox_job_id", "job_mail_outbox", ["job_id"], unique=True)
    op.create_index("ix_job_mail_outbox_next_at", "job_mail_outbox", ["next_at"])


def downgrade() -> None:
    op.drop_table("job_mail_outbox")
