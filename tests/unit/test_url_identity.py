"""URL identity: the normalised URL names the host a browser loads, and equivalent spellings of
one image URL become one key (so it is billed once). A table of tricky URLs, pure, no sockets."""

from __future__ import annotations

import time

import pytest

from worker.params import validate_ref
from worker.urls import normalize_url, remove_dot_segments
from worker.vendor import InvalidParameter

# (given, expected): what a browser (WHATWG URL, UTS-46 non-transitional IDNA) would load.
SAME_AS_A_BROWSER = [
    # IDNA: UTS-46 non-transitional, as browsers: ß, ς and ZWJ-free names keep their identity.
    ("https://faß.de/x.png", "https://xn--fa-hia.de/x.png"),
    ("https://FASS.de/x.png", "https://fass.de/x.png"),
    ("https://βόλος.com/x.png", "https://xn--nxasmm1c.com/x.png"),
    ("https://ｅｘａｍｐｌｅ.com/x.png", "https://example.com/x.png"),  # full-width letters
    ("https://例子。中国/x.png", "https://xn--fsqu00a.xn--fiqs8s/x.png"),  # ideographic full stop
    ("https://Ⅸ.example/x.png", "https://ix.example/x.png"),  # compatibility mapping
    ("https://cdn_1.example.com/x.png", "https://cdn_1.example.com/x.png"),
    # numeric IPv4 hosts: one dotted spelling
    ("http://0x7f.1/x.png", "http://127.0.0.1/x.png"),
    ("http://2130706433/x.png", "http://127.0.0.1/x.png"),
    ("http://0177.0.0.01/x.png", "http://127.0.0.1/x.png"),
    ("http://127.0.0.1./x.png", "http://127.0.0.1/x.png"),
    ("http://[2001:0DB8:0:0::1]/x.png", "http://[2001:db8::1]/x.png"),
    # userinfo: an "@" inside it stays inside it
    ("http://a@b@good.com/x.png", "http://a%40b@good.com/x.png"),
    # RFC 3986 6.2.2: case, unreserved escapes, dot segments
    ("HTTPS://Example.COM/a.png", "https://example.com/a.png"),
    ("https://example.com/%7euser/a.png", "https://example.com/~user/a.png"),
    ("https://example.com/%41%2d%5f%2E.png", "https://example.com/A-_..png"),
    ("https://example.com/%e5%9b%be.png?a=%2f", "https://example.com/%E5%9B%BE.png?a=%2F"),
    ("https://example.com/a/./b/../c.png", "https://example.com/a/c.png"),
    ("https://example.com/a/%2e%2E/c.png", "https://example.com/c.png"),
    ("https://example.com/../../c.png", "https://example.com/c.png"),
    ("https://example.com/a/b/..", "https://example.com/a/"),
    ("https://example.com/a?x=/../y", "https://example.com/a?x=/../y"),  # the query keeps dots
    # RFC 3986 6.2.3: default ports, empty path; fragments never reach the server
    ("https://example.com:443/a.png", "https://example.com/a.png"),
    ("http://example.com:80/a.png", "http://example.com/a.png"),
    ("https://example.com:80/a.png", "https://example.com:80/a.png"),
    ("http://example.com:0080/a.png", "http://example.com/a.png"),
    ("https://example.com", "https://example.com/"),
    ("https://example.com?x=1", "https://example.com/?x=1"),
    ("https://example.com/a.png#top", "https://example.com/a.png"),
    ("http://good.com#@evil.com/x.png", "http://good.com/"),
    ("http://evil.com?@good.com/x.png", "http://evil.com/?@good.com/x.png"),
    # Unicode normal forms: NFD and NFC spell one name
    ("https://example.com/cafe\u0301.png", "https://example.com/caf%C3%A9.png"),
    ("https://example.com/caf\u00e9.png", "https://example.com/caf%C3%A9.png"),
]


@pytest.mark.parametrize(("given", "expected"), SAME_AS_A_BROWSER)
def test_normalised_url_is_the_one_a_browser_loads(given: str, expected: str) -> None:
    assert normalize_url(given) == expected
    assert normalize_url(expected) == expected  # idempotent


EQUIVALENT = [
    ("https://example.com/~a/b.png", "https://example.com/%7Ea/b.png"),
    ("https://example.com/~a/b.png", "https://EXAMPLE.com:443/~a/./b.png#frag"),
    ("https://example.com/caf\u00e9.png", "https://example.com/cafe\u0301.png"),
    ("https://example.com/caf\u00e9.png", "https://example.com/caf%c3%a9.png"),
    ("https://xn--fa-hia.de/a.png", "https://FAß.de/a.png"),
    ("http://127.0.0.1/a.png", "http://0x7f000001:80/a.png"),
]


@pytest.mark.parametrize(("one", "other"), EQUIVALENT)
def test_equivalent_urls_share_one_key(one: str, other: str) -> None:
    assert validate_ref(image_url=one).key == validate_ref(image_url=other).key


DIFFERENT = [
    ("https://faß.de/a.png", "https://fass.de/a.png"),  # IDNA2003 merged these: another host
    ("https://example.com/a%2Fb.png", "https://example.com/a/b.png"),  # reserved escapes stay
    ("https://example.com/A.png", "https://example.com/a.png"),  # paths are case-sensitive
    ("http://example.com/a.png", "https://example.com/a.png"),
]


@pytest.mark.parametrize(("one", "other"), DIFFERENT)
def test_different_urls_keep_different_keys(one: str, other: str) -> None:
    assert normalize_url(one) != normalize_url(other)


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.com\\@good.com/x.png",
        "http://evil.com\\x.png",
        "https://good.com\\.evil.com/x.png",
        "http://user:pa\\ss@good.com/x.png",
    ],
)
def test_a_backslash_in_the_authority_is_refused_naming_it(url: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        normalize_url(url)
    assert info.value.field == "imageUrl"
    assert "'\\'" in info.value.reason and "%5C" in info.value.reason


def test_a_backslash_in_the_path_is_percent_encoded() -> None:
    assert normalize_url("https://example.com/a\\b.png") == "https://example.com/a%5Cb.png"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://1.2.3.256/x.png", "out of range"),
        ("http://1.2.3.4.5/x.png", "IPv4"),
        ("http://example.123/x.png", "IPv4"),
        ("http://08/x.png", "IPv4"),
        ("http://[fe80::1%25eth0]/x.png", "IPv6"),
        ("https://xn--zz.example/x.png", "punycode"),
        ("https://a\u2100b.example/x.png", "characters a host cannot have"),  # maps to "a/c"
        ("https://evil\ufe6bgood.com/x.png", "characters a host cannot have"),  # maps to "@"
    ],
)
def test_hosts_a_browser_refuses_are_refused(url: str, fragment: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        normalize_url(url)
    assert fragment in info.value.reason


def test_a_huge_url_is_refused_by_its_raw_length_without_encoding_it() -> None:
    huge = "https://example.com/" + "图" * (4 * 1024 * 1024)
    started = time.perf_counter()
    with pytest.raises(InvalidParameter) as info:
        normalize_url(huge)
    elapsed = time.perf_counter() - started
    assert info.value.reason.startswith(f"longer than 2048 characters ({len(huge)});")
    # Encoding 4 Mi characters first took seconds; the length of a str is known at once.
    assert elapsed < 0.5


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a/b/c/./../../g", "/a/g"),  # RFC 3986 5.2.4's own example
        ("/mid/content=5/../6", "/mid/6"),  # and its second
        ("/", "/"),
        ("/..", "/"),
        ("/a/.", "/a/"),
        ("/a//b/../c", "/a//c"),
    ],
)
def test_remove_dot_segments_follows_rfc_3986(path: str, expected: str) -> None:
    assert remove_dot_segments(path) == expected


def test_every_ascii_control_and_space_is_refused_at_its_position_and_nothing_else() -> None:
    """The ASCII fast path of the character check refuses exactly what the Unicode rule does."""
    import unicodedata

    for code in range(128):
        char = chr(code)
        forbidden = char.isspace() or unicodedata.category(char) in ("Cc", "Zs")
        url = f"https://example.com/a{char}b.png"
        if forbidden:
            with pytest.raises(InvalidParameter, match=f"U\\+{code:04X}\\) at position 21"):
                normalize_url(url)
        else:
            try:
                normalize_url(url)
            except InvalidParameter as exc:
                assert "control character" not in str(exc)
    with pytest.raises(InvalidParameter, match="U\\+200B"):  # a non-ASCII one: the slow path
        normalize_url("https://example.com/a\u200bb.png")
