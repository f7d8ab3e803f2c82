"""review indexes: the review page's queue and Browse's filters stay fast on millions of rows

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

* ``ix_decisions_queue`` (decision, priority DESC, id) and ``ix_decisions_job_queue`` (job_id,
  decision, priority DESC, id): the review queue, across jobs or of one job, read in its own
  order (highest priority first, then oldest decision), so the next image is the first few
  index entries instead of a sort of every ``review`` row. A row a newer decision superseded is
  dropped by one probe of ``ix_decisions_item_id_id`` (0006).
* ``ix_results_job_id_moderated_at``: Browse's date range within a job.
* ``ix_results_job_id_item_id``: a job's answers in item order, so Browse's RiskLevel filter on
  one job joins its items without reading the other jobs' answers first.
* ``ix_result_labels_item_id``: Browse's label and confidence filters from an item.

Self-contained, like every migration.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_decisions_queue", "decisions", ["decision", sa.text("priority DESC"), "id"]
    )
    op.create_index(
        "ix_decisions_job_queue",
        "decisions",
        ["job_id", "decision", sa.text("priority DESC"), "id"],
    )
    op.create_index("ix_results_job_id_moderated_at", "results", ["job_id", "moderated_at"])
    op.create_index("ix_results_job_id_item_id", "results", ["job_id", "item_id"])
    op.create_index("ix_result_labels_item_id", "result_labels", ["item_id"])


def downgrade() -> None:
    op.drop_index("ix_result_labels_item_id", table_name="result_labels")
    op.drop_index("ix_results_job_id_item_id", table_name="results")
    op.drop_index("ix_results_job_id_moderated_at", table_name="results")
    op.drop_index("ix_decisions_job_queue", table_name="decisions")
    op.drop_index("ix_decisions_queue", table_name="decisions")
