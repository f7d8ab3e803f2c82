"""--include/--exclude reach folder walks: globs on the path relative to the folder root."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker import producer, store
from worker.cli.errors import CliError
from worker.cli.listing import folder_filters_for, listing_for
from worker.sources.folder import folder_records
from worker.sources.oss_prefix import Filters
from worker.sources.records import Defaults, Rejected


def _tree(base: Path) -> Path:
    top = base / "archive"
    for relative in ("a.png", "b.JPG", "raw/c.png", "raw/deep/d.webp", "thumbs/e.png", "f.dat"):
        path = top / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
    return top


def _kept(top: Path, filters: Filters) -> list[str]:
    records = folder_records(str(top), Defaults(None, None), filters)
    return [
        str(Path(r.ref.local_path or "").relative_to(top))
        for r in records
        if not isinstance(r, Rejected)
    ]


def test_exclude_globs_match_the_relative_path_or_the_last_segment(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    assert _kept(top, Filters()) == [
        "a.png", "b.JPG", "raw/c.png", "raw/deep/d.webp", "thumbs/e.png"
    ]  # fmt: skip
    assert _kept(top, Filters(exclude=("thumbs/*",))) == [
        "a.png", "b.JPG", "raw/c.png", "raw/deep/d.webp"
    ]  # fmt: skip
    assert _kept(top, Filters(exclude=("*.png",))) == ["b.JPG", "raw/deep/d.webp"]


def test_include_globs_replace_the_default_extensions(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    assert _kept(top, Filters(include=("raw/*",))) == ["raw/c.png", "raw/deep/d.webp"]
    assert _kept(top, Filters(include=("*.dat",))) == ["f.dat"]
    assert _kept(top, Filters(include=("*",), exclude=("raw/*", "*.dat"))) == [
        "a.png", "b.JPG", "thumbs/e.png"
    ]  # fmt: skip


def test_the_cli_builds_folder_filters_only_for_folders(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    listfile = tmp_path / "urls.txt"
    listfile.write_text("https://example.com/a.png\n")
    assert folder_filters_for([str(top)], ("raw/*",), ()) == Filters(("raw/*",), ())
    assert folder_filters_for([str(top)], (), ()) is None
    assert folder_filters_for([str(listfile)], ("raw/*",), ()) is None


def test_globs_without_a_folder_or_prefix_and_since_with_a_folder_are_one_line_errors(
    tmp_path: Path, sqlite_url: str
) -> None:
    top = _tree(tmp_path)
    listfile = tmp_path / "urls.txt"
    listfile.write_text("https://example.com/a.png\n")
    store.upgrade(sqlite_url)
    engine = store.make_engine(sqlite_url)
    try:
        with pytest.raises(CliError, match="apply to OSS prefixes .* and folders; no input"):
            listing_for(None, engine, [str(listfile)], None, exclude=("x",))  # type: ignore[arg-type]
        with pytest.raises(CliError, match="--modified-since and --since-job apply to OSS"):
            listing_for(None, engine, [str(top)], None, modified_since="2025-01-01")  # type: ignore[arg-type]
        assert listing_for(None, engine, [str(top)], None, include=("raw/*",)) is None  # type: ignore[arg-type]
    finally:
        engine.dispose()


def test_enqueue_inputs_walks_folders_under_the_filters(tmp_path: Path, sqlite_url: str) -> None:
    top = _tree(tmp_path)
    store.upgrade(sqlite_url)
    engine = store.make_engine(sqlite_url)
    try:
        job = store.get_or_create_job(engine, "j", "baselineCheck_global", "")
        done = producer.enqueue_inputs(
            engine, job, [str(top)], lambda: 0, folder_filters=Filters(exclude=("raw/*",))
        )
        assert done.summary.accepted == 3
        with engine.connect() as conn:
            paths = sorted(
                Path(p).relative_to(top).as_posix()
                for p in conn.execute(
                    store.items.select().with_only_columns(store.items.c.local_path)
                ).scalars()
            )
        assert paths == ["a.png", "b.JPG", "thumbs/e.png"]
    finally:
        engine.dispose()


def test_a_folder_without_images_is_an_input_when_include_names_its_files(tmp_path: Path) -> None:
    from worker.sources import InputError, check_input

    top = tmp_path / "scans"
    top.mkdir()
    (top / "a.dat").write_bytes(b"x" * 10)
    with pytest.raises(InputError, match="no image files"):
        check_input(str(top))
    check_input(str(top), Filters(include=("*.dat",)))  # named by --include: accepted
    with pytest.raises(InputError, match=r"--include '\*.raw'"):
        check_input(str(top), Filters(include=("*.raw",)))
    assert _kept(top, Filters(include=("*.dat",))) == ["a.dat"]
