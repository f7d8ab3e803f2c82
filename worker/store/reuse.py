"""Pay once per image: a new row whose image already has a stored answer takes that answer.

At enqueue, in the same transaction that inserts a batch of rows (so no refiller ever sees them
``pending``), :func:`insert_reusing` links every new row whose identity or content key
(:mod:`worker.identity`) matches an item, in any job, with a stored Code-200 answer for the same
service under a job of the same ``infoType``. A linked row is ``done`` before any message
exists: no worker ever claims it, no call is made. ``reused_from`` names the item that was
billed (a reused original's own original, so the chain is one step long).

The answer is **copied** (``INSERT ... SELECT``), results row and labels, with the original's
RequestId and ``moderated_at``. Copying keeps ``results`` one row per (item, service), so
every existing read (exports, label searches, risk counts, the metrics gauges) works on reused
rows unchanged, and deleting or re-running the original job later cannot take the answer away.
The cost is a few hundred bytes per reused row; the one thing that tells a copy apart is
``items.reused_from`` (exports show ``reused``, the report counts them and does not bill them).

Two copies of one image in flight (byte-identical files in one folder, one job's object
copied under another name, two jobs over one archive at once) have no stored answer yet when
they are inserted: :func:`link_waiters` makes the later row a *waiter* of the earlier open one
(``waits_for``), and :mod:`worker.store.waiters` settles it once that one is answered or fails.

Each batch costs a fixed handful of statements whatever its size: one ``UPDATE`` whose
correlated subqueries probe the ``identity`` and ``content_key`` indexes, two ``INSERT ...
SELECT`` and one ``UPDATE``; never a query per row from Python. A batch whose keys no stored
row has (and no two of its rows share) skips all of that after one indexed probe per 1,000 keys
(:func:`may_link`): the common case of a new archive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.store.engine import write
from worker.store.inserts import Encoded, insert_rows
from worker.store.items import NewItem
from worker.store.schema import OPEN_STATES, items, jobs, result_labels, results
from worker.store.sql import chunks, now

BILLED_CODE = "200"  # only Code-200 answers are billed, and only they are worth reusing
PROBE_CHUNK = 1000  # keys per probe statement (bound parameters stay well under SQLite's cap)


@dataclass(frozen=True)
class ReuseScope:
    """Which stored answers new rows may take: those for ``service`` under a job asking for
    the same ``info_type`` (its Ext data differs otherwise). URL rows only with ``urls``
    (``--reuse-urls``): a URL's content can change behind the same address."""

    service: str
    info_type: str
    urls: bool = False
    # False with ``--rescan``: no stored answer is taken (every image is called afresh), but
    # byte-identical copies in flight still wait for one call instead of paying twice.
    stored: bool = True


@dataclass(frozen=True)
class Inserted:
    """Rows inserted (ids, in no particular order) and how many of them took a stored answer."""

    ids: list[int]
    reused: int


def insert_reusing(
    engine: Engine,
    job_id: int,
    rows: Sequence[NewItem],
    scope: ReuseScope | None,
    encoded: Encoded | None = None,
) -> Inserted:
    """:func:`~worker.store.inserts.insert_items`, then link the new rows that can reuse a
    stored answer (unless ``scope.stored`` is off: ``--rescan``) or wait for a copy in flight
    (``scope`` None: no linking at all), in one transaction. ``encoded``: the rows written out
    for the database ahead of time (:func:`~worker.store.inserts.insert_rows`).

    The links cost a fixed handful of statements per batch; a batch none of whose images is
    known yet (a first listing of an archive, URL rows without ``--reuse-urls``) skips them
    after one indexed probe (:func:`may_link`), which is most batches of a large new job."""
    if not rows:
        return Inserted([], 0)
    with write(engine, eager=True) as conn:  # a producer's batch: see store.engine.write
        linking = scope is not None and may_link(conn, rows, scope)
        ids = insert_rows(conn, job_id, rows, encoded)
        if not linking or scope is None:
            return Inserted(ids, 0)
        reused = link_reused(conn, ids, scope) if scope.stored else 0
        link_waiters(conn, ids, scope)
    return Inserted(ids, reused)


def linkable_keys(rows: Sequence[NewItem], scope: ReuseScope) -> tuple[list[str], list[str]]:
    """The identities and content keys of the rows ``scope`` may link (pure): every row
    with a key, except URL rows without ``--reuse-urls``."""
    identities: list[str] = []
    contents: list[str] = []
    for row in rows:
        if row.kind == "url" and not scope.urls:
            continue
        if row.identity is not None:
            identities.append(row.identity)
        if row.content_key is not None:
            contents.append(row.content_key)
    return identities, contents


def may_link(conn: Connection, rows: Sequence[NewItem], scope: ReuseScope) -> bool:
    """Whether any of ``rows`` could take a stored answer or wait for another row: two of
    them share a key, or a row of the scope's service already stored (any job, any state) has
    one of their keys (another service's rows of the same image never match).
    False is certain (no link statement could match); True only means "look closer".
    Runs before the insert, in its transaction: SQLite holds the write lock, so no other
    writer adds a matching row between the probe and the insert."""
    identities, contents = linkable_keys(rows, scope)
    if not identities and not contents:
        return False
    if len(set(identities)) < len(identities) or len(set(contents)) < len(contents):
        return True
    for column, keys in (("identity", identities), ("content_key", contents)):
        for start in range(0, len(keys), PROBE_CHUNK):
            found = conn.execute(
                sa.select(items.c.id)
                .where(
                    items.c[column].in_(keys[start : start + PROBE_CHUNK]),
                    items.c.service == scope.service,  # a row's answers are its service's
                )
                .limit(1)
            ).first()
            if found is not None:
                return True
    return False


def _original(column: str, scope: ReuseScope) -> sa.ScalarSelect[int]:
    """The billed item behind an earlier answer for the image whose ``column`` equals the
    updated row's, or NULL: one index probe, then the answer's unique (item, service) key."""
    earlier = items.alias("earlier")
    answered = earlier.join(
        results,
        sa.and_(
            results.c.item_id == earlier.c.id,
            results.c.service == scope.service,
            results.c.code == BILLED_CODE,
        ),
    ).join(
        # Matched through an expression on purpose: the planner must reach ``earlier`` by the
        # identity index alone. With the statistics of a table that just grew (a first large
        # job, no ANALYZE yet), PostgreSQL otherwise ANDs in the (job_id, state) index and
        # reads a whole job per probe (measured: 1,000 rows/s instead of thousands).
        jobs,
        jobs.c.id == sa.func.coalesce(earlier.c.job_id, 0),
    )
    return (
        sa.select(sa.func.coalesce(earlier.c.reused_from, earlier.c.id))
        .select_from(answered)
        .where(earlier.c[column] == items.c[column], jobs.c.info_type == scope.info_type)
        .limit(1)
        .correlate(items)
        .scalar_subquery()
    )


def link_reused(conn: Connection, ids: Sequence[int], scope: ReuseScope) -> int:
    """Give each of the ``pending`` rows ``ids`` that can reuse an answer a copy of it, and
    mark them ``done``; returns how many. Runs in the caller's transaction."""
    linked = 0
    for chunk in chunks(ids):
        candidates = [
            items.c.id.in_(chunk),
            items.c.state == "pending",
            sa.or_(items.c.identity.is_not(None), items.c.content_key.is_not(None)),
        ]
        if not scope.urls:
            candidates.append(items.c.kind != "url")
        found = conn.execute(
            sa.update(items)
            .where(*candidates)
            .values(
                reused_from=sa.func.coalesce(
                    _original("identity", scope), _original("content_key", scope)
                )
            )
        )
        if not found.rowcount:
            continue
        linked += copy_answers(conn, chunk, scope.service)
    return linked


def _open_original(column: str, scope: ReuseScope) -> sa.ScalarSelect[int]:
    """The earliest row before the updated one with the same ``column``, still open, not a
    waiter itself, for the same service and ``infoType`` (any job), or NULL. Earlier only: a
    waiter always points to a smaller id, so waiting never forms a cycle."""
    earlier = items.alias("earlier")
    return (
        sa.select(sa.func.min(earlier.c.id))
        .select_from(earlier.join(jobs, jobs.c.id == sa.func.coalesce(earlier.c.job_id, 0)))
        .where(
            earlier.c[column] == items.c[column],
            earlier.c.id < items.c.id,
            earlier.c.state.in_(OPEN_STATES),
            earlier.c.waits_for.is_(None),
            earlier.c.service == scope.service,
            jobs.c.info_type == scope.info_type,
        )
        .correlate(items)
        .scalar_subquery()
    )


def link_waiters(conn: Connection, ids: Sequence[int], scope: ReuseScope) -> int:
    """Make each of the new ``pending`` rows ``ids`` that no stored answer served, but whose
    image an earlier open row (this batch's, this job's or a concurrent job's) is about to be
    billed for, a *waiter* of that row: it stays ``pending`` with ``waits_for`` set, the window
    never takes it, and :func:`worker.store.waiters.settle_waiters` later gives it the answer
    (or releases it). Runs after :func:`link_reused`, in the caller's transaction; returns how
    many rows wait. Content key first: it matches copies under other names and buckets."""
    waiting = 0
    for chunk in chunks(ids):
        candidates = [
            items.c.id.in_(chunk),
            items.c.state == "pending",
            items.c.reused_from.is_(None),
            sa.or_(items.c.identity.is_not(None), items.c.content_key.is_not(None)),
        ]
        if not scope.urls:
            candidates.append(items.c.kind != "url")
        conn.execute(
            sa.update(items)
            .where(*candidates)
            .values(
                waits_for=sa.func.coalesce(
                    _open_original("content_key", scope), _open_original("identity", scope)
                )
            )
        )
        waiting += int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    items.c.id.in_(chunk), items.c.waits_for.is_not(None)
                )
            ).scalar_one()
        )
    return waiting


def copy_answers(conn: Connection, chunk: list[int], service: str) -> int:
    """Copy the answers of the ``pending`` rows among ``chunk`` linked by ``reused_from``
    (results, then labels in their order) and mark them done; returns how many."""
    new = items.alias("new")
    linked = [new.c.id.in_(chunk), new.c.state == "pending", new.c.reused_from.is_not(None)]
    columns = ("service", "request_id", "code", "msg", "data_id", "risk_level", "ext", "raw")
    copy = (
        sa.select(new.c.id, new.c.job_id, *(results.c[c] for c in columns), results.c.moderated_at)
        .select_from(
            new.join(
                results,
                sa.and_(results.c.item_id == new.c.reused_from, results.c.service == service),
            )
        )
        .where(*linked)
    )
    conn.execute(
        sa.insert(results).from_select(["item_id", "job_id", *columns, "moderated_at"], copy)
    )
    mine = results.alias("mine")
    theirs = results.alias("theirs")
    label_columns = ("label", "confidence", "description", "risk_level")
    labels = (
        sa.select(mine.c.id, new.c.job_id, new.c.id, *(result_labels.c[c] for c in label_columns))
        .select_from(
            new.join(mine, sa.and_(mine.c.item_id == new.c.id, mine.c.service == service))
            .join(
                theirs,
                sa.and_(theirs.c.item_id == new.c.reused_from, theirs.c.service == service),
            )
            .join(result_labels, result_labels.c.result_id == theirs.c.id)
        )
        .where(*linked)
        .order_by(new.c.id, result_labels.c.id)
    )
    conn.execute(
        sa.insert(result_labels).from_select(
            ["result_id", "job_id", "item_id", *label_columns], labels
        )
    )
    message = (
        sa.select(results.c.msg)
        .where(results.c.item_id == items.c.id, results.c.service == service)
        .correlate(items)
        .scalar_subquery()
    )
    moment = now()
    done = conn.execute(
        sa.update(items)
        .where(items.c.id.in_(chunk), items.c.state == "pending", items.c.reused_from.is_not(None))
        .values(
            state="done",
            last_code=BILLED_CODE,
            last_message=message,
            last_error=None,
            finished_at=moment,
            updated_at=moment,
        )
    )
    return int(done.rowcount)
