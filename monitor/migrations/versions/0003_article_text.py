"""Articles keep their linked page's text and how reading it went (full_text), and the
page's canonical link, indexed, so a page whose text is stored is never fetched again.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Added columns and an index only: SQLite alters the table in place, no copy.
    with op.batch_alter_table("article") as batch_op:
        batch_op.add_column(
            sa.Column("page_outcome", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True)
        )
        batch_op.add_column(sa.Column("page_text", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("page_key", sqlmodel.sql.sqltypes.AutoString(length=600), nullable=True)
        )
        batch_op.create_index("ix_article_page_key", ["page_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("article") as batch_op:
        batch_op.drop_index("ix_article_page_key")
        batch_op.drop_column("page_key")
        batch_op.drop_column("page_text")
        batch_op.drop_column("page_outcome")
