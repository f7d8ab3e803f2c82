"""worker.sources: every input format, every kind of bad line, line numbers, flat memory."""

from __future__ import annotations

import io
import json
import logging
import tracemalloc
from itertools import islice
from pathlib import Path

import pytest

from worker.sources import MAX_LINE_BYTES, Accepted, Rejected, read_inputs


def write(tmp_path: Path, name: str, content: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return str(path)


def read(paths, **kwargs) -> list[Accepted | Rejected]:
    return list(read_inputs(paths, **kwargs))


def summary(records) -> list[tuple[int, str]]:
    """(line, url-or-key) for accepted, (line, 'REJECTED field') for rejected."""
    return [
        (r.line, r.ref.key) if isinstance(r, Accepted) else (r.line, f"REJECTED {r.field}")
        for r in records
    ]


# --------------------------------------------------------------------------- txt


def test_txt_skips_blanks_and_comments_and_numbers_physical_lines(tmp_path):
    path = write(
        tmp_path,
        "in.txt",
        "# my images\n"
        "https://example.com/a.jpg\n"
        "\n"
        "   https://example.com/b.jpg   \n"
        "\t\n"
        "  # indented comment\n"
        "https://example.com/c.jpg",  # no final newline
    )
    assert summary(read([path])) == [
        (2, "https://example.com/a.jpg"),
        (4, "https://example.com/b.jpg"),
        (7, "https://example.com/c.jpg"),
    ]


def test_txt_crlf_line_endings_and_byte_order_mark_are_invisible(tmp_path):
    path = write(
        tmp_path,
        "in.txt",
        b"\xef\xbb\xbfhttps://example.com/a.jpg\r\nhttps://example.com/b.jpg\r\n",
    )
    records = read([path])
    assert summary(records) == [(1, "https://example.com/a.jpg"), (2, "https://example.com/b.jpg")]


def test_txt_invalid_url_is_rejected_with_the_api_field_and_the_rest_goes_on(tmp_path):
    path = write(tmp_path, "in.txt", "ftp://example.com/a.jpg\nhttps://example.com/ok.jpg\n")
    records = read([path])
    assert summary(records) == [(1, "REJECTED imageUrl"), (2, "https://example.com/ok.jpg")]
    bad = records[0]
    assert isinstance(bad, Rejected)
    assert bad.raw == "ftp://example.com/a.jpg"
    assert str(bad).startswith(f"{path}:1: imageUrl: ")


def test_txt_oss_lines_use_the_given_region(tmp_path):
    path = write(tmp_path, "in.txt", "oss://my-bucket/photos/2024/a b.jpg\n")
    (record,) = read([path], oss_region="cn-beijing")
    assert isinstance(record, Accepted)
    assert record.ref.kind == "oss"
    assert (record.ref.oss_bucket, record.ref.oss_object, record.ref.oss_region) == (
        "my-bucket",
        "photos/2024/a b.jpg",
        "cn-beijing",
    )


def test_txt_oss_lines_without_a_region_are_rejected_naming_the_option(tmp_path):
    path = write(tmp_path, "in.txt", "oss://my-bucket/a.jpg\noss://my-bucket\n")
    first, second = read([path])
    assert isinstance(first, Rejected) and first.field == "ossRegionId"
    assert "--oss-region" in first.reason
    assert isinstance(second, Rejected) and second.field == "ossObjectName"


def test_referer_argument_is_the_default_for_every_reference(tmp_path):
    path = write(tmp_path, "in.txt", "https://example.com/a.jpg\n")
    (record,) = read([path], referer="www.example.com")
    assert isinstance(record, Accepted) and record.ref.referer == "www.example.com"


# --------------------------------------------------------------------------- bad bytes


def test_invalid_utf8_nul_bytes_and_binary_garbage_are_rejected_never_a_crash(tmp_path):
    path = write(
        tmp_path,
        "in.txt",
        b"https://example.com/\xff\xfe.jpg\n"
        b"https://example.com/a\x00.jpg\n"
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\n"
        b"https://example.com/ok.jpg\n",
    )
    records = read([path])
    assert [(r.line, getattr(r, "field", None)) for r in records] == [
        (1, "line"),  # invalid UTF-8
        (2, "line"),  # a NUL byte
        (3, "line"),  # "\x89PNG\r": not UTF-8
        (4, "imageUrl"),  # "\x1a": valid text, not a URL
        (5, "line"),  # NUL bytes
        (6, None),
    ]
    assert "UTF-8" in records[0].reason
    assert "NUL" in records[1].reason
    assert all("\x00" not in r.raw for r in records if isinstance(r, Rejected))


def test_a_line_over_the_limit_is_rejected_and_the_next_line_keeps_its_number(tmp_path):
    path = write(
        tmp_path,
        "in.txt",
        b"https://example.com/a.jpg\n"
        + b"x" * (MAX_LINE_BYTES * 3 + 17)
        + b"\nhttps://example.com/b.jpg\n",
    )
    records = read([path])
    assert summary(records) == [
        (1, "https://example.com/a.jpg"),
        (2, "REJECTED line"),
        (3, "https://example.com/b.jpg"),
    ]
    assert len(records[1].raw) <= 2000


def test_a_10mb_line_is_skipped_in_bounded_memory(tmp_path):
    path = write(tmp_path, "in.txt", b"y" * (10 * 1024 * 1024))
    tracemalloc.start()
    try:
        records = read([path])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary(records) == [(1, "REJECTED line")]
    assert peak < 4 * MAX_LINE_BYTES


# --------------------------------------------------------------------------- csv


def test_csv_with_url_column_and_quoted_cells(tmp_path):
    path = write(
        tmp_path,
        "in.csv",
        'url,data_id,referer\n"https://example.com/a,b.jpg",img-1,\nhttps://example.com/c.jpg,,www.x.com\n',
    )
    first, second = read([path], referer="default.example")
    assert isinstance(first, Accepted) and isinstance(second, Accepted)
    assert (first.line, first.ref.image_url, first.ref.data_id, first.ref.referer) == (
        2,
        "https://example.com/a,b.jpg",
        "img-1",
        "default.example",
    )
    assert (second.line, second.ref.data_id, second.ref.referer) == (3, None, "www.x.com")


def test_csv_accepts_the_api_column_names_and_oss_rows_fall_back_to_the_region(tmp_path):
    path = write(
        tmp_path,
        "in.csv",
        "imageUrl,ossBucketName,ossObjectName,ossRegionId,dataId\n"
        "https://example.com/a.jpg,,,,a1\n"
        "b,my-bucket,k/1.jpg,,b1\n"
        ",my-bucket,k/2.jpg,us-east-1,b2\n",
    )
    records = read([path], oss_region="cn-hangzhou")
    assert summary(records) == [
        (2, "https://example.com/a.jpg"),
        (3, "REJECTED imageUrl"),  # both a URL cell and OSS cells
        (4, "oss://us-east-1/my-bucket/k/2.jpg"),
    ]
    path2 = write(tmp_path, "oss.csv", "oss_bucket,oss_object\nmy-bucket,k/3.jpg\n")
    assert summary(read([path2], oss_region="cn-hangzhou")) == [
        (2, "oss://cn-hangzhou/my-bucket/k/3.jpg")
    ]


def test_csv_rows_with_missing_or_extra_cells_or_bad_quoting_are_rejected(tmp_path):
    path = write(
        tmp_path,
        "in.csv",
        "url,data_id\n"
        "https://example.com/a.jpg\n"
        "https://example.com/b.jpg,b,extra\n"
        '"https://example.com/c.jpg"x,c\n'
        "https://example.com/d.jpg,d\n",
    )
    records = read([path])
    assert summary(records) == [
        (2, "REJECTED csv"),
        (3, "REJECTED csv"),
        (4, "REJECTED csv"),
        (5, "https://example.com/d.jpg"),
    ]
    assert "1 cells but the header has 2" in records[0].reason
    assert "quoting" in records[2].reason


def test_csv_quoted_cell_spanning_lines_is_rejected_and_line_numbers_stay_physical(tmp_path):
    path = write(
        tmp_path,
        "in.csv",
        'url,data_id\n"https://example.com/a.jpg\nb.jpg",x\nhttps://example.com/c.jpg,c\n',
    )
    records = read([path])
    assert summary(records) == [
        (2, "REJECTED csv"),
        (3, "REJECTED imageUrl"),  # the tail of the broken record, read as a row of its own
        (4, "https://example.com/c.jpg"),
    ]
    assert "span" in records[0].reason


def test_csv_unknown_columns_are_ignored_and_named_in_a_warning(tmp_path, caplog):
    path = write(tmp_path, "in.csv", "owner,URL,size\nalice,https://example.com/a.jpg,12\n")
    with caplog.at_level(logging.WARNING, logger="worker.sources"):
        records = read([path])
    assert summary(records) == [(2, "https://example.com/a.jpg")]
    assert "owner, size" in caplog.text


def test_csv_without_a_header_rejects_line_1_and_skips_the_file(tmp_path):
    path = write(tmp_path, "in.csv", "https://example.com/a.jpg\nhttps://example.com/b.jpg\n")
    other = write(tmp_path, "next.txt", "https://example.com/c.jpg\n")
    records = read([path, other])
    assert summary(records) == [(1, "REJECTED csv"), (1, "https://example.com/c.jpg")]
    assert ".txt" in records[0].reason and "skipped" in records[0].reason


def test_csv_header_naming_a_field_twice_is_rejected(tmp_path):
    path = write(tmp_path, "in.csv", "url,imageUrl\nhttps://example.com/a.jpg,x\n")
    (record,) = read([path])
    assert isinstance(record, Rejected) and "imageUrl more than once" in record.reason


# --------------------------------------------------------------------------- jsonl


def test_jsonl_objects_with_either_key_style(tmp_path):
    lines = [
        {"imageUrl": "https://example.com/a.jpg", "dataId": "a"},
        {},
        {"oss_bucket": "my-bucket", "oss_object": "x.jpg", "oss_region": "cn-beijing"},
        {"url": "https://example.com/b.jpg", "referer": None},
    ]
    text = "\n".join(json.dumps(line) if line else "" for line in lines) + "\n"
    path = write(tmp_path, "in.ndjson", text)
    records = read([path], referer="r.example")
    assert summary(records) == [
        (1, "https://example.com/a.jpg"),
        (3, "oss://cn-beijing/my-bucket/x.jpg"),
        (4, "https://example.com/b.jpg"),
    ]
    assert records[2].ref.referer == "r.example"


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ('{"url": "https://example.com/a.jpg"', "json", "not valid JSON"),
        ('["https://example.com/a.jpg"]', "json", "not list"),
        ('"https://example.com/a.jpg"', "json", "not str"),
        ('{"url": 42}', "imageUrl", "not a JSON int"),
        ('{"url": "https://example.com/a.jpg", "dataId": true}', "dataId", "boolean"),
        ('{"url": "https://example.com/a.jpg", "size": 3}', "json", "unknown key(s) 'size'"),
        ('{"url": "https://example.com/a.jpg", "imageUrl": "x"}', "json", "twice"),
        (
            '{"ossBucketName": "b-1", "ossObjectName": "a\\u0000b", "ossRegionId": "cn-beijing"}',
            "ossObjectName",
            "NUL",
        ),
        (
            '{"ossBucketName": "b-1", "ossObjectName": "a\\ud800", "ossRegionId": "cn-beijing"}',
            "ossObjectName",
            "surrogate",
        ),
        ("[" * 100_000 + "]" * 100_000, "json", "JSON"),
        ('{"dataId": "x"}', "imageUrl", "missing"),
    ],
)
def test_jsonl_bad_lines_are_rejected_naming_the_field(tmp_path, line, field, words):
    path = write(tmp_path, "in.jsonl", line + "\n" + '{"url": "https://example.com/ok.jpg"}\n')
    bad, good = read([path])
    assert isinstance(bad, Rejected), bad
    assert (bad.line, bad.field) == (1, field)
    assert words in bad.reason
    assert isinstance(good, Accepted) and good.line == 2


# --------------------------------------------------------------------------- stdin, files


def test_stdin_is_sniffed_per_line_as_txt_or_json():
    data = (
        b"https://example.com/a.jpg\n"
        b"# comment\n"
        b'  {"url": "https://example.com/b.jpg", "dataId": "b"}\n'
        b"{broken\n"
    )
    records = read(["-"], stdin=io.BytesIO(data))
    assert summary(records) == [
        (1, "https://example.com/a.jpg"),
        (3, "https://example.com/b.jpg"),
        (4, "REJECTED json"),
    ]
    assert all(r.source == "-" for r in records)


def test_several_files_are_read_in_order_each_with_its_own_line_numbers(tmp_path):
    a = write(tmp_path, "a.txt", "https://example.com/1.jpg\nhttps://example.com/2.jpg\n")
    b = write(tmp_path, "b.jsonl", '{"url": "https://example.com/3.jpg"}\n')
    records = read([a, b])
    assert [(r.source, r.line) for r in records] == [(a, 1), (a, 2), (b, 1)]


def test_a_missing_file_raises_at_call_time_naming_the_path(tmp_path):
    good = write(tmp_path, "a.txt", "https://example.com/1.jpg\n")
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError) as info:
        read_inputs([good, missing])  # not iterated: the check is eager
    assert missing in str(info.value)


def test_an_unknown_extension_raises_naming_the_formats(tmp_path):
    path = write(tmp_path, "a.xlsx", "x")
    with pytest.raises(ValueError, match=r"\.txt, \.csv, \.jsonl"):
        read_inputs([path])


def test_reading_is_lazy_for_a_large_file(tmp_path):
    path = tmp_path / "big.txt"
    with path.open("w") as fh:
        for i in range(200_000):
            fh.write(f"https://example.com/images/{i:08d}.jpg\n")
    tracemalloc.start()
    try:
        first = list(islice(read_inputs([str(path)]), 10))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [r.line for r in first] == list(range(1, 11))
    assert peak < 512 * 1024  # the file is ~8 MB


def test_memory_stays_flat_over_a_whole_file(tmp_path):
    path = tmp_path / "big.jsonl"
    with path.open("w") as fh:
        for i in range(20_000):
            fh.write(json.dumps({"url": f"https://example.com/{i}.jpg", "dataId": f"d{i}"}) + "\n")
    tracemalloc.start()
    try:
        count = sum(1 for r in read_inputs([str(path)]) if isinstance(r, Accepted))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < 512 * 1024


# --------------------------------------------------------------------------- input errors


def test_a_directory_is_refused_by_name_with_the_fix_before_anything_is_read(tmp_path):
    from worker.sources import InputError, InputIsADirectory

    folder = tmp_path / "archive"
    folder.mkdir()
    with pytest.raises(InputIsADirectory) as info:
        read_inputs([str(folder)])
    assert isinstance(info.value, InputError) and isinstance(info.value, IsADirectoryError)
    message = str(info.value)
    assert message.startswith(f"{folder}: is a directory") and "*.txt" in message
    assert "\n" not in message


def test_an_input_error_is_one_line_naming_the_path_for_each_situation(tmp_path):
    from worker.sources import InputNotFound, UnknownInputFormat, check_input

    with pytest.raises(InputNotFound, match=r"nope\.txt: input file not found"):
        check_input(str(tmp_path / "nope.txt"))
    xlsx = write(tmp_path, "a.xlsx", "x")
    with pytest.raises(UnknownInputFormat, match=r"a\.xlsx: unknown input format"):
        check_input(xlsx)
    check_input("-")  # standard input is always readable here


# --------------------------------------------------------------------------- repeated keys


def test_jsonl_names_the_first_repeated_key_in_the_order_the_line_gives_it(tmp_path):
    line = '{"dataId": "a", "url": "https://e.com/1.jpg", "url": "x", "dataId": "b"}'
    path = write(tmp_path, "in.jsonl", line + "\n")
    (bad,) = read([path])
    assert isinstance(bad, Rejected) and bad.field == "json"
    assert bad.reason == "gives the key 'dataId' twice"


def test_a_line_repeating_one_key_thousands_of_times_is_rejected_as_repeated(tmp_path):
    """The check counts once per line (it was keys.count per key: minutes at the 1 MiB cap;
    bench/sources.py times it). Behaviour: every repetition is seen, the key named once."""
    pairs = ", ".join(f'"k{i}": 1, "k{i}": 2' for i in range(20_000))
    unique = ", ".join(f'"u{i}": {i}' for i in range(30_000))
    path = write(tmp_path, "in.jsonl", "{" + pairs + "}\n{" + unique + "}\n")
    repeated, unknown = read([path])
    assert isinstance(repeated, Rejected) and repeated.reason == "gives the key 'k0' twice"
    assert isinstance(unknown, Rejected) and unknown.field == "json"
    # 30,000 unknown keys: five are named, the rest counted, so the row stays readable
    assert "'u0', 'u1', 'u2', 'u3', 'u4' and 29995 more" in unknown.reason
    assert len(unknown.reason) < 300


def test_csv_header_with_thousands_of_columns_finds_the_one_named_twice(tmp_path):
    header = ",".join([f"extra{i}" for i in range(20_000)] + ["url", "dataId", "URL"])
    path = write(tmp_path, "in.csv", header + "\n" + "x," * 20_002 + "x\n")
    (bad,) = read([path])
    assert isinstance(bad, Rejected) and bad.line == 1
    assert "names imageUrl more than once" in bad.reason and "dataId" not in bad.reason


# --------------------------------------------------------------------------- rejected identity


def test_a_rejected_line_keeps_one_identity_when_the_same_file_is_read_again(tmp_path):
    path = write(tmp_path, "urls.txt", "ftp://bad/1.png\nhttps://example.com/ok.jpg\n")
    (first, _), (again, _) = read([path]), read([path])
    assert isinstance(first, Rejected) and isinstance(again, Rejected)
    assert first.identity == again.identity
    assert first.origin == str((tmp_path / "urls.txt").resolve())


def test_the_same_name_in_two_folders_and_two_stdin_runs_are_different_inputs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = write(tmp_path, "a/urls.txt", "ftp://bad/1.png\n")
    two = write(tmp_path, "b/urls.txt", "ftp://bad/1.png\n")
    (r1,), (r2,) = read([one]), read([two])
    assert (r1.line, r1.field) == (r2.line, r2.field) and r1.identity != r2.identity

    def stdin_run() -> Rejected:
        (record,) = read(["-"], stdin=io.BytesIO(b"ftp://bad/1.png\n"))
        assert isinstance(record, Rejected) and record.source == "-"
        return record

    assert stdin_run().identity != stdin_run().identity


def test_an_edited_line_of_the_same_file_is_a_new_rejected_line(tmp_path):
    path = write(tmp_path, "urls.txt", "ftp://bad/1.png\n")
    (before,) = read([path])
    write(tmp_path, "urls.txt", "gopher://bad/1.png\n")
    (after,) = read([path])
    assert before.line == after.line == 1 and before.identity != after.identity
