"""Reads for a dry run: what an enqueue would find already in the database, writing nothing.

:func:`known_ref_keys` says which references a job already holds (an enqueue would drop them as
duplicates); :func:`reusable_keys` which identities or content keys have a stored Code-200
answer a new row could take (the lookup :func:`worker.store.reuse.link_reused` makes at
insert, asked as a plain ``SELECT``). Both take a batch and cost one statement per thousand
values, whatever the input's size.
"""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.store.reuse import BILLED_CODE, ReuseScope
from worker.store.schema import items, jobs, results
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
