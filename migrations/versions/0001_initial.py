"""initial schema: jobs, items, results, result_labels

Revision ID: 0001
Revises:
Create Date: 2025-11-25

Keep migrations self-contained: spell out tables and types here rather than importing them from
worker.store, which describes only the newest schema.

Room is left for later tables (local uploads, OSS prefix scans, nightly incremental scans, a
review queue, budgets): they hang off ``jobs.id`` / ``items.id`` and need no change here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite only autoincrements an "INTEGER PRIMARY KEY"; elsewhere ids are 64-bit.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _when(name: str, nullable: bool = True) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("info_type", sa.String(200), nullable=False, server_default=""),
        sa.Column("referer", sa.String(256)),
        _when("created_at", nullable=False),
        _when("finished_at"),
        sa.Column("total_lines", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("accepted", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("duplicates", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("rejected", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint("name", name="uq_jobs_name"),
    )
    op.create_table(
        "items",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref_key", sa.Text(), nullable=False),
        sa.Column("image_url", sa.Text()),
        sa.Column("oss_bucket", sa.String(64)),
        sa.Column("oss_object", sa.Text()),
        sa.Column("oss_region", sa.String(64)),
        sa.Column("data_id", sa.String(64)),
        sa.Column("referer", sa.String(256)),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_code", sa.String(64)),
        sa.Column("last_message", sa.Text()),
        sa.Column("last_error", sa.Text()),
        sa.Column("raw_input", sa.Text()),
        sa.Column("lease_owner", sa.String(200)),
        _when("lease_expires_at"),
        _when("created_at", nullable=False),
        _when("updated_at", nullable=False),
        _when("queued_at"),
        _when("finished_at"),
        sa.PrimaryKeyConstraint("id", name="pk_items"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_items_job_id_jobs"),
        sa.UniqueConstraint("job_id", "ref_key", name="uq_items_job_id_ref_key"),
    )
    op.create_index("ix_items_job_id_state", "items", ["job_id", "state"])
    op.create_index("ix_items_state_lease_expires_at", "items", ["state", "lease_expires_at"])
    op.create_index("ix_items_job_id_id", "items", ["job_id", "id"])
    op.create_table(
        "results",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128)),
        sa.Column("code", sa.String(64)),
        sa.Column("msg", sa.Text()),
        sa.Column("data_id", sa.String(64)),
        sa.Column("risk_level", sa.String(16)),
        sa.Column("ext", JSON),
        sa.Column("raw", JSON, nullable=False),
        _when("moderated_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_results"),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name="fk_results_item_id_items"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_results_job_id_jobs"),
        sa.UniqueConstraint("item_id", "service", name="uq_results_item_id_service"),
    )
    op.create_index("ix_results_job_id_risk_level", "results", ["job_id", "risk_level"])
    op.create_table(
        "result_labels",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("result_id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("confidence", sa.Float()),
        sa.Column("description", sa.Text()),
        sa.Column("risk_level", sa.String(16)),
        sa.PrimaryKeyConstraint("id", name="pk_result_labels"),
        sa.ForeignKeyConstraint(
            ["result_id"], ["results.id"], name="fk_result_labels_result_id_results"
        ),
    )
    op.create_index("ix_result_labels_result_id", "result_labels", ["result_id"])
    op.create_index("ix_result_labels_label_confidence", "result_labels", ["label", "confidence"])
    op.create_index(
        "ix_result_labels_job_id_label_confidence",
        "result_labels",
        ["job_id", "label", "confidence"],
    )


def downgrade() -> None:
    op.drop_table("result_labels")
    op.drop_table("results")
    op.drop_table("items")
    op.drop_table("jobs")
