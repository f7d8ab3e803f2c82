"""Fetching the image to moderate: over HTTP like the vendor does, or from a directory standing in
for OSS.

Outcomes map to the vendor's codes: 404 for a download error (refused, unresolvable, HTTP status
>= 400, connection dropped), 405 when the download exceeds its timeout (the vendor's 3 s), 406
when the body passes 20 MB (reading stops at the limit).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from worker.emulator.params import BodyError, OssObject

MAX_IMAGE_BYTES = 20 * 1024 * 1024
_READ_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Downloaded:
    body: bytes


def _too_large() -> BodyError:
    return BodyError(406, f"The image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB.")


class Downloader:
    """One pooled, keep-alive aiohttp session for every image download of the emulator."""

    def __init__(self, timeout: float, pool_size: int = 512) -> None:
        self.timeout = timeout
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._pool_size, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": "imgmod-emulator/0.1 (image fetcher)"},
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str, referer: str | None) -> Downloaded | BodyError:
        if self._session is None:
            raise RuntimeError("Downloader.start() was not awaited")
        headers = {"Referer": referer} if referer else None
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with self._session.get(url, headers=headers, timeout=timeout) as response:
                if response.status >= 400:
                    return BodyError(
                        404,
                        f"Failed to download the image: the image host answered HTTP "
                        f"{response.status}.",
                    )
                if (response.content_length or 0) > MAX_IMAGE_BYTES:
                    response.close()
                    return _too_large()
                chunks: list[bytes] = []
                size = 0
                while True:
                    chunk = await response.content.read(_READ_CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        response.close()  # stop reading at the limit; drop the connection
                        return _too_large()
                    chunks.append(chunk)
                return Downloaded(b"".join(chunks))
        except asyncio.TimeoutError:
            return BodyError(405, f"Downloading the image took longer than {self.timeout:g} s.")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return BodyError(404, f"Failed to download the image: {type(exc).__name__}.")


def oss_path(root: Path, obj: OssObject) -> Path | None:
    """``root/<region>/<bucket>/<object>``, or None if the name would escape ``root``."""
    candidate = (root / obj.region / obj.bucket / obj.name).resolve()
    base = root.resolve()
    if candidate == base or base not in candidate.parents:
        return None
    return candidate


def read_oss_object(root: Path | None, obj: OssObject) -> Downloaded | BodyError:
    """Read an object from the stand-in OSS directory (blocking: run it in a thread)."""
    missing = BodyError(404, f"Failed to download the image: OSS object {obj.key} not found.")
    path = oss_path(root, obj) if root is not None else None
    if path is None:
        return missing
    try:
        with path.open("rb") as handle:
            if os.fstat(handle.fileno()).st_size > MAX_IMAGE_BYTES:
                return _too_large()
            return Downloaded(handle.read(MAX_IMAGE_BYTES + 1))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return missing
