"""mesh options: a job's target face count and "for 3D printing"; whether a result's
printable STL is watertight, and its face count as received when the coordinator
decimated it

Revision ID: 0011_mesh_options
Revises: 0010_job_images
Create Date: 2026-12-02 21:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_mesh_options"
down_revision = "0010_job_images"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("mesh_target_faces", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("mesh_printable", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("results") as batch_op:
        batch_op.add_column(sa.Column("watertight", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("faces_received", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch_op:
        batch_op.drop_column("faces_received")
        batch_op.drop_column("watertight")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("mesh_printable")
        batch_op.drop_column("mesh_target_faces")
