"""store.record_results on SQLite and PostgreSQL: a message's answers in a few multi-row
statements, stored exactly as one record_result each would store them, all or none."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from worker import store
from worker.results import parse_response

pytestmark = pytest.mark.service

VENDOR = Path(__file__).resolve().parent.parent / "data" / "vendor"
SERVICE = "baselineCheck_global"


def answer(name: str):
    return parse_response((VENDOR / name).read_text(encoding="utf-8"), http_status=200)


def new_items(engine, job, n: int, start: int = 0) -> list[int]:
    rows = [
        store.NewItem(
            "url",
            f"https://e.com/{i}.jpg",
            f"https://e.com/{i}.jpg",
            None,
            None,
            None,
            f"d{i}",
            None,
            "in.txt",
            i,
            "pending",
        )
        for i in range(start, start + n)
    ]
    return sorted(store.insert_items(engine, job.id, rows))


def stored(engine) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """Every results row (without its id), every label with its result's item, every item's
    outcome columns: what one record_result per answer would have left."""
    r, lab, it = store.results, store.result_labels, store.items
    with engine.connect() as conn:
        results = conn.execute(
            sa.select(
                r.c.item_id,
                r.c.job_id,
                r.c.service,
                r.c.request_id,
                r.c.code,
                r.c.msg,
                r.c.data_id,
                r.c.risk_level,
                r.c.ext,
                r.c.raw,
            ).order_by(r.c.item_id)
        ).all()
        labels = conn.execute(
            sa.select(
                r.c.item_id,
                lab.c.item_id,
                lab.c.job_id,
                lab.c.label,
                lab.c.confidence,
                lab.c.description,
                lab.c.risk_level,
            )
            .join(r, r.c.id == lab.c.result_id)
            .order_by(lab.c.item_id, lab.c.id)
        ).all()
        items = conn.execute(
            sa.select(
                it.c.id,
                it.c.state,
                it.c.last_code,
                it.c.last_message,
                it.c.lease_owner,
                it.c.finished_at.is_not(None),
            ).order_by(it.c.id)
        ).all()
    return [tuple(x) for x in results], [tuple(x) for x in labels], [tuple(x) for x in items]


KINDS = [
    "response_risk_detected.json",  # four labels
    "response_no_risk.json",  # one label, no confidence
    "response_custom_image_hit.json",  # Ext
    "response_text_in_image_violation.json",
]


def test_one_transaction_stores_what_one_record_result_each_would(database_url, engine):
    """Two jobs side by side: one stored answer by answer, one a message at a time; every
    results row, label and item column comes out the same, and each label hangs off its own
    item's result (the multi-row INSERT's ids come back in no promised order)."""
    one = store.get_or_create_job(engine, "one", SERVICE, "")
    many = store.get_or_create_job(engine, "many", SERVICE, "")
    singles = new_items(engine, one, 8)
    batch = new_items(engine, many, 8, start=100)
    for ids, owner in ((singles, "w1"), (batch, "w2")):
        store.claim_items(engine, ids, owner, 60)
    responses = [answer(KINDS[i % len(KINDS)]) for i in range(8)]
    for item_id, response in zip(singles, responses, strict=True):
        assert store.record_result(engine, item_id, "w1", SERVICE, response, job_id=one.id)
    # Given out of order, and one without its job (looked up)
    answers = [
        store.BilledAnswer(item_id, None if n == 3 else many.id, SERVICE, response)
        for n, (item_id, response) in enumerate(zip(batch, responses, strict=True))
    ][::-1]
    assert store.record_results(engine, answers) == [True] * 8
    results, labels, items = stored(engine)
    by_item = {row[0]: row for row in results}
    for single, other in zip(singles, batch, strict=True):
        assert by_item[single][2:] == by_item[other][2:]
        assert (by_item[single][1], by_item[other][1]) == (one.id, many.id)
    label_of = {}
    for row in labels:
        assert row[0] == row[1]  # the label's item is its result's item
        label_of.setdefault(row[0], []).append(row[3:])
    assert len(labels) == sum(len(r.data.result) for r in responses) * 2
    for single, other in zip(singles, batch, strict=True):
        assert label_of[single] == label_of[other]
    outcome = {(row[1], row[2], row[4], bool(row[5])) for row in items}
    assert outcome == {("done", "200", None, True)}
    msgs = {row[0]: row[3] for row in items}
    assert [msgs[i] for i in singles] == [msgs[i] for i in batch]


def test_an_answer_stored_before_or_twice_in_the_message_counts_once(engine):
    job = store.get_or_create_job(engine, "j", SERVICE, "")
    a, b, c = new_items(engine, job, 3)
    risky = answer("response_risk_detected.json")
    assert store.record_result(engine, b, "w0", SERVICE, risky) is True
    outcomes = store.record_results(
        engine,
        [
            store.BilledAnswer(a, job.id, SERVICE, risky),
            store.BilledAnswer(b, job.id, SERVICE, answer("response_no_risk.json")),
            store.BilledAnswer(c, job.id, SERVICE, risky),
            store.BilledAnswer(a, job.id, SERVICE, answer("response_no_risk.json")),
        ],
    )
    assert outcomes == [True, False, True, False]
    results, labels, _ = stored(engine)
    assert [row[0] for row in results] == [a, b, c]
    assert [row[7] for row in results] == ["high", "high", "high"]  # the first answer of each
    assert len(labels) == 12


def test_a_missing_item_stores_none_of_the_message(engine):
    job = store.get_or_create_job(engine, "j", SERVICE, "")
    a, b = new_items(engine, job, 2)
    risky = answer("response_risk_detected.json")
    with pytest.raises(LookupError, match="item 424242"):
        store.record_results(
            engine,
            [
                store.BilledAnswer(a, job.id, SERVICE, risky),
                store.BilledAnswer(424242, None, SERVICE, risky),
                store.BilledAnswer(b, job.id, SERVICE, risky),
            ],
        )
    results, labels, items = stored(engine)
    assert (results, labels) == ([], [])
    assert {row[1] for row in items} == {"pending"}


def test_answers_with_different_codes_mark_each_item_with_its_own(engine):
    """The items are marked done one UPDATE per distinct (code, message)."""
    job = store.get_or_create_job(engine, "j", SERVICE, "")
    a, b, c = new_items(engine, job, 3)
    ok = answer("response_risk_detected.json")
    odd = parse_response(
        {"Code": 200, "Msg": "OK, but \x00odd", "RequestId": "r", "Data": {"Result": []}},
        http_status=200,
    )
    store.record_results(
        engine,
        [
            store.BilledAnswer(a, job.id, SERVICE, ok),
            store.BilledAnswer(b, job.id, SERVICE, odd),
            store.BilledAnswer(c, job.id, SERVICE, ok),
        ],
    )
    _, _, items = stored(engine)
    assert [row[3] for row in items] == ["OK", "OK, but odd", "OK"]
    assert {row[1] for row in items} == {"done"}


def test_storable_returns_a_clean_container_as_it_is_and_copies_the_others():
    clean = {"a": [1, 2.5, "x", None, {"b": True}]}
    assert store.storable(clean) is clean
    assert store.storable({"a": "\\u0000 is six characters"}) == {"a": "\\u0000 is six characters"}
    assert store.storable({"a\x00": [float("nan")]}) == {"a": ["NaN"]}
    assert store.storable([{"c": float("-inf")}], number=None) == [{"c": None}]


def test_the_driver_sql_insert_stores_each_column_as_a_core_insert_does(engine):
    """record_results writes its rows as driver SQL; byte for byte (as the database prints
    them), they are what a Core INSERT of the same values stores: JSON text, a JSON null
    for no Ext, the time's text on SQLite."""
    job = store.get_or_create_job(engine, "j", SERVICE, "")
    core_item, driver_item = new_items(engine, job, 2)
    response = answer("response_risk_detected.json")  # no Ext
    store.record_results(engine, [store.BilledAnswer(driver_item, job.id, SERVICE, response)])
    r, lab = store.results, store.result_labels
    with engine.begin() as conn:
        row = conn.execute(sa.select(r).where(r.c.item_id == driver_item)).one()._asdict()
        del row["id"]
        result_id = conn.execute(
            sa.insert(r).values({**row, "item_id": core_item}).returning(r.c.id)
        ).scalar_one()
        conn.execute(
            sa.insert(lab),
            [
                {**x._asdict(), "item_id": core_item, "result_id": result_id}
                for x in conn.execute(
                    sa.select(*(c for c in lab.c if c.name != "id")).where(
                        lab.c.item_id == driver_item
                    )
                )
            ],
        )
    text = "::text" if engine.dialect.name == "postgresql" else ""
    with engine.connect() as conn:
        printed = [
            conn.exec_driver_sql(
                f"SELECT {', '.join(f'{c}{text}' for c in columns)} FROM {table} "  # noqa: S608
                f"WHERE item_id = {item} ORDER BY id"
            ).all()
            for item in (core_item, driver_item)
            for table, columns in (
                (
                    "results",
                    [
                        "job_id",
                        "service",
                        "request_id",
                        "code",
                        "msg",
                        "data_id",
                        "risk_level",
                        "ext",
                        "raw",
                        "moderated_at",
                    ],
                ),
                ("result_labels", ["job_id", "label", "confidence", "description", "risk_level"]),
            )
        ]
    assert printed[:2] == printed[2:]
    assert printed[0][0][7] in ("null", None)  # as stored today: JSON null (checked, not assumed)
