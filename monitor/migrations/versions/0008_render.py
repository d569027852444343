"""Messages whose marks Slack still owes the desk (RenderRow): a click's chat.update
made durable, so a kill between the stored click and its update is caught up.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TEXT = sqlmodel.sql.sqltypes.AutoString
_TIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "render",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel_id", _TEXT(length=64), nullable=False),
        sa.Column("ts", _TEXT(length=64), nullable=False),
        sa.Column("match_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("blocks", sa.JSON(), nullable=False),
        sa.Column("status", _TEXT(length=10), nullable=False),
        sa.Column("serial", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TIME(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("owed_at", _TIME(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("channel_id", "ts", name="uq_render_message"),
    )
    with op.batch_alter_table("render") as batch_op:
        batch_op.create_index("ix_render_status", ["status"], unique=False)


def downgrade() -> None:
    op.drop_table("render")
