"""local files as a source: items.local_path, items.sha256

Revision ID: 0004
Revises: 0003
Create Date: 2025-12-03

A row read from a local folder keeps the file's absolute path (uploaded by the worker at call
time) and the SHA-256 computed at enqueue, which the worker checks again before it uploads: a
file changed or deleted since enqueue fails with a reason, without a call. ``identity`` and
``content_key`` hold digests of the SHA-256 with a prefix, not the path, hence two columns.

Self-contained, like every migration: types spelled out here, not imported from worker.store.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("local_path", sa.Text(), nullable=True))
        batch.add_column(sa.Column("sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("sha256")
        batch.drop_column("local_path")
