"""Magic-byte detection and header dimensions, as the emulator's 407 and 406 decisions use them."""

from __future__ import annotations

import struct

import pytest

from worker.emulator.formats import (
    ImageInfo,
    detect_format,
    exceeds_size_limits,
    read_image_info,
)
from worker.emulator.samples import big_png_chunks, sample_image_bytes, wide_png_bytes


@pytest.mark.parametrize(
    ("ext", "fmt", "size"),
    [
        ("png", "png", (8, 8)),
        ("jpg", "jpeg", (8, 8)),
        ("gif", "gif", (1, 1)),
        ("bmp", "bmp", (4, 4)),
        ("webp", "webp", (8, 8)),
    ],
)
def test_sample_images_are_detected_with_their_header_dimensions(ext, fmt, size) -> None:
    info = read_image_info(sample_image_bytes(3, ext))
    assert info == ImageInfo(fmt, *size)


def test_tiff_dimensions_are_read_from_the_first_ifd() -> None:
    entries = [(256, 3, 1, 640), (257, 4, 1, 480)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, kind, count)
        + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
        for tag, kind, count, value in entries
    )
    data = b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00"
    assert read_image_info(data) == ImageInfo("tiff", 640, 480)


def test_big_endian_tiff_is_detected() -> None:
    assert detect_format(b"MM\x00*\x00\x00\x00\x08") == "tiff"


@pytest.mark.parametrize(
    "data",
    [
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>',
        b"\xef\xbb\xbf  <svg width='1'/>",
    ],
)
def test_svg_is_detected_from_its_text(data: bytes) -> None:
    assert detect_format(data) == "svg"


@pytest.mark.parametrize("brand", [b"heic", b"mif1", b"heix"])
def test_heif_brands_are_detected(brand: bytes) -> None:
    assert detect_format(b"\x00\x00\x00\x18ftyp" + brand + b"\x00" * 8) == "heif"


def test_avif_is_not_heif() -> None:
    assert detect_format(b"\x00\x00\x00\x18ftypavif" + b"\x00" * 8) is None


def test_ico_size_comes_from_the_last_image_and_zero_means_256() -> None:
    entry = lambda w, h: bytes((w, h)) + b"\x00" * 14  # noqa: E731
    data = b"\x00\x00\x01\x00" + struct.pack("<H", 2) + entry(16, 16) + entry(0, 0)
    assert read_image_info(data) == ImageInfo("ico", 256, 256)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, not an image", b"%PDF-1.7\n", b"PK\x03\x04zip", b"<html><body></body></html>"],
)
def test_non_images_are_refused(data: bytes) -> None:
    assert detect_format(data) is None
    assert read_image_info(data) is None


def test_wide_png_exceeds_the_edge_limit() -> None:
    info = read_image_info(wide_png_bytes(1))
    assert info == ImageInfo("png", 20_000, 100)
    assert exceeds_size_limits(info)


def test_big_png_header_is_a_small_valid_png() -> None:
    head = next(big_png_chunks(1))
    info = read_image_info(head)
    assert info is not None and info.format == "png" and not exceeds_size_limits(info)


@pytest.mark.parametrize(
    ("width", "height", "too_large"),
    [
        (16_384, 10_000, False),
        (16_385, 1, True),
        (1, 16_385, True),
        (13_000, 13_000, True),
        (12_900, 12_900, False),
    ],
)
def test_size_limits_are_the_vendor_edge_and_pixel_caps(width, height, too_large) -> None:
    assert exceeds_size_limits(ImageInfo("png", width, height)) is too_large


def test_unknown_dimensions_do_not_exceed_limits() -> None:
    assert not exceeds_size_limits(ImageInfo("svg"))


def test_jpeg_with_truncated_header_has_no_dimensions() -> None:
    assert read_image_info(b"\xff\xd8\xff\xe0\x00") == ImageInfo("jpeg")
