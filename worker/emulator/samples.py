"""Deterministic sample images, generated with the standard library only.

Every path the sample image server answers with an image has its bytes computed here, so a test
can compute the same bytes (hence the same sha256, hence the emulator's answer) without a socket:

* ``/img/<n>.<ext>`` for ext in png, jpg, gif, bmp, webp: a small valid image; different ``n``
  give different bytes.
* ``/slow/<n>.png``: the same bytes as ``/img/<n>.png`` (the server only delays them).
* ``/wide/<n>.png``: a PNG whose header says 20000 x 100 (over the vendor's 16,384 px edge).
* ``/big/<n>.png``: a PNG of :data:`BIG_PNG_SIZE` bytes (over the vendor's 20 MB), produced
  lazily by :func:`big_png_chunks` and never held in memory whole.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Iterator
from functools import lru_cache

EXTENSIONS = ("png", "jpg", "gif", "bmp", "webp")
BIG_PNG_SIZE = 21 * 1024 * 1024
WIDE_SIZE = (20_000, 100)
_BIG_CHUNK = 256 * 1024

_PATH_RE = re.compile(r"^/(?P<kind>img|slow|wide)/(?P<n>\d{1,12})\.(?P<ext>[a-z]+)$")


def _palette(n: int) -> tuple[int, int, int]:
    """Three colour bytes that differ for every ``n`` (derived from a hash, so not sequential)."""
    digest = hashlib.sha256(f"imgmod-sample-{n}".encode()).digest()
    return digest[0], digest[1], digest[2]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_bytes(n: int, width: int = 8, height: int = 8) -> bytes:
    """A valid 8-bit RGB PNG filled with a colour derived from ``n``, with ``n`` in a tEXt chunk."""
    colour = bytes(_palette(n))
    row = b"\x00" + colour * width
    raw = row * height
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"tEXt", b"Comment\x00imgmod sample " + str(n).encode())
        + _png_chunk(b"IDAT", zlib.compress(raw, 9))
        + _png_chunk(b"IEND", b"")
    )


def wide_png_bytes(n: int) -> bytes:
    """A PNG whose IHDR says 20000 x 100; the pixel data is a token (only the header matters)."""
    width, height = WIDE_SIZE
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"tEXt", b"Comment\x00imgmod wide " + str(n).encode())
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1), 9))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_bytes(n: int) -> bytes:
    """A decodable 8x8 grey baseline JPEG: one block, DC and AC tables of a single code each.

    The scan is one block coded as "DC difference 0, end of block" (two 0 bits, padded with 1s);
    ``n`` rides in a COM segment so every ``n`` gives different bytes.
    """

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload

    counts_one_code = bytes([1] + [0] * 15)
    return b"".join(
        (
            b"\xff\xd8",
            segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
            segment(0xFE, b"imgmod sample " + str(n).encode()),
            segment(0xDB, b"\x00" + bytes([1] * 64)),
            segment(0xC0, struct.pack(">BHHB", 8, 8, 8, 1) + b"\x01\x11\x00"),
            segment(0xC4, b"\x00" + counts_one_code + b"\x00"),
            segment(0xC4, b"\x10" + counts_one_code + b"\x00"),
            segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),
            b"\x3f",
            b"\xff\xd9",
        )
    )


def gif_bytes(n: int) -> bytes:
    """A valid 1x1 GIF89a whose two-colour palette and comment derive from ``n``."""
    red, green, blue = _palette(n)
    comment = b"imgmod sample " + str(n).encode()
    return b"".join(
        (
            b"GIF89a",
            struct.pack("<HHBBB", 1, 1, 0x80, 0, 0),
            bytes((red, green, blue, 255 - red, 255 - green, 255 - blue)),
            b"\x21\xfe" + bytes((len(comment),)) + comment + b"\x00",
            b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0),
            b"\x02\x02\x44\x01\x00",
            b"\x3b",
        )
    )


def bmp_bytes(n: int, width: int = 4, height: int = 4) -> bytes:
    """A valid 24-bit BMP (BITMAPINFOHEADER), rows padded to four bytes, colour from ``n``."""
    red, green, blue = _palette(n)
    row = bytes((blue, green, red)) * width
    row += b"\x00" * ((4 - len(row) % 4) % 4)
    pixels = row * height
    offset = 14 + 40
    file_header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    info_header = struct.pack(
        "<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0
    )
    return file_header + info_header + pixels


def webp_bytes(n: int, width: int = 8, height: int = 8) -> bytes:
    """A RIFF/WEBP container with a VP8L header carrying the dimensions; the payload is a token.

    Only the magic and the header matter to the emulator (format and size checks), so the
    bitstream after the VP8L header is bytes derived from ``n`` rather than a real encoding.
    """
    bits = (width - 1) | ((height - 1) << 14)
    payload = b"\x2f" + bits.to_bytes(4, "little") + hashlib.sha256(str(n).encode()).digest()[:11]
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


_GENERATORS = {
    "png": png_bytes,
    "jpg": jpeg_bytes,
    "gif": gif_bytes,
    "bmp": bmp_bytes,
    "webp": webp_bytes,
}


@lru_cache(maxsize=4096)
def sample_image_bytes(n: int, ext: str = "png") -> bytes:
    """The bytes the sample server sends for ``/img/<n>.<ext>``."""
    try:
        generate = _GENERATORS[ext]
    except KeyError:
        raise ValueError(f"unknown sample extension {ext!r}; use one of {EXTENSIONS}") from None
    return generate(n)


def sample_bytes_for_path(path: str) -> bytes | None:
    """The exact bytes the sample server sends for ``path``, or None if it sends no small image.

    Covers ``/img/``, ``/slow/`` (same bytes as ``/img/<n>.png``) and ``/wide/``; ``/big/`` is
    streamed (see :func:`big_png_chunks`) and the other paths send no image.
    """
    match = _PATH_RE.match(path.split("?", 1)[0])
    if match is None:
        return None
    n, ext = int(match["n"]), match["ext"]
    if match["kind"] == "wide":
        return wide_png_bytes(n) if ext == "png" else None
    if ext not in _GENERATORS or (match["kind"] == "slow" and ext != "png"):
        return None
    return sample_image_bytes(n, ext)


def big_png_chunks(n: int, total: int = BIG_PNG_SIZE) -> Iterator[bytes]:
    """Yield a ``total``-byte PNG piece by piece: a valid header, one huge ancillary chunk, IEND.

    The filler sits in a private ancillary chunk (``imGb``) whose CRC is computed as it streams,
    so a reader that stops at the 20 MB limit never needed the rest and memory stays flat.
    """
    header = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 0, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 65 * 64, 9))
    )
    trailer = _png_chunk(b"IEND", b"")
    filler_len = total - len(header) - len(trailer) - 12
    if filler_len < 0:
        raise ValueError(f"total={total} is smaller than an empty big PNG")
    yield header + struct.pack(">I", filler_len) + b"imGb"
    crc = zlib.crc32(b"imGb")
    block = bytes((n + i) & 0xFF for i in range(_BIG_CHUNK))
    remaining = filler_len
    while remaining > 0:
        piece = block if remaining >= _BIG_CHUNK else block[:remaining]
        crc = zlib.crc32(piece, crc)
        remaining -= len(piece)
        yield piece
    yield struct.pack(">I", crc & 0xFFFFFFFF) + trailer
