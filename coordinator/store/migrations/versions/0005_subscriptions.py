"""subscriptions, their history, handled provider events, vouchers and redemptions

Revision ID: 0005_subscriptions
Revises: 0004_drop_job_lease_expiry
Create Date: 2026-12-02 17:10:00

One subscription record per user (kept after it ends, so a renewal or a new
checkout updates it); webhook event ids are stored so a replay changes nothing;
voucher codes are stored as SHA-256 only; a redemption's primary key (voucher,
user) allows one use per user per code.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_subscriptions"
down_revision = "0004_drop_job_lease_expiry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("current_period_end", sa.Float(), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("pending_tier", sa.String(32), nullable=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("provider_customer_id", sa.String(255), nullable=True),
        sa.Column("provider_subscription_id", sa.String(255), nullable=True),
        sa.Column("event_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_subscriptions_user_id", "subscriptions", ["user_id"], unique=True)
    op.create_index("ix_subscriptions_status", "subscriptions", ["status"])
    op.create_index(
        "ix_subscriptions_provider_customer_id", "subscriptions", ["provider_customer_id"]
    )
    op.create_index(
        "ix_subscriptions_provider_subscription_id", "subscriptions", ["provider_subscription_id"]
    )
    op.create_table(
        "subscription_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column("amount", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(200), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_subscription_events_user_at", "subscription_events", ["user_id", "at"])
    op.create_table(
        "provider_events",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(200), nullable=False),
    )
    op.create_index("ix_provider_events_received_at", "provider_events", ["received_at"])
    op.create_table(
        "vouchers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hint", sa.String(16), nullable=False),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column("days", sa.Float(), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("note", sa.String(200), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column(
            "created_by",
            sa.Integer(),
            sa.ForeignKey("users.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("created_at", sa.Float(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "voucher_redemptions",
        sa.Column(
            "voucher_id",
            sa.Integer(),
            sa.ForeignKey("vouchers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("voucher_redemptions")
    op.drop_table("vouchers")
    op.drop_index("ix_provider_events_received_at", "provider_events")
    op.drop_table("provider_events")
    op.drop_index("ix_subscription_events_user_at", "subscription_events")
    op.drop_table("subscription_events")
    for name in ("provider_subscription_id", "provider_customer_id", "status", "user_id"):
        op.drop_index(f"ix_subscriptions_{name}", "subscriptions")
    op.drop_table("subscriptions")
