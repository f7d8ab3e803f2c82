"""governance: decisions, the append-only events log, object actions, webhook deliveries, review leases

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

What the stored answers are for (the vendor's page: "subsequent content governance ... manual
review ... layered and categorized content governance measures based on the risk labels"):

* ``decisions``: one row per decision made about one item, by a policy (``imgmod decide``) or by a
  person (the review page). Append-only: a new policy version or a reviewer adds rows, nothing
  is updated, so every earlier decision stays. The latest row per item (highest id) is the
  item's current decision.
* ``events``: the append-only log of everything imgmod did to or about an image beyond the call
  itself: decisions, reviews, undos, actions on objects, restores, webhook deliveries. What, who,
  when, why, under which policy version, and the state before and after. imgmod never updates or
  deletes a row here.
* ``object_actions``: the current state of an action taken on one OSS object (frozen, moved),
  so a rerun changes nothing and ``imgmod restore`` knows what to undo; every change is also an
  event.
* ``webhook_deliveries``: one row per (item, URL) event posted to an owner's system, with its
  attempts and the last HTTP status.
* ``review_leases``: which reviewer holds which item on the review page, until when (a lease,
  like the workers'), so two reviewers never see the same image at the same time.

Self-contained, like every migration: types spelled out here, not imported from worker.store.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.BigInteger(), sa.ForeignKey("items.id"), nullable=False),
        sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id"), nullable=False),
        # block | review | pass | unscanned (a person's decision: block | pass)
        sa.Column("decision", sa.String(16), nullable=False),
        # review order: higher first; NULL for decisions that need no review
        sa.Column("priority", sa.Integer()),
        sa.Column("rule", sa.String(200)),
        sa.Column("policy_name", sa.String(200)),
        sa.Column("policy_version", sa.String(64)),
        sa.Column("policy_hash", sa.String(64)),
        # "policy" (imgmod decide) or "review" (a person on the review page)
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("decided_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_decisions"),
    )
    op.create_index("ix_decisions_item_id_id", "decisions", ["item_id", "id"])
    op.create_index("ix_decisions_job_id_decision", "decisions", ["job_id", "decision"])
    op.create_index(
        "ix_decisions_job_id_policy_version", "decisions", ["job_id", "policy_name", "policy_version"]
    )
    # a job's current decisions in item order (store.latest_decisions pages by item id)
    op.create_index("ix_decisions_job_id_item_id", "decisions", ["job_id", "item_id", "id"])

    op.create_table(
        "events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", When, nullable=False),
        # decision | review | undo | action | restore | webhook
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id")),
        sa.Column("item_id", sa.BigInteger(), sa.ForeignKey("items.id")),
        sa.Column("what", sa.String(64), nullable=False),
        sa.Column("why", sa.Text()),
        sa.Column("policy_name", sa.String(200)),
        sa.Column("policy_version", sa.String(64)),
        sa.Column("before", Json),
        sa.Column("after", Json),
        sa.Column("detail", Json),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_item_id_id", "events", ["item_id", "id"])
    op.create_index("ix_events_job_id_kind", "events", ["job_id", "kind"])

    op.create_table(
        "object_actions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.BigInteger(), sa.ForeignKey("items.id"), nullable=False),
        sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id"), nullable=False),
        # freeze (ACL private) | move (to a quarantine prefix)
        sa.Column("action", sa.String(16), nullable=False),
        # applied | restored
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("bucket", sa.String(64), nullable=False),
        sa.Column("original_key", sa.Text(), nullable=False),
        sa.Column("current_key", sa.Text(), nullable=False),
        sa.Column("acl_before", sa.String(32)),
        sa.Column("updated_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_object_actions"),
        sa.UniqueConstraint("item_id", "action", name="uq_object_actions_item_id_action"),
    )
    op.create_index("ix_object_actions_job_id_state", "object_actions", ["job_id", "state"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.BigInteger(), sa.ForeignKey("items.id"), nullable=False),
        sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("decision_id", sa.BigInteger(), sa.ForeignKey("decisions.id")),
        # delivered | failed
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_status", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("updated_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
        sa.UniqueConstraint("item_id", "url", "decision_id", name="uq_webhook_deliveries_item_id"),
    )

    op.create_table(
        "review_leases",
        sa.Column("item_id", sa.BigInteger(), sa.ForeignKey("items.id"), nullable=False),
        sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("expires_at", When, nullable=False),
        sa.PrimaryKeyConstraint("item_id", name="pk_review_leases"),
    )
    op.create_index("ix_review_leases_reviewer", "review_leases", ["reviewer"])


def downgrade() -> None:
    op.drop_table("review_leases")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_object_actions_job_id_state", table_name="object_actions")
    op.drop_table("object_actions")
    op.drop_index("ix_events_job_id_kind", table_name="events")
    op.drop_index("ix_events_item_id_id", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_decisions_job_id_item_id", table_name="decisions")
    op.drop_index("ix_decisions_job_id_policy_version", table_name="decisions")
    op.drop_index("ix_decisions_job_id_decision", table_name="decisions")
    op.drop_index("ix_decisions_item_id_id", table_name="decisions")
    op.drop_table("decisions")
