"""Index deliveries by channel and send time: queue-mode workers pace a channel by its last
send, whichever worker made it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("delivery") as batch_op:
        batch_op.create_index("ix_delivery_channel_sent_at", ["channel", "sent_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch_op:
        batch_op.drop_index("ix_delivery_channel_sent_at")
