"""Queue mode: a feed remembers when a scheduler queued it for a poll, until the poll's
record clears it, so a job polls every queued feed of its group (runtime/queue.py).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feed") as batch_op:
        batch_op.add_column(
            sa.Column("queued_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("feed") as batch_op:
        batch_op.drop_column("queued_at")
