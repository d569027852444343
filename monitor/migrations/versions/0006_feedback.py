"""The desk's clicks on messages (feedback.py), kept with what the clicked hit read like;
and on each match, the context its hits were read in and why it was held back
(suppressed by that feedback, or a follow-up of a muted story).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TEXT = sqlmodel.sql.sqltypes.AutoString
_TIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("match_id", sa.Integer(), nullable=False),
        sa.Column("verdict", _TEXT(length=20), nullable=False),
        sa.Column("watchlist", _TEXT(length=200), nullable=False),
        sa.Column("story_key", _TEXT(length=600), nullable=False),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.Column("contexts", sa.JSON(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("user_id", _TEXT(length=64), nullable=False),
        sa.Column("user_name", _TEXT(length=200), nullable=False),
        sa.Column("team_id", _TEXT(length=64), nullable=False),
        sa.Column("channel_id", _TEXT(length=64), nullable=False),
        sa.Column("source", _TEXT(length=10), nullable=False),
        sa.Column("created_at", _TIME(), nullable=False),
        sa.Column("undone_at", _TIME(), nullable=True),
        sa.Column("undone_by", _TEXT(length=64), nullable=True),
        sa.Column("click_key", _TEXT(length=100), nullable=True),
        sa.Column("undo_key", _TEXT(length=100), nullable=True),
        sa.ForeignKeyConstraint(["match_id"], ["match.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("feedback") as batch_op:
        for column in ("click_key", "created_at", "match_id", "story_key", "undo_key", "watchlist"):
            batch_op.create_index(f"ix_feedback_{column}", [column], unique=False)
    # Added nullable columns only: SQLite alters the table in place, no copy.
    with op.batch_alter_table("match") as batch_op:
        batch_op.add_column(sa.Column("contexts", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("held", _TEXT(length=20), nullable=True))
        batch_op.add_column(sa.Column("held_why", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("match") as batch_op:
        batch_op.drop_column("held_why")
        batch_op.drop_column("held")
        batch_op.drop_column("contexts")
    op.drop_table("feedback")
