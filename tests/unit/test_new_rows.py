"""worker.new_rows.prepare_batches: input records as rows, and as each database's insert
takes them, once per service (what the producer's read-ahead thread makes)."""

from __future__ import annotations

from pathlib import Path

from worker.new_rows import prepare_batches
from worker.sources import read_inputs
from worker.store.inserts import CopyText, SqliteValues

SERVICES = ("baselineCheck_global", "aigcDetector_global")


def _records(tmp_path: Path, lines: list[str]):
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return read_inputs([str(source)])


def test_batches_hold_their_lines_rows_and_rejections(tmp_path) -> None:
    lines = [f"https://example.com/{n}.jpg" for n in range(5)] + ["not a url", "ftp://x/y.png"]
    batches = list(prepare_batches(_records(tmp_path, lines), 3, "sqlite", SERVICES[:1]))
    assert [b.lines for b in batches] == [3, 3, 1]
    assert sum(len(b.rows) for b in batches) == 5
    assert [r.line for b in batches for r in b.rejected] == [6, 7]
    assert all(row.state == "rejected" for b in batches for row in b.rejected_rows)
    assert batches[-1].encoded == {}  # no accepted row, nothing to write out


def test_each_service_gets_the_rows_written_out_under_its_name(tmp_path) -> None:
    lines = [f"https://example.com/{n}.jpg" for n in range(4)]
    (sqlite,) = prepare_batches(_records(tmp_path, lines), 10, "sqlite", SERVICES)
    (postgresql,) = prepare_batches(_records(tmp_path, lines), 10, "postgresql", SERVICES)
    for service in SERVICES:
        values = sqlite.encoded[service]
        assert isinstance(values, SqliteValues)
        assert values.chunks[0].count(service) == 4  # one per row, in the service column
        text = postgresql.encoded[service]
        assert isinstance(text, CopyText) and "service" in text.columns
        assert [
            line.split("\t")[text.columns.index("service")] for line in text.text.splitlines()
        ] == [service] * 4
    assert all(row.service is None for row in sqlite.rows)  # the rows stay the job's


def test_the_first_batch_is_smaller_so_the_workers_start_sooner(tmp_path) -> None:
    """Each batch after a small first one doubles, up to the size: on SQLite a batch's insert
    holds the one write lock, and the workers' first claims wait for the second batch's."""
    lines = [f"https://example.com/{n}.jpg" for n in range(12)]
    batches = list(prepare_batches(_records(tmp_path, lines), 5, "sqlite", SERVICES[:1], first=2))
    assert [b.lines for b in batches] == [2, 4, 5, 1]
    assert [row.line for b in batches for row in b.rows] == list(range(1, 13))
    # a first batch larger than the others is the others' size
    bigger = list(prepare_batches(_records(tmp_path, lines), 5, "sqlite", SERVICES[:1], first=9))
    assert [b.lines for b in bigger] == [5, 5, 2]
