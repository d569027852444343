"""A feed remembers what its first fetch kept without alerting (items older than its
backfill) and how many of those a watchlist matched, for `monitor feeds` to say.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feed") as batch_op:
        batch_op.add_column(
            sa.Column("held_back", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("held_back_matching", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("feed") as batch_op:
        batch_op.drop_column("held_back_matching")
        batch_op.drop_column("held_back")
