"""Sample images: deterministic, distinct per number, and the big one streamed within bounds."""

from __future__ import annotations

import struct
import zlib

import pytest

from worker.emulator.samples import (
    BIG_PNG_SIZE,
    EXTENSIONS,
    big_png_chunks,
    png_bytes,
    sample_bytes_for_path,
    sample_image_bytes,
)


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_different_numbers_give_different_bytes(ext: str) -> None:
    images = {sample_image_bytes(n, ext) for n in range(200)}
    assert len(images) == 200


def test_generation_is_deterministic() -> None:
    assert png_bytes(42) == png_bytes(42)


def test_png_chunks_have_valid_crcs() -> None:
    data = sample_image_bytes(5, "png")
    pos = 8
    kinds = []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + payload) & 0xFFFFFFFF == crc
        kinds.append(kind)
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"


def test_paths_map_to_the_served_bytes() -> None:
    assert sample_bytes_for_path("/img/3.jpg") == sample_image_bytes(3, "jpg")
    assert sample_bytes_for_path("/slow/3.png?ms=4000") == sample_image_bytes(3, "png")
    assert sample_bytes_for_path("/wide/3.png") is not None
    for path in ("/missing/3.png", "/text/3.txt", "/big/3.png", "/reset/3.png", "/img/3.tga"):
        assert sample_bytes_for_path(path) is None


def test_unknown_extension_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="png"):
        sample_image_bytes(1, "tga")


def test_big_png_is_over_20_mb_streamed_in_bounded_chunks_with_a_valid_crc() -> None:
    total = 0
    crc = None
    biggest = 0
    chunks = big_png_chunks(2)
    head = next(chunks)
    total += len(head)
    crc = zlib.crc32(b"imGb")
    tail = b""
    for chunk in chunks:
        total += len(chunk)
        biggest = max(biggest, len(chunk))
        if len(chunk) > 20:
            crc = zlib.crc32(chunk, crc)
        else:
            tail = chunk
    assert total == BIG_PNG_SIZE > 20 * 1024 * 1024
    assert biggest <= 256 * 1024
    assert struct.unpack(">I", tail[:4])[0] == crc & 0xFFFFFFFF
    assert tail.endswith(b"IEND\xaeB`\x82")
