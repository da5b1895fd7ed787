"""webhooks per API key: URL and signing secret on the key, the submitting key on jobs,
and a delivery log

Revision ID: 0008_webhooks
Revises: 0007_mail
Create Date: 2026-12-02 17:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_webhooks"
down_revision = "0007_mail"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.add_column(sa.Column("webhook_url", sa.String(2000), nullable=True))
        batch_op.add_column(sa.Column("webhook_secret", sa.String(64), nullable=True))
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("api_key_id", sa.String(32), nullable=True))
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "api_key_id",
            sa.String(32),
            sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_webhook_deliveries_key_id", "webhook_deliveries", ["api_key_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_key_id", "webhook_deliveries")
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("api_key_id")
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_column("webhook_secret")
        batch_op.drop_column("webhook_url")
