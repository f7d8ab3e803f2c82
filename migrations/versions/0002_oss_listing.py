"""OSS listings: objects recorded with their ETag, size and LastModified; resumable listings

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-01

``items`` gains what an OSS listing says of an object (so a later run can tell a changed object
from the one already moderated), and ``listings`` keeps where the listing of one prefix into one
job stands (its continuation token), so a listing killed midway continues instead of starting
over. Self-contained, like 0001: no imports from worker.store.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("etag", sa.String(64)))
        batch.add_column(sa.Column("size", sa.BigInteger()))
        batch.add_column(sa.Column("last_modified", sa.DateTime(timezone=True)))
    op.create_table(
        "listings",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("continuation_token", sa.Text()),
        sa.Column("listed", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("done", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_listings"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_listings_job_id_jobs"),
        sa.UniqueConstraint("job_id", "source", name="uq_listings_job_id_source"),
    )


def downgrade() -> None:
    op.drop_table("listings")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("last_modified")
        batch.drop_column("size")
        batch.drop_column("etag")
