"""content duplicates in flight: items.waits_for

Revision ID: 0005
Revises: 0004
Create Date: 2025-12-04

A new row whose image (identity or content key) matches an earlier row that is still open is
inserted as a *waiter*: ``pending`` with ``waits_for`` naming that row, and never taken by the
publishing window. When the row it waits for is answered, the waiter takes a copy of the answer
(``reused_from`` then names the billed item, as for any reused row); when it fails, the waiter is
released and called itself (worker.store.waiters). A column of its own, not ``reused_from``:
that one keeps meaning "the item that was billed", which every report relies on. Indexed: the
workers' settle looks for waiters every second.

Self-contained, like every migration: types spelled out here, not imported from worker.store.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite cannot add a foreign key to an existing table in place.
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("waits_for", sa.BigInteger(), nullable=True))
        batch.create_foreign_key("fk_items_waits_for_items", "items", ["waits_for"], ["id"])
    op.create_index("ix_items_waits_for", "items", ["waits_for"])


def downgrade() -> None:
    op.drop_index("ix_items_waits_for", table_name="items")
    with op.batch_alter_table("items") as batch:
        batch.drop_constraint("fk_items_waits_for_items", type_="foreignkey")
        batch.drop_column("waits_for")
