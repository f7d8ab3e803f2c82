"""budgets: a job's call cap, and the ledger of billed calls per UTC day, job and service

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

Every Code-200 answer is billed (the vendor's page, "Billing": "you are charged only for
requests for which the value of the Code parameter is 200"). Two things make the bill known and
bounded:

* ``jobs.max_calls``: the most calls a job may bill (``--max-calls N``); NULL for no cap. The
  workers reserve a unit against it (and against ``IMGMOD_DAILY_CALL_BUDGET``) in Redis before
  every call (:mod:`worker.budget`); a row that finds the budget used up waits as ``paused``
  with the reason in ``last_message`` until ``imgmod resume``.
* ``billed_calls``: one row per (UTC day, job, service) counting the billed answers, written by
  the worker after each Code-200 answer: ``imgmod costs`` and ``imgmod status`` read it, and a
  Redis that lost its counters is seeded from it.

Self-contained, like every migration: types spelled out here, not imported from worker.store.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("max_calls", sa.BigInteger()))
    op.create_table(
        "billed_calls",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("day", sa.Date(), nullable=False),  # UTC
        sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False, server_default="0"),
        sa.UniqueConstraint("day", "job_id", "service", name="uq_billed_calls_day_job_service"),
        sa.Index("ix_billed_calls_job_id", "job_id"),
    )


def downgrade() -> None:
    op.drop_table("billed_calls")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("max_calls")
