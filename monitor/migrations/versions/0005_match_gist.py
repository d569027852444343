"""Matches keep their article's gist (events.py) and why they joined another outlet's
story as the same event, so later articles can be compared with them and `monitor
matches` can say why.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Added nullable columns only: SQLite alters the table in place, no copy.
    with op.batch_alter_table("match") as batch_op:
        batch_op.add_column(sa.Column("gist", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("joined", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("match") as batch_op:
        batch_op.drop_column("joined")
        batch_op.drop_column("gist")
