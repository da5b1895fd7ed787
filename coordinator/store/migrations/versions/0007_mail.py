"""mail: verified e-mail addresses, one-time mail tokens, finished-job e-mails

Revision ID: 0007_mail
Revises: 0006_gallery
Create Date: 2026-12-02 17:10:00

- users.email_verified_at: when the address was proven by a link (NULL: not
  proven; existing addresses start unproven and get no password-reset mail
  until verified).
- users.notify_email: the user wants an e-mail when a long-waiting job ends.
- jobs.notified_at: the finished-job e-mail went out (at most one per job).
- mail_tokens: password-reset and address-verification links; only the
  SHA-256 of each secret is stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_mail"
down_revision = "0006_gallery"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ... ADD COLUMN (SQLite has it): a batch copy of the tables would
    # rebuild them and lose SQLite's AUTOINCREMENT counters (see 0002).
    op.add_column("users", sa.Column("email_verified_at", sa.Float(), nullable=True))
    op.add_column(
        "users",
        sa.Column("notify_email", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("jobs", sa.Column("notified_at", sa.Float(), nullable=True))
    op.create_table(
        "mail_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("used_at", sa.Float(), nullable=True),
    )
    op.create_index("ix_mail_tokens_user_id", "mail_tokens", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_mail_tokens_user_id", table_name="mail_tokens")
    op.drop_table("mail_tokens")
    op.drop_column("jobs", "notified_at")  # SQLite >= 3.35 drops columns in place
    op.drop_column("users", "notify_email")
    op.drop_column("users", "email_verified_at")
