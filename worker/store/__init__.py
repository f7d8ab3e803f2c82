"""The SQL store: tables, schema migrations and the short transactions every other part runs.

Works on SQLite (the embedded default) and PostgreSQL. Every public function takes an
:class:`~sqlalchemy.engine.Engine`, runs one short transaction and is safe to call from many
threads and processes at once. Correctness under concurrency rests on single atomic statements,
not on locks held in Python:

* :func:`~worker.store.leases.claim_items` is one ``UPDATE ... WHERE id IN (...) AND <claimable>
  RETURNING``: of two workers handed the same (redelivered) message, exactly one gets each row.
* :func:`~worker.store.answers.record_results` inserts a message's answers into ``results``
  (one multi-row INSERT) with ``ON CONFLICT (item_id, service) DO NOTHING``: however many
  workers finish the same image, one results row is stored.

One module per job: :mod:`~worker.store.schema` (tables and states), :mod:`~worker.store.engine`
(engines, transactions, outages), :mod:`~worker.store.migrate` (Alembic),
:mod:`~worker.store.jobs`, :mod:`~worker.store.items` (the producer's side of a row),
:mod:`~worker.store.leases` (the worker's side), :mod:`~worker.store.answers` (billed answers,
in SQL and parked in Redis), :mod:`~worker.store.reuse` (answers reused across jobs),
:mod:`~worker.store.waiters` (copies of an image in flight, settled when it is answered),
:mod:`~worker.store.listings` (where an OSS listing stands), :mod:`~worker.store.decisions`
(policies' and reviewers' decisions, append-only; what a policy run reads in
:mod:`~worker.store.decision_inputs`), :mod:`~worker.store.events` (the append-only
events log, one image's history) and :mod:`~worker.store.queries` (reads for reports and status).
This package re-exports their public names, so ``from worker import store;
store.claim_item(...)`` reads as one module.
"""

from __future__ import annotations

from worker.store.answers import BilledAnswer, record_result, record_results, storable
from worker.store.decision_inputs import (
    CurrentDecision,
    DecisionInput,
    decision_inputs,
    policy_hashes,
)
from worker.store.decisions import (
    Decision,
    NewDecision,
    current_decisions,
    decision_counts,
    decisions_by_policy,
    item_decisions,
    latest_decisions,
    record_decisions,
)
from worker.store.engine import POOL_SIZE, is_outage, make_engine, open_connections
from worker.store.events import (
    EVENT_KINDS,
    Event,
    ItemHistory,
    NewEvent,
    StoredAnswer,
    append_event,
    append_events,
    find_items,
    item_events,
    item_history,
    job_events,
)
from worker.store.inserts import Encoded, encode_rows, insert_items
from worker.store.items import (
    RAW_INPUT_LIMIT,
    NewItem,
    expired_or_stuck_ids,
    jobs_with_pending,
    mark_queued,
    refresh_planner_statistics,
    rejected_ref_key,
    reopen_open_items,
    reset_failed,
    return_to_pending,
    take_pending,
)
from worker.store.jobs import (
    Job,
    add_counts,
    finish_job_if_complete,
    get_job,
    get_or_create_job,
    job_key,
    list_jobs,
)
from worker.store.leases import (
    ClaimedItem,
    claim_item,
    claim_items,
    extend_lease,
    lease_left,
    record_failure,
    record_retry,
    renew_leases,
    requeue_expired,
)
from worker.store.listings import Listing, get_listing, open_listing, save_listing
from worker.store.migrate import (
    MIGRATIONS_DIR,
    SchemaError,
    check_schema,
    current_revision,
    ensure_schema,
    find_migrations,
    head_revision,
    upgrade,
)
from worker.store.queries import attempts_made, service_state_counts, state_counts
from worker.store.reuse import Inserted, ReuseScope, insert_reusing

# Last: ``store.items`` and ``store.jobs`` are the tables (as callers have always used them),
# not the submodules of the same names that the imports above bound first.
from worker.store.schema import (
    DECISIONS,
    KINDS,
    OPEN_STATES,
    STATES,
    UTCDateTime,
    decisions,
    events,
    items,
    jobs,
    metadata,
    result_labels,
    results,
)
from worker.store.waiters import Settled, settle_waiters

__all__ = [
    "DECISIONS",
    "EVENT_KINDS",
    "Decision",
    "DecisionInput",
    "Event",
    "ItemHistory",
    "NewDecision",
    "NewEvent",
    "StoredAnswer",
    "append_event",
    "append_events",
    "current_decisions",
    "decision_counts",
    "decision_inputs",
    "decisions",
    "decisions_by_policy",
    "events",
    "find_items",
    "item_decisions",
    "item_events",
    "item_history",
    "job_events",
    "latest_decisions",
    "policy_hashes",
    "record_decisions",
    "KINDS",
    "MIGRATIONS_DIR",
    "OPEN_STATES",
    "POOL_SIZE",
    "RAW_INPUT_LIMIT",
    "STATES",
    "ClaimedItem",
    "CurrentDecision",
    "Inserted",
    "Job",
    "Listing",
    "NewItem",
    "Encoded",
    "encode_rows",
    "ReuseScope",
    "SchemaError",
    "Settled",
    "UTCDateTime",
    "add_counts",
    "attempts_made",
    "check_schema",
    "claim_item",
    "claim_items",
    "current_revision",
    "ensure_schema",
    "expired_or_stuck_ids",
    "extend_lease",
    "find_migrations",
    "finish_job_if_complete",
    "get_job",
    "get_listing",
    "get_or_create_job",
    "head_revision",
    "insert_items",
    "insert_reusing",
    "is_outage",
    "items",
    "job_key",
    "jobs",
    "jobs_with_pending",
    "lease_left",
    "list_jobs",
    "make_engine",
    "mark_queued",
    "open_listing",
    "metadata",
    "open_connections",
    "record_failure",
    "record_result",
    "record_results",
    "BilledAnswer",
    "record_retry",
    "rejected_ref_key",
    "service_state_counts",
    "renew_leases",
    "refresh_planner_statistics",
    "reopen_open_items",
    "requeue_expired",
    "reset_failed",
    "result_labels",
    "results",
    "return_to_pending",
    "save_listing",
    "settle_waiters",
    "state_counts",
    "storable",
    "take_pending",
    "upgrade",
]
