"""Reads for a dry run: what an enqueue would find already in the database, writing nothing.

:func:`known_ref_keys` says which references a job already holds (an enqueue would drop them as
duplicates); :func:`reusable_keys` which identities or content keys have a stored Code-200
answer a new row could take (the lookup :func:`worker.store.reuse.link_reused` makes at
insert, asked as a plain ``SELECT``); :func:`in_flight_keys` which have an open row a new row
would wait for (:func:`worker.store.reuse.link_waiters`). All take a batch and cost one
statement per thousand values, whatever the input's size. Answers and open rows are those of
one service (``scope.service``): a job of several services asks once per service.
"""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.store.reuse import BILLED_CODE, ReuseScope
from worker.store.schema import OPEN_STATES, items, jobs, results
from worker.store.sql import chunks


def known_ref_keys(engine: Engine, job_id: int, ref_keys: Collection[str]) -> set[str]:
    """The ``ref_keys`` the job already has a row for."""
    found: set[str] = set()
    with engine.connect() as conn:
        for chunk in chunks(sorted(ref_keys)):  # type: ignore[arg-type]
            found.update(
                conn.execute(
                    sa.select(items.c.ref_key).where(
                        items.c.job_id == job_id, items.c.ref_key.in_(chunk)
                    )
                ).scalars()
            )
    return found


def reusable_keys(
    engine: Engine, column: str, values: Collection[str], scope: ReuseScope
) -> set[str]:
    """Of ``values`` of ``column`` (``identity`` or ``content_key``), those whose image has a
    stored Code-200 answer for the scope's service under a job of the same ``infoType``."""
    earlier = items.alias("earlier")
    answered = earlier.join(
        results,
        sa.and_(
            results.c.item_id == earlier.c.id,
            results.c.service == scope.service,
            results.c.code == BILLED_CODE,
        ),
    ).join(jobs, jobs.c.id == earlier.c.job_id)
    found: set[str] = set()
    with engine.connect() as conn:
        for chunk in chunks(sorted(values)):  # type: ignore[arg-type]
            found.update(
                conn.execute(
                    sa.select(earlier.c[column])
                    .distinct()
                    .select_from(answered)
                    .where(earlier.c[column].in_(chunk), jobs.c.info_type == scope.info_type)
                ).scalars()
            )
    return found


def in_flight_keys(
    engine: Engine, column: str, values: Collection[str], scope: ReuseScope
) -> set[str]:
    """Of ``values`` of ``column``, those with an open row (any job, not itself waiting) of the
    scope's service under a job of the same ``infoType``: a new row of that image would wait
    for its answer instead of being called."""
    earlier = items.alias("earlier")
    found: set[str] = set()
    with engine.connect() as conn:
        for chunk in chunks(sorted(values)):  # type: ignore[arg-type]
            found.update(
                conn.execute(
                    sa.select(earlier.c[column])
                    .distinct()
                    .select_from(earlier.join(jobs, jobs.c.id == earlier.c.job_id))
                    .where(
                        earlier.c[column].in_(chunk),
                        earlier.c.service == scope.service,
                        earlier.c.state.in_(OPEN_STATES),
                        earlier.c.waits_for.is_(None),
                        jobs.c.info_type == scope.info_type,
                    )
                ).scalars()
            )
    return found
