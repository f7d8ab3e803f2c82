"""worker.identity: which image a reference is, and which bytes (pure)."""

from __future__ import annotations

import hashlib

import pytest

from worker.identity import NO_KEYS, file_keys, keys_of, md5_of_etag, oss_keys, url_keys

MD5 = "5EB63BBBE01EEED093CB22BB8F5ACDC3"
SHA = "a" * 64


def test_an_oss_object_is_bucket_key_and_etag() -> None:
    base = oss_keys("archive", "a.png", f'"{MD5}"', 10)
    assert base.identity is not None and base.identity.startswith("oss:")
    assert oss_keys("archive", "a.png", MD5, 10) == base  # quotes are OSS's spelling, not data
    assert oss_keys("archive", "b.png", MD5, 10).identity != base.identity
    assert oss_keys("other", "a.png", MD5, 10).identity != base.identity
    assert oss_keys("archive", "a.png", "F" * 32, 10).identity != base.identity  # overwritten


def test_parts_cannot_be_shifted_between_bucket_key_and_etag() -> None:
    assert oss_keys("ab", "c.png", MD5, 1).identity != oss_keys("a", "bc.png", MD5, 1).identity


def test_an_md5_etag_with_its_size_is_a_content_key_under_any_name() -> None:
    one = oss_keys("archive", "2024/cat.png", f'"{MD5}"', 1234)
    two = oss_keys("backup", "copy/cat.png", MD5.lower(), 1234)
    assert one.content_key == two.content_key == f"md5:{MD5.lower()}:1234"
    assert oss_keys("archive", "x.png", MD5, 999).content_key != one.content_key


@pytest.mark.parametrize(
    "etag",
    [
        '"0F343B0931126A20F133D67C2B018A3B-3"',  # multipart: an MD5 of MD5s, then the part count
        "0F343B0931126A20F133D67C2B018A3B-1",
        "not-an-md5",
        "ABC",
        "G" * 32,
        "",
    ],
)
def test_a_multipart_or_malformed_etag_is_never_a_content_key(etag: str) -> None:
    assert md5_of_etag(etag) is None
    assert oss_keys("archive", "a.png", etag, 10).content_key is None


def test_a_multipart_object_still_has_its_identity() -> None:
    keys = oss_keys("archive", "a.png", '"0F343B0931126A20F133D67C2B018A3B-3"', 10)
    assert keys.identity is not None and keys.content_key is None


def test_an_oss_reference_without_etag_has_no_keys() -> None:
    assert oss_keys("archive", "a.png", None, None) == NO_KEYS
    assert oss_keys("archive", "a.png", '""', 5) == NO_KEYS
    assert keys_of(image_url=None, oss_bucket="archive", oss_object="a.png") == NO_KEYS


def test_an_unknown_size_gives_no_content_key() -> None:
    assert oss_keys("archive", "a.png", MD5, None).content_key is None


def test_a_file_is_its_sha256_for_identity_and_content() -> None:
    keys = file_keys(SHA.upper())
    assert keys.identity == keys.content_key == "sha256:" + SHA
    with pytest.raises(ValueError, match="64 hex"):
        file_keys("abc")


def test_a_url_has_an_identity_and_no_content_key() -> None:
    keys = url_keys("https://example.com/a.png")
    assert keys.identity is not None and keys.identity.startswith("url:")
    assert keys.content_key is None
    assert url_keys("https://example.com/b.png").identity != keys.identity


def test_url_and_oss_identities_are_the_first_24_digits_of_the_digest_stored_before_0010() -> None:
    """Migration 0010 cuts stored identities to 28 characters: that must be what imgmod now
    computes for the same image, or answers stored before the upgrade are never reused."""
    url = "https://example.com/a.png"
    whole = hashlib.sha256(url.encode()).hexdigest()
    assert url_keys(url).identity == "url:" + whole[:24]
    whole = hashlib.sha256(b"archive\0a.png\0" + MD5.encode()).hexdigest()
    assert oss_keys("archive", "a.png", f'"{MD5}"', 10).identity == "oss:" + whole[:24]
    assert file_keys(SHA).identity == "sha256:" + SHA  # a file's stays whole


def test_keys_fit_their_columns_whatever_the_name() -> None:
    long_key = "k" * 1023
    keys = oss_keys("archive", long_key, MD5, 2**40)
    assert len(keys.identity or "") <= 255 and len(keys.content_key or "") <= 100
    assert len(url_keys("https://example.com/" + "a" * 2000).identity or "") <= 255
    assert len(file_keys(SHA).identity or "") <= 100


def test_keys_of_picks_the_reference_kind() -> None:
    assert keys_of(image_url="https://e.com/a", oss_bucket=None, oss_object=None) == url_keys(
        "https://e.com/a"
    )
    assert keys_of(image_url=None, oss_bucket="b", oss_object="k", etag=MD5, size=3) == oss_keys(
        "b", "k", MD5, 3
    )
    assert keys_of(image_url=None, oss_bucket=None, oss_object=None, sha256=SHA) == file_keys(SHA)
