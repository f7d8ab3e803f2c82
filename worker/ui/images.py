"""Where the browser gets an image: an image URL as it is, an OSS object through a short-lived
signed URL the server makes (the official SDK's presign, this process's credentials), a local
file through the server itself.

A signed URL is never written into a page or a log: the page points at ``/image/ID`` and that
answers with a redirect to a fresh signed GET (valid :data:`SIGNED_SECONDS`), so the access log
shows ``/image/ID`` only. The URL is cached for half its life, so the preloaded next image and
the image shown are one download.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from worker.settings import Credentials, Settings

SIGNED_SECONDS = 300
IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".webp",
    ".bmp",
    ".tif",
    ".tiff",
    ".heic",
    ".avif",
)


@dataclass(frozen=True)
class Picture:
    """What an item's image is: ``kind`` url | oss | file, and where."""

    item_id: int
    kind: str
    image_url: str | None
    bucket: str | None
    key: str | None
    region: str | None
    local_path: str | None


def src_for(picture: Picture) -> str | None:
    """The ``<img src>`` for an item: the URL itself, or this server's ``/image/ID``."""
    if picture.kind == "url" and picture.image_url:
        return picture.image_url
    if picture.kind in ("oss", "file"):
        return f"/image/{picture.item_id}"
    return None


def local_image(picture: Picture) -> Path | None:
    """The local file to serve, when it still exists and is named like an image."""
    if picture.kind != "file" or not picture.local_path:
        return None
    path = Path(picture.local_path)
    if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
        return None
    return path


class Signer:
    """Signed GET URLs for OSS objects, one SDK client per region, cached for half their life."""

    def __init__(self, settings: Settings, credentials: Credentials | None) -> None:
        self._settings = settings
        self._credentials = credentials
        self._clients: dict[str, Any] = {}
        self._cache: dict[tuple[str, str, str], tuple[float, str]] = {}
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self._credentials is not None

    def url(self, picture: Picture) -> str | None:
        """A signed URL for the object, or None without credentials or an object."""
        if self._credentials is None or not picture.bucket or not picture.key:
            return None
        region = picture.region or self._settings.region
        key = (region, picture.bucket, picture.key)
        moment = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
            if cached and cached[0] > moment:
                return cached[1]
            client = self._clients.get(region)
            if client is None:
                from worker.oss import make_client

                client = self._clients[region] = make_client(
                    self._settings, self._credentials, region
                )
        import alibabacloud_oss_v2 as oss

        signed = client.presign(
            oss.GetObjectRequest(bucket=picture.bucket, key=picture.key),
            expires=timedelta(seconds=SIGNED_SECONDS),
        )
        url = str(signed.url)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (moment + SIGNED_SECONDS / 2, url)
        return url
