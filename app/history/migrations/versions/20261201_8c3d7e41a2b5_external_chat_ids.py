"""Conversations a client names by its own id (the AI SDK's chat id, CONTRACT §13).

Revision ID: 8c3d7e41a2b5
Revises: 5f1c2a9e0b01
Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "8c3d7e41a2b5"
down_revision = "5f1c2a9e0b01"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:  # SQLite alters a table by copying it
        batch.add_column(sa.Column("external_id", sa.String(length=128), nullable=True))
    # One conversation per (principal, chat id); the index also finds it. NULLs never collide.
    op.create_index("ix_conversations_owner_external", "conversations", ["owner", "external_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_conversations_owner_external", table_name="conversations")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("external_id")
