"""pay once per image: items.identity, items.content_key, items.reused_from

Revision ID: 0003
Revises: 0002
Create Date: 2025-12-02

An image's identity and content key (worker.identity) are looked up at enqueue, in batches, to
link a new row to an answer already stored for the same image (worker.store.reuse); both are
indexed for that lookup. ``reused_from`` names the item that was billed.

Self-contained, like every migration: types spelled out here, not imported from worker.store.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite cannot add a foreign key to an existing table in place (it copies the
    # table); PostgreSQL gets plain ALTER TABLE statements.
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("identity", sa.String(255), nullable=True))
        batch.add_column(sa.Column("content_key", sa.String(100), nullable=True))
        batch.add_column(sa.Column("reused_from", sa.BigInteger(), nullable=True))
        batch.create_foreign_key("fk_items_reused_from_items", "items", ["reused_from"], ["id"])
    op.create_index("ix_items_identity", "items", ["identity"])
    op.create_index("ix_items_content_key", "items", ["content_key"])


def downgrade() -> None:
    op.drop_index("ix_items_content_key", table_name="items")
    op.drop_index("ix_items_identity", table_name="items")
    with op.batch_alter_table("items") as batch:
        batch.drop_constraint("fk_items_reused_from_items", type_="foreignkey")
        batch.drop_column("reused_from")
        batch.drop_column("content_key")
        batch.drop_column("identity")
