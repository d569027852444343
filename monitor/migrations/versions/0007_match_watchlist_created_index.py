"""Index matches by watchlist and time: every save reads one watchlist's matches of the
events window (store.py), which the separate indexes on each column answered by reading
all of the watchlist's matches, however old.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("match") as batch_op:
        batch_op.create_index(
            "ix_match_watchlist_created_at", ["watchlist", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("match") as batch_op:
        batch_op.drop_index("ix_match_watchlist_created_at")
