"""gallery: case-folded prompts for search

Revision ID: 0004_gallery
Revises: 0003_user_locale
Create Date: 2026-12-02 17:00:00

jobs.prompt_folded holds Python's ``str.casefold()`` of the prompt, so a search
for "СТУЛ" finds "красный стул" on SQLite (whose LIKE folds ASCII only) and on
PostgreSQL alike. Existing rows are backfilled here, in batches.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_gallery"
down_revision = "0003_user_locale"
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
    _backfill_folded_prompts()


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("prompt_folded")
