"""several services per job: items.service, one row per (reference, service)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

A job may ask several services about every image (``--service
baselineCheck_global,aigcDetector_global``). Each (reference, service) pair is its own row in
``items``: its own state, attempts, retries, lease and answer, so everything that works on a
row (the claim, retries, budgets, reuse, waiters, decisions) works on a pair unchanged, and a
reference is done when all its rows are. ``jobs.service`` keeps the job's services, comma
separated, in the order asked (widened to 200 characters for several names).

* ``items.service``: filled from the row's job for existing rows, then NOT NULL.
* The unique key (job_id, ref_key) becomes (job_id, ref_key, service): a reference is in a job
  once per service. A rejected line has one row, under the job's first service.

Downgrade refuses a database holding a job with several services (it would lose rows' identity).
Self-contained, like every migration.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column(
            "service", type_=sa.String(200), existing_type=sa.String(64), existing_nullable=False
        )
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("service", sa.String(64), nullable=True))
    op.execute(
        "UPDATE items SET service = (SELECT jobs.service FROM jobs WHERE jobs.id = items.job_id)"
    )
    with op.batch_alter_table("items") as batch:
        batch.alter_column("service", existing_type=sa.String(64), nullable=False)
        batch.drop_constraint("uq_items_job_id_ref_key", type_="unique")
        batch.create_unique_constraint(
            "uq_items_job_id_ref_key_service", ["job_id", "ref_key", "service"]
        )


def downgrade() -> None:
    several = op.get_bind().execute(
        sa.text("SELECT name FROM jobs WHERE service LIKE '%,%' LIMIT 1")
    ).first()
    if several is not None:
        raise RuntimeError(
            f"job {several[0]!r} asks several services; delete it before downgrading below 0009"
        )
    with op.batch_alter_table("items") as batch:
        batch.drop_constraint("uq_items_job_id_ref_key_service", type_="unique")
        batch.create_unique_constraint("uq_items_job_id_ref_key", ["job_id", "ref_key"])
        batch.drop_column("service")
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column(
            "service", type_=sa.String(64), existing_type=sa.String(200), existing_nullable=False
        )
