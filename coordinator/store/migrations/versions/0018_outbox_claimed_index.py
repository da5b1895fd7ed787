"""webhook outbox: an index on claimed_until, so a claim finds the keys with an attempt
in flight without reading every waiting delivery

Revision ID: 0018_outbox_claimed_index
Revises: 0017_presence_connected_at
Create Date: 2026-12-03 16:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0018_outbox_claimed_index"
down_revision = "0017_presence_connected_at"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_webhook_outbox_claimed_until", "webhook_outbox", ["claimed_until"])


def downgrade() -> None:
    op.drop_index("ix_webhook_outbox_claimed_until", "webhook_outbox")
