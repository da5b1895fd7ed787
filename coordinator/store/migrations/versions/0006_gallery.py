"""gallery: case-folded prompts for search, likes, reports, hidden models

Revision ID: 0006_gallery
Revises: 0005_subscriptions
Create Date: 2026-12-02 17:00:00

jobs.prompt_folded holds Python's ``str.casefold()`` of the prompt, so a search
for "СТУЛ" finds "красный стул" on SQLite (whose LIKE folds ASCII only) and on
PostgreSQL alike. Existing rows are backfilled here, in batches.

jobs.hidden (a moderator took a public model out of view), jobs.like_count (kept
equal to the job's rows in ``likes``), the ``likes`` table (one per user and
model) and the moderation queue's ``reports``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_gallery"
down_revision = "0005_subscriptions"
branch_labels = None
depends_on = None

BATCH = 1000


def _backfill_folded_prompts() -> None:
    conn = op.get_bind()
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.String),
        sa.column("prompt", sa.Text),
        sa.column("prompt_folded", sa.Text),
    )
    after = ""
    while True:
        rows = conn.execute(
            sa.select(jobs.c.id, jobs.c.prompt)
            .where(jobs.c.id > after)
            .order_by(jobs.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        conn.execute(
            jobs.update().where(jobs.c.id == sa.bindparam("job_id")),
            [{"job_id": job_id, "prompt_folded": prompt.casefold()} for job_id, prompt in rows],
        )
        after = rows[-1][0]


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("prompt_folded", sa.Text, nullable=False, server_default=""))
        batch_op.add_column(
            sa.Column("hidden", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("like_count", sa.Integer, nullable=False, server_default="0"))
        batch_op.create_index("ix_jobs_gallery", ["public", "hidden", "created_at"])
    _backfill_folded_prompts()
    op.create_table(
        "likes",
        sa.Column(
            "job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_likes_user_id", "likes", ["user_id"])
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "reporter_id", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("resolved_at", sa.Float, nullable=True),
        sa.Column("resolution", sa.String(16), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_reports_job_id", "reports", ["job_id"])
    op.create_index("ix_reports_open", "reports", ["resolved_at", "created_at"])
    op.create_index("ix_reports_reporter", "reports", ["reporter_id", "created_at"])


def downgrade() -> None:
    op.drop_table("reports")
    op.drop_table("likes")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_gallery")
        batch_op.drop_column("like_count")
        batch_op.drop_column("hidden")
        batch_op.drop_column("prompt_folded")
