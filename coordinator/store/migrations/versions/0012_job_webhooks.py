"""webhooks per job: a job's own webhook URL (given with its API submission), and
whether a delivery in the log went to a job's own URL

Revision ID: 0012_job_webhooks
Revises: 0011_mesh_options
Create Date: 2026-12-03 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_job_webhooks"
down_revision = "0011_mesh_options"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("webhook_url", sa.String(2000), nullable=True))
    with op.batch_alter_table("webhook_deliveries") as batch_op:
        batch_op.add_column(
            sa.Column("per_job", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch_op:
        batch_op.drop_column("per_job")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("webhook_url")
