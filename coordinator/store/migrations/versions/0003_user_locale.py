"""users.locale: the language a user chose for the web UI

Revision ID: 0003_user_locale
Revises: 0002
Create Date: 2026-12-02 17:00:00

NULL means "no saved choice": the language switcher's cookie, then the
browser's Accept-Language, decide.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_user_locale"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(sa.Column("locale", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("locale")
