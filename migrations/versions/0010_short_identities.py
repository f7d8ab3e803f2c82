"""short identities: a URL's or an OSS object's identity keeps 24 hex digits of its digest

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

``items.identity`` of a URL (``url:<hex>``) or of an OSS object (``oss:<hex>``) is a SHA-256 of
the normalised URL, or of bucket, key and ETag (``worker.identity``). Its first 24 hex digits (96
bits) now make the key: the index's entries are less than half as long, and an enqueue, which
rewrites most of that index's pages with every batch (its keys are random), runs faster
(``bench/RESULTS.md``; ``worker.identity`` shows why 96 bits are enough to tell images apart).

* Upgrade cuts every stored URL and OSS identity to its first 28 characters (the kind and 24
  digits): exactly what this imgmod computes for the same image, so an answer stored before the
  upgrade is still found and reused. A file's identity (``sha256:<64 hex>``) is unchanged.
* Downgrade computes the whole digests again from the row (its ``image_url``; its bucket,
  object and ETag), as the imgmod of 0009 does. A row it cannot compute them for (an OSS row
  without its ETag) loses its identity: its answer is then never reused, never misattributed.

One UPDATE over ``items`` (on PostgreSQL it writes a new version of every such row: plan the
upgrade of a large archive's database like any table rewrite). Self-contained, like every
migration.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 28 in the statements: len("url:") + 24 == len("oss:") + 24, a short identity's length.


def upgrade() -> None:
    op.execute(
        "UPDATE items SET identity = substr(identity, 1, 28) "
        "WHERE (identity LIKE 'url:%' OR identity LIKE 'oss:%') AND length(identity) > 28"
    )


def _digest(*parts: str) -> str:
    """0009's whole digest (worker.identity._digest as it was): NUL-joined, SHA-256, 64 hex."""
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _bare_etag(etag: str) -> str:
    text = etag.strip()
    if text.startswith("W/"):
        text = text[2:]
    return text.strip('"')


def _whole(identity: str, image_url: str | None, bucket: str | None, key: str | None,
           etag: str | None) -> str | None:  # fmt: skip
    """The 0009 identity of a row whose identity is short, or None when the row lacks what it
    was computed from."""
    if identity.startswith("url:") and image_url:
        return "url:" + _digest(image_url)
    if identity.startswith("oss:") and bucket and key and etag and _bare_etag(etag):
        return "oss:" + _digest(bucket, key, _bare_etag(etag))
    return None


def downgrade() -> None:
    bind = op.get_bind()
    select = sa.text(
        "SELECT id, identity, image_url, oss_bucket, oss_object, etag FROM items "
        "WHERE id > :after AND (identity LIKE 'url:%' OR identity LIKE 'oss:%') "
        "AND length(identity) = 28 ORDER BY id LIMIT 10000"
    )
    update = sa.text("UPDATE items SET identity = :identity WHERE id = :id")
    after = 0
    while rows := bind.execute(select, {"after": after}).all():
        changes = []
        for row in rows:
            whole = _whole(row.identity, row.image_url, row.oss_bucket, row.oss_object, row.etag)
            # A whole digest must start with the short one: anything else is not ours to keep.
            keep = whole if whole is not None and whole.startswith(row.identity) else None
            changes.append({"id": row.id, "identity": keep})
        bind.execute(update, changes)
        after = rows[-1].id
