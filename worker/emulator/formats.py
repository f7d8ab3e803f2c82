"""Image format detection by magic bytes, and dimensions read from the image header.

The vendor accepts PNG, JPG/JPEG, BMP, WEBP, TIFF, SVG, HEIF/HEIC, GIF and ICO, refuses anything
else with Code 407, and refuses with Code 406 an image whose width or height exceeds 16,384 px or
whose pixel count exceeds 167 million. The emulator decides both from the first bytes only, as a
real decoder would before allocating: nothing here decodes pixels.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAX_EDGE = 16_384
MAX_PIXELS = 167_000_000

# ISO-BMFF brands that mark a HEIF/HEIC still image (AVIF is a different format).
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: a format name and, when the header carries them, the dimensions."""

    format: str
    width: int | None = None
    height: int | None = None


def detect_format(data: bytes) -> str | None:
    """The format name for these leading bytes, or None when it is not an accepted image."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "heif"
    if data.startswith(b"\x00\x00\x01\x00") and len(data) >= 6 and data[4:6] != b"\x00\x00":
        return "ico"
    if _looks_like_svg(data):
        return "svg"
    return None


def _looks_like_svg(data: bytes) -> bool:
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"<") and b"<svg" in head.lower()


def read_image_info(data: bytes) -> ImageInfo | None:
    """Format and header dimensions; None for an unsupported format (the emulator's 407)."""
    fmt = detect_format(data)
    if fmt is None:
        return None
    reader = _DIMENSION_READERS.get(fmt)
    size = reader(data) if reader is not None else None
    if size is None:
        return ImageInfo(fmt)
    return ImageInfo(fmt, size[0], size[1])


def exceeds_size_limits(info: ImageInfo) -> bool:
    """True when the header's dimensions break the vendor's limits (the emulator's 406)."""
    if info.width is None or info.height is None:
        return False
    return info.width > MAX_EDGE or info.height > MAX_EDGE or info.width * info.height > MAX_PIXELS


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _gif_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 10:
        return None
    width, height = struct.unpack("<HH", data[6:10])
    return int(width), int(height)


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    (dib_size,) = struct.unpack("<I", data[14:18])
    if dib_size == 12:
        width, height = struct.unpack("<HH", data[18:22])
        return int(width), int(height)
    width, height = struct.unpack("<ii", data[18:26])
    return abs(int(width)), abs(int(height))


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        is_sof = 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)
        if is_sof:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        pos += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return int(width) & 0x3FFF, int(height) & 0x3FFF
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "<" if data.startswith(b"II") else ">"
    try:
        (ifd,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
        found: dict[int, int] = {}
        for index in range(count):
            entry = data[ifd + 2 + 12 * index : ifd + 14 + 12 * index]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag in (256, 257):
                value_format = order + ("H" if kind == 3 else "I")
                (found[tag],) = struct.unpack(value_format, entry[8 : 8 + (2 if kind == 3 else 4)])
    except struct.error:
        return None
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


def _ico_size(data: bytes) -> tuple[int, int] | None:
    """ICO lists several images and the vendor uses the last one; 0 in the entry means 256."""
    if len(data) < 22:
        return None
    (count,) = struct.unpack("<H", data[4:6])
    last = 6 + 16 * (count - 1)
    if last + 2 > len(data):
        return None
    return data[last] or 256, data[last + 1] or 256


_DIMENSION_READERS = {
    "png": _png_size,
    "gif": _gif_size,
    "bmp": _bmp_size,
    "jpeg": _jpeg_size,
    "webp": _webp_size,
    "tiff": _tiff_size,
    "ico": _ico_size,
}
