"""The tables, as of the newest migration, and the states a row goes through.

The schema is created and evolved by the Alembic migrations in the top-level ``migrations/``
directory (``imgmod db upgrade``, :mod:`worker.store.migrate`); the tables below describe the
current head and must be kept in step with the newest migration.

Times are timezone-aware UTC in Python (:class:`UTCDateTime`); SQLite stores them as naive UTC
text, PostgreSQL as ``timestamptz``.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

# ``paused``: a budget was used up before the call (worker.budget); ``imgmod resume`` reopens it.
STATES = ("pending", "queued", "running", "done", "failed", "rejected", "paused")
OPEN_STATES = ("pending", "queued", "running")
KINDS = ("url", "oss", "file", "invalid")


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite has no time zones)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(timezone.utc)")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# SQLite only autoincrements an "INTEGER PRIMARY KEY"; elsewhere ids are 64-bit.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# JSONB on PostgreSQL (compact, indexable later), JSON text elsewhere.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    # The job's services, comma separated in the order asked (migration 0009: several per job).
    sa.Column("service", sa.String(200), nullable=False),
    sa.Column("info_type", sa.String(200), nullable=False, server_default=""),
    sa.Column("referer", sa.String(256)),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("total_lines", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("accepted", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("duplicates", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("rejected", sa.BigInteger(), nullable=False, server_default="0"),
    # The most calls the job may bill (migration 0007, worker.budget); NULL: no cap.
    sa.Column("max_calls", sa.BigInteger()),
)

items = sa.Table(
    "items",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id"), nullable=False),
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
    sa.Column("lease_expires_at", UTCDateTime()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("queued_at", UTCDateTime()),
    sa.Column("finished_at", UTCDateTime()),
    # An OSS object as listed (migration 0002): what it was when recorded.
    sa.Column("etag", sa.String(64)),
    sa.Column("size", sa.BigInteger()),
    sa.Column("last_modified", UTCDateTime()),
    # Pay once per image (migration 0003, worker.identity): the image's identity and content
    # key, and for a row answered by an earlier answer, the item that was billed for it.
    sa.Column("identity", sa.String(255), index=True),
    sa.Column("content_key", sa.String(100), index=True),
    sa.Column("reused_from", sa.BigInteger(), sa.ForeignKey("items.id")),
    # A local file (migration 0004): uploaded at call time, checked against its enqueue SHA-256.
    sa.Column("local_path", sa.Text()),
    sa.Column("sha256", sa.String(64)),
    # A waiter (migration 0005, worker.store.waiters): the open row with the same image whose
    # answer this pending row waits for; the window never takes it while set.
    sa.Column("waits_for", sa.BigInteger(), sa.ForeignKey("items.id"), index=True),
    # The service this row asks (migration 0009): one row per (reference, service) of a job.
    sa.Column("service", sa.String(64), nullable=False),
    sa.UniqueConstraint("job_id", "ref_key", "service"),
    sa.Index(None, "job_id", "state"),
    sa.Index(None, "state", "lease_expires_at"),
    sa.Index(None, "job_id", "id"),  # keyset pagination of one job (exports, resume)
)

# Where the listing of one OSS prefix (under one filter) into one job stands: resumable.
listings = sa.Table(
    "listings",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("source", sa.Text(), nullable=False),  # oss://bucket/prefix plus filter fingerprint
    sa.Column("continuation_token", sa.Text()),
    sa.Column("listed", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("done", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("job_id", "source"),
)

results = sa.Table(
    "results",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.BigInteger(), sa.ForeignKey("items.id"), nullable=False),
    sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("service", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(128)),
    sa.Column("code", sa.String(64)),
    sa.Column("msg", sa.Text()),
    sa.Column("data_id", sa.String(64)),
    sa.Column("risk_level", sa.String(16)),
    sa.Column("ext", Json),
    sa.Column("raw", Json, nullable=False),
    sa.Column("moderated_at", UTCDateTime(), nullable=False),
    # One stored answer per image and service, whoever finishes first.
    sa.UniqueConstraint("item_id", "service"),
    sa.Index(None, "job_id", "risk_level"),
)

result_labels = sa.Table(
    "result_labels",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("result_id", sa.BigInteger(), sa.ForeignKey("results.id"), nullable=False),
    sa.Column("job_id", sa.BigInteger(), nullable=False),
    sa.Column("item_id", sa.BigInteger(), nullable=False),
    sa.Column("label", sa.String(128), nullable=False),
    sa.Column("confidence", sa.Float()),
    sa.Column("description", sa.Text()),
    sa.Column("risk_level", sa.String(16)),
    sa.Index(None, "result_id"),
    # "every image with label L at confidence >= C", across jobs or within one.
    sa.Index(None, "label", "confidence"),
    sa.Index(None, "job_id", "label", "confidence"),
)

# Governance (migration 0006): decisions and the events log are append-only; imgmod never
# updates or deletes their rows. The latest decision per item (highest id) is its current one.
DECISIONS = ("block", "review", "pass", "unscanned")

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.BigInteger(), sa.ForeignKey("items.id"), nullable=False),
    sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer()),
    sa.Column("rule", sa.String(200)),
    sa.Column("policy_name", sa.String(200)),
    sa.Column("policy_version", sa.String(64)),
    sa.Column("policy_hash", sa.String(64)),
    sa.Column("source", sa.String(16), nullable=False),  # policy | review
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text()),
    sa.Column("decided_at", UTCDateTime(), nullable=False),
    sa.Index("ix_decisions_item_id_id", "item_id", "id"),
    sa.Index("ix_decisions_job_id_decision", "job_id", "decision"),
    sa.Index("ix_decisions_job_id_policy_version", "job_id", "policy_name", "policy_version"),
    sa.Index("ix_decisions_job_id_item_id", "job_id", "item_id", "id"),  # latest_decisions pages
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),  # decision|review|undo|action|restore|webhook
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
    sa.Index("ix_events_item_id_id", "item_id", "id"),
    sa.Index("ix_events_job_id_kind", "job_id", "kind"),
)

object_actions = sa.Table(
    "object_actions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.BigInteger(), sa.ForeignKey("items.id"), nullable=False),
    sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # freeze | move
    sa.Column("state", sa.String(16), nullable=False),  # applied | restored
    sa.Column("bucket", sa.String(64), nullable=False),
    sa.Column("original_key", sa.Text(), nullable=False),
    sa.Column("current_key", sa.Text(), nullable=False),
    sa.Column("acl_before", sa.String(32)),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("item_id", "action", name="uq_object_actions_item_id_action"),
    sa.Index("ix_object_actions_job_id_state", "job_id", "state"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.BigInteger(), sa.ForeignKey("items.id"), nullable=False),
    sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("decision_id", sa.BigInteger(), sa.ForeignKey("decisions.id")),
    sa.Column("state", sa.String(16), nullable=False),  # delivered | failed
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_status", sa.Integer()),
    sa.Column("last_error", sa.Text()),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("item_id", "url", "decision_id", name="uq_webhook_deliveries_item_id"),
)

# Which reviewer holds which item on the review page, until when (like the workers' leases).
review_leases = sa.Table(
    "review_leases",
    metadata,
    sa.Column("item_id", sa.BigInteger(), sa.ForeignKey("items.id"), primary_key=True),
    sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("reviewer", sa.String(200), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index("ix_review_leases_reviewer", "reviewer"),
)

# The review queue in its own order, across jobs or of one job, and Browse's filters (0008).
sa.Index("ix_decisions_queue", decisions.c.decision, decisions.c.priority.desc(), decisions.c.id)
sa.Index(
    "ix_decisions_job_queue",
    decisions.c.job_id,
    decisions.c.decision,
    decisions.c.priority.desc(),
    decisions.c.id,
)
sa.Index("ix_results_job_id_moderated_at", results.c.job_id, results.c.moderated_at)
sa.Index("ix_results_job_id_item_id", results.c.job_id, results.c.item_id)
sa.Index("ix_result_labels_item_id", result_labels.c.item_id)

# Billed calls per UTC day, job and service (migration 0007, worker.store.ledger): what
# ``imgmod costs`` and ``imgmod status`` read, and what seeds the budget counters in Redis.
billed_calls = sa.Table(
    "billed_calls",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("day", sa.Date(), nullable=False),
    sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("service", sa.String(64), nullable=False),
    sa.Column("calls", sa.BigInteger(), nullable=False, server_default="0"),
    sa.UniqueConstraint("day", "job_id", "service", name="uq_billed_calls_day_job_service"),
    sa.Index("ix_billed_calls_job_id", "job_id"),
)
