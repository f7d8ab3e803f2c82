"""Waiters on SQLite through the store API: copies of an image in flight are inserted waiting
for the first, never taken by the window, and settled when it is answered or fails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from worker import store
from worker.results import parse_response
from worker.store.engine import write
from worker.store.reuse import may_link

VENDOR = Path(__file__).resolve().parent.parent / "data" / "vendor"
SERVICE = "baselineCheck_global"
INFO = "customImage,textInImage"


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[sa.Engine]:
    store.upgrade(sqlite_url)
    engine = store.make_engine(sqlite_url)
    yield engine
    engine.dispose()


def new_file(name: str, content: str) -> store.NewItem:
    digest = (content * 64)[:64]
    return store.NewItem(
        kind="file",
        ref_key=f"file:{name}",
        image_url=None,
        oss_bucket=None,
        oss_object=None,
        oss_region=None,
        data_id=None,
        referer=None,
        source="folder",
        line=1,
        state="pending",
        local_path=f"/archive/{name}",
        sha256=digest,
        identity=f"sha256:{digest}",
        content_key=f"sha256:{digest}",
    )


def insert(engine: sa.Engine, name: str, files: list[tuple[str, str]]) -> dict[str, int]:
    job = store.get_or_create_job(engine, name, SERVICE, INFO)
    store.insert_reusing(
        engine, job.id, [new_file(n, c) for n, c in files], store.ReuseScope(SERVICE, INFO)
    )
    with engine.connect() as conn:
        return {
            path.rsplit("/", 1)[1]: int(i)
            for i, path in conn.execute(
                sa.select(store.items.c.id, store.items.c.local_path).where(
                    store.items.c.job_id == job.id
                )
            )
        }


def row(engine: sa.Engine, item_id: int) -> sa.Row:
    with engine.connect() as conn:
        return conn.execute(sa.select(store.items).where(store.items.c.id == item_id)).one()


def answer(engine: sa.Engine, item_id: int) -> str:
    raw = json.loads((VENDOR / "response_risk_detected.json").read_text(encoding="utf-8"))
    raw["RequestId"] = f"REQ-{item_id}"
    store.record_result(engine, item_id, "w", SERVICE, parse_response(json.dumps(raw), 200))
    return str(raw["RequestId"])


def take_all(engine: sa.Engine) -> list[int]:
    return [
        i for job in store.jobs_with_pending(engine) for i in store.take_pending(engine, job, 100)
    ]


def test_copies_in_one_batch_and_in_a_concurrent_job_wait_for_the_first(engine) -> None:
    ids = insert(engine, "a", [("x.png", "a"), ("y.png", "a"), ("z.png", "a"), ("o.png", "b")])
    later = insert(engine, "b", [("x2.png", "a")])

    assert row(engine, ids["x.png"]).waits_for is None
    assert [row(engine, ids[n]).waits_for for n in ("y.png", "z.png")] == [ids["x.png"]] * 2
    assert row(engine, later["x2.png"]).waits_for == ids["x.png"]
    assert sorted(take_all(engine)) == sorted([ids["x.png"], ids["o.png"]])  # no waiter taken
    assert store.settle_waiters(engine) == store.Settled()  # the original is still open


def test_an_answered_original_gives_its_waiters_a_copy_without_a_call(engine) -> None:
    ids = insert(engine, "a", [("x.png", "a"), ("y.png", "a"), ("z.png", "a")])
    later = insert(engine, "b", [("x2.png", "a")])
    take_all(engine)
    request_id = answer(engine, ids["x.png"])

    settled = store.settle_waiters(engine)

    assert settled == store.Settled(copied=3)
    for item_id in (ids["y.png"], ids["z.png"], later["x2.png"]):
        copy = row(engine, item_id)
        assert (copy.state, copy.reused_from, copy.waits_for) == ("done", ids["x.png"], None)
        with engine.connect() as conn:
            stored = conn.execute(
                sa.select(store.results.c.request_id).where(store.results.c.item_id == item_id)
            ).scalar_one()
        assert stored == request_id
    assert store.settle_waiters(engine) == store.Settled()  # nothing twice
    assert take_all(engine) == []


def test_a_failed_original_releases_one_waiter_and_the_others_wait_for_it(engine) -> None:
    ids = insert(engine, "a", [("x.png", "a"), ("y.png", "a"), ("z.png", "a")])
    take_all(engine)
    claimed = store.claim_item(engine, ids["x.png"], "w", 60)
    assert claimed is not None
    store.record_failure(engine, ids["x.png"], "w", "vanished", None, "the file vanished")

    assert store.settle_waiters(engine) == store.Settled(released=1, moved=1)

    assert row(engine, ids["y.png"]).waits_for is None
    assert row(engine, ids["z.png"]).waits_for == ids["y.png"]
    assert take_all(engine) == [ids["y.png"]]  # exactly one call for the image next
    answer(engine, ids["y.png"])
    assert store.settle_waiters(engine) == store.Settled(copied=1)
    assert row(engine, ids["z.png"]).reused_from == ids["y.png"]


def test_without_a_scope_nothing_is_linked(engine) -> None:
    job = store.get_or_create_job(engine, "r", SERVICE, INFO)
    store.insert_reusing(engine, job.id, [new_file("x.png", "a"), new_file("y.png", "a")], None)
    assert len(take_all(engine)) == 2


def test_a_rescan_takes_no_stored_answer_but_copies_in_flight_still_wait(engine) -> None:
    first = insert(engine, "first", [("x.png", "a")])
    take_all(engine)
    answer(engine, first["x.png"])  # a stored answer the rescan must not take
    job = store.get_or_create_job(engine, "rescan", SERVICE, INFO)
    rescan = store.ReuseScope(SERVICE, INFO, stored=False)

    inserted = store.insert_reusing(
        engine, job.id, [new_file("x.png", "a"), new_file("y.png", "a")], rescan
    )

    assert inserted.reused == 0
    x, y = sorted(inserted.ids)
    assert row(engine, x).waits_for is None and row(engine, x).reused_from is None
    assert row(engine, y).waits_for == x  # the byte-identical copy waits for one fresh call
    assert take_all(engine) == [x]
    request_id = answer(engine, x)
    assert store.settle_waiters(engine) == store.Settled(copied=1)
    assert (row(engine, y).state, row(engine, y).reused_from) == ("done", x)
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(store.results.c.request_id).where(store.results.c.item_id == y)
        ).scalar_one()
    assert stored == request_id


def test_a_batch_of_new_images_skips_the_links_after_one_probe(engine) -> None:
    scope = store.ReuseScope(SERVICE, INFO)
    job = store.get_or_create_job(engine, "probe", SERVICE, INFO)
    fresh = [new_file("x.png", "a"), new_file("y.png", "b")]
    with write(engine) as conn:
        assert not may_link(conn, fresh, scope)
        assert may_link(conn, [*fresh, new_file("z.png", "a")], scope)  # a copy inside
    store.insert_reusing(engine, job.id, fresh, scope)
    with write(engine) as conn:
        assert may_link(conn, [new_file("w.png", "b")], scope)  # a copy already stored
