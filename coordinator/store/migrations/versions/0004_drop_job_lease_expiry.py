"""jobs.lease_expires_at goes: leases live in the farm's memory

Revision ID: 0004_drop_job_lease_expiry
Revises: 0003_user_locale
Create Date: 2026-12-02 17:10:00

The column was written when a job was assigned and never renewed or read: a
lease is renewed by every heartbeat and progress message, in memory, and a
coordinator restart gives held jobs a fresh grace lease. A stale copy in the
table could only mislead.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_drop_job_lease_expiry"
down_revision = "0003_user_locale"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("lease_expires_at")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("lease_expires_at", sa.Float(), nullable=True))
