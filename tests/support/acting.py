"""Jobs with decisions, for the tests of ``imgmod act`` / ``imgmod restore``: OSS objects on
the emulator's disk, their items, and a decision row per item (inserted directly, as the
policy would)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import alibabacloud_oss_v2 as oss
import sqlalchemy as sa

from worker import store
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.emulator.samples import png_bytes
from worker.store.schema import decisions

REGION = "ap-southeast-1"


def write_objects(root: Path, bucket: str, keys: Sequence[str]) -> None:
    """Objects ``keys`` in ``bucket`` of the emulator's ``--oss-root``."""
    for n, key in enumerate(keys):
        path = root / REGION / bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(n))


def decided_job(
    engine: sa.Engine,
    name: str,
    refs: Sequence[tuple[str, str] | str],
    decision_of: dict[int, str] | str = "block",
    services: Sequence[str] = ("baselineCheck_global",),
) -> int:
    """A job of ``refs`` (``(bucket, key)`` for an OSS object, a string for a URL), each row
    ``done`` with one decision (by position in id order, the first service's rows first, then
    the next service's; one for all when a string). Returns the job id."""
    job = store.get_or_create_job(engine, name, services, "")
    rows = []
    for service, (line, ref) in ((s, r) for s in services for r in enumerate(refs, 1)):
        oss_ref = isinstance(ref, tuple)
        rows.append(
            store.NewItem(
                kind="oss" if oss_ref else "url",
                ref_key=f"oss://{ref[0]}/{ref[1]}" if isinstance(ref, tuple) else ref,
                image_url=None if isinstance(ref, tuple) else ref,
                oss_bucket=ref[0] if isinstance(ref, tuple) else None,
                oss_object=ref[1] if isinstance(ref, tuple) else None,
                oss_region=REGION if oss_ref else None,
                data_id=f"d{line}",
                referer=None,
                source="test",
                line=line,
                state="pending",
                service=service,
            )
        )
    store.insert_items(engine, job.id, rows)
    at = datetime.now(timezone.utc)
    with engine.begin() as conn:
        conn.execute(
            store.items.update().where(store.items.c.job_id == job.id).values(state="done")
        )
        ids = conn.execute(
            sa.select(store.items.c.id).where(store.items.c.job_id == job.id).order_by("id")
        ).scalars()
        conn.execute(
            decisions.insert(),
            [
                {
                    "item_id": item_id,
                    "job_id": job.id,
                    "decision": decision_of
                    if isinstance(decision_of, str)
                    else decision_of.get(n, "pass"),
                    "policy_name": "default",
                    "policy_version": "1",
                    "source": "policy",
                    "actor": "test",
                    "decided_at": at,
                }
                for n, item_id in enumerate(ids)
            ],
        )
    return job.id


def oss_client(oss_url: str) -> oss.Client:
    """The real SDK on the emulator's OSS, with its test AccessKey."""
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(
        TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
    )
    cfg.region = REGION
    cfg.endpoint = oss_url
    cfg.use_path_style = True
    return oss.Client(cfg)
