"""Ext data by default: with no IMGMOD_INFO_TYPE a job asks for customImage,textInImage and its
export carries the Ext the service returned; an explicit empty value still asks for none.

The emulator, like the vendor, returns no Ext to a request without infoType, so a regression of
the default shows here as an empty ``ext`` column.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from worker.emulator.answers import answer_row
from worker.emulator.samples import sample_bytes_for_path

pytestmark = pytest.mark.service

DEFAULT = "customImage,textInImage"


def images_by_ext_kind(count: int = 96) -> dict[str, list[int]]:
    """Sample image numbers grouped by the Ext kind the emulator's answer row carries."""
    kinds: dict[str, list[int]] = {}
    for n in range(count):
        data = sample_bytes_for_path(f"/img/{n}.png")
        assert data is not None
        kind = answer_row(hashlib.sha256(data).digest()).ext_kind or "-"
        kinds.setdefault(kind, []).append(n)
    return kinds


@pytest.fixture
def kinds() -> dict[str, list[int]]:
    found = images_by_ext_kind()
    assert {"CustomImage", "TextInImage", "LogoData", "PublicFigure"} <= set(found)
    return found


def _export(pipeline, job: str) -> list[dict]:
    out = pipeline.imgmod("export", job, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_job_without_info_type_settings_asks_for_ext_and_stores_it(
    pipeline, kinds, monkeypatch
) -> None:
    monkeypatch.delenv("IMGMOD_INFO_TYPE", raising=False)
    pipeline.env.pop("IMGMOD_INFO_TYPE")  # the user never set it
    picks = {kind: numbers[:2] for kind, numbers in kinds.items()}
    urls = {pipeline.images.image_url(n): kind for kind, ns in picks.items() for n in ns}
    src = pipeline.write("urls.txt", list(urls))
    pipeline.start_worker(concurrency=8)

    run = pipeline.imgmod("run", str(src), "--job", "default-ext")
    assert run.returncode == 0, run.stdout + run.stderr
    status = json.loads(pipeline.imgmod("status", "default-ext", "--json", check=True).stdout)
    assert status["info_type"] == DEFAULT  # the job records what it was created with

    for record in _export(pipeline, "default-ext"):
        kind = urls[record["image_url"]]
        if kind in ("CustomImage", "TextInImage"):
            assert record["ext"] and list(record["ext"]) == [kind], record
        else:  # publicFigure and logoData stay opt-in (advanced service)
            assert record["ext"] is None, record

    # An explicit empty value, in the environment or on the command line, means none.
    few = pipeline.write("few.txt", [u for u, k in urls.items() if k == "TextInImage"])
    run = pipeline.imgmod("run", str(few), "--job", "no-ext-env", IMGMOD_INFO_TYPE="")
    assert run.returncode == 0, run.stdout + run.stderr
    run = pipeline.imgmod("run", str(few), "--job", "no-ext-flag", "--info-type", "")
    assert run.returncode == 0, run.stdout + run.stderr
    for job in ("no-ext-env", "no-ext-flag"):
        status = json.loads(pipeline.imgmod("status", job, "--json", check=True).stdout)
        assert status["info_type"] == ""
        assert [r["ext"] for r in _export(pipeline, job)] == [None, None]
