"""image-to-3D: an image job's input image (sha256, size, dimensions) on its row

Revision ID: 0010_job_images
Revises: 0009_shared_limits
Create Date: 2026-12-02 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_job_images"
down_revision = "0009_shared_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("image_sha256", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("image_size", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("image_width", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("image_height", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("image_height")
        batch_op.drop_column("image_width")
        batch_op.drop_column("image_size")
        batch_op.drop_column("image_sha256")
