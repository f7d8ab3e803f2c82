"""Validation of one ImageModeration request: the image reference and its ServiceParameters.

Pure functions over plain values. Everything the vendor page documents about ``ServiceParameters``
is checked here, before a request spends a token of the account's QPS: exactly one of ``imageUrl``
or the OSS triple, the length limits (2,048 / 64 / 256), the ``dataId`` alphabet, the ``infoType``
values and the ``Service`` names. A failure raises :class:`InvalidParameter`, which names the
API's field and the fix.

URLs are normalised so the service never sees characters it does not accept (the page says: no
Chinese characters in URLs): non-ASCII is percent-encoded as UTF-8, IDN hosts are punycoded. The
normalised URL is also the identity used to deduplicate images (:attr:`ImageRef.key`) and the
URL people see beside a verdict, so it must name the host a browser would load: hosts follow
UTS-46 non-transitional IDNA (what browsers do: ``faß.de`` is ``xn--fa-hia.de``, not
``fass.de``), a ``\\`` in the authority is refused (browsers read it as ``/``), numeric IPv4
hosts are written the one dotted way. Equivalent spellings become one (RFC 3986 section 6.2.2
and 6.2.3): case of scheme, host and escapes, unreserved characters decoded, dot segments
removed, default ports, fragments (never sent to a server) and Unicode normal forms dropped.
"""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

import idna

from worker.settings import INFO_TYPES, SERVICES

MAX_URL_CHARS = 2048
MAX_DATA_ID_CHARS = 64
MAX_REFERER_CHARS = 256
MAX_OSS_OBJECT_BYTES = 1023

# Public Alibaba Cloud region ids (the ``ossRegionId`` values an OSS bucket can live in).
OSS_REGIONS: frozenset[str] = frozenset(
    {
        # Chinese mainland
        "cn-hangzhou",
        "cn-shanghai",
        "cn-nanjing",
        "cn-fuzhou",
        "cn-wuhan-lr",
        "cn-qingdao",
        "cn-beijing",
        "cn-zhangjiakou",
        "cn-huhehaote",
        "cn-wulanchabu",
        "cn-shenzhen",
        "cn-heyuan",
        "cn-guangzhou",
        "cn-chengdu",
        # Hong Kong and the rest of Asia Pacific
        "cn-hongkong",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "ap-southeast-5",
        "ap-southeast-6",
        "ap-southeast-7",
        "ap-south-1",
        # Americas, Europe, Middle East
        "us-east-1",
        "us-west-1",
        "na-south-1",
        "sa-east-1",
        "eu-west-1",
        "eu-central-1",
        "me-east-1",
        "me-central-1",
    }
)

_DATA_ID_RE = re.compile(r"[A-Za-z0-9_.\-]+")
# OSS bucket names: 3-63 lowercase letters, digits and hyphens, no hyphen at either end.
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_HOST_RE = re.compile(r"[a-z0-9_\-]+(\.[a-z0-9_\-]+)*\.?")
_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.\-]*")
_HEX = frozenset("0123456789abcdefABCDEF")
# RFC 3986 unreserved characters: an escape of one of these means the character itself.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters left alone in path and query: unreserved, sub-delims, ":@/?" and the brackets that
# query strings commonly carry. Everything else is percent-encoded.
_SAFE = _UNRESERVED | frozenset("!$&'()*+,;=:@/?[]")
# In userinfo an "@" (or "/", "?", "[", "]") would move the host: only unreserved, sub-delims, ":".
_USERINFO_SAFE = _UNRESERVED | frozenset("!$&'()*+,;=:")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


class InvalidParameter(ValueError):
    """A request parameter breaks a documented rule; ``field`` is the API's own name for it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class ImageRef:
    """One image to moderate: a normalised URL, or an authorised OSS object (never both)."""

    image_url: str | None = None
    oss_bucket: str | None = None
    oss_object: str | None = None
    oss_region: str | None = None
    data_id: str | None = None
    referer: str | None = None

    @property
    def kind(self) -> Literal["url", "oss"]:
        return "url" if self.image_url else "oss"

    @property
    def key(self) -> str:
        """Stable identity for deduplication: the normalised URL or ``oss://region/bucket/object``."""
        if self.image_url:
            return self.image_url
        return f"oss://{self.oss_region}/{self.oss_bucket}/{self.oss_object}"


def _is_forbidden_char(char: str) -> bool:
    """Whitespace, control and format characters (zero-width and bidi marks are invisible)."""
    return char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp", "Zs")


def _normalize_component(text: str, safe: frozenset[str]) -> str:
    """Percent-encode what is outside ``safe`` (as UTF-8) and normalise existing escapes
    (RFC 3986 section 6.2.2): an escaped unreserved character is decoded (``%7e`` is ``~``),
    other escapes are kept with upper-case hex (``%2f`` is ``%2F``)."""
    out: list[str] = []
    i, size = 0, len(text)
    while i < size:
        char = text[i]
        if char == "%" and text[i + 1 : i + 2] in _HEX and text[i + 2 : i + 3] in _HEX:
            decoded = chr(int(text[i + 1 : i + 3], 16))
            out.append(decoded if decoded in _UNRESERVED else text[i : i + 3].upper())
            i += 3
            continue
        if char in safe:
            out.append(char)
        else:
            out.append("".join(f"%{byte:02X}" for byte in char.encode("utf-8")))
        i += 1
    return "".join(out)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4: ``/a/./b/../c`` is ``/a/c``, as a browser requests it."""
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    result = "/".join(output)
    return result if result.startswith("/") else "/" + result


def _ipv4_part(text: str) -> int | None:
    """One part of a WHATWG IPv4 host: decimal, ``0x`` hex or ``0`` octal; None if invalid."""
    if text[:2] in ("0x", "0X"):
        digits, base = text[2:], 16
    elif len(text) > 1 and text.startswith("0"):
        digits, base = text[1:], 8
    else:
        digits, base = text, 10
    if digits == "":
        return 0 if base == 16 else None
    if not (digits.isascii() and digits.isalnum()):
        return None
    try:
        return int(digits, base)
    except ValueError:
        return None


def _ends_in_a_number(label: str) -> bool:
    """WHATWG's test of whether a host is meant as an IPv4 address (its last label)."""
    if label.isascii() and label.isdigit():
        return True
    return label[:2] in ("0x", "0X") and all(char in _HEX for char in label[2:])


def _canonical_ipv4(host: str) -> str | None:
    """The dotted form of a numeric host (``0x7f.1`` and ``2130706433`` are ``127.0.0.1``, as a
    browser reads them), None when the host is a name. Raises for a number that is no address."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if not _ends_in_a_number(parts[-1]):
        return None
    numbers = [_ipv4_part(part) for part in parts]
    values = [n for n in numbers if n is not None]
    if len(parts) > 4 or len(values) != len(parts):
        raise InvalidParameter("imageUrl", "the host looks like an IPv4 address but is not one")
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise InvalidParameter("imageUrl", "the IPv4 address in the host is out of range")
    address = values[-1]
    for position, number in enumerate(values[:-1]):
        address += number * 256 ** (3 - position)
    return str(ipaddress.IPv4Address(address))


def _idna_host(host: str) -> str:
    """UTS-46 non-transitional mapping, then IDNA 2008 A-labels for the non-ASCII labels.

    ASCII labels are only lower-cased (an ``_`` is common in CDN host names and fine for DNS,
    though IDNA 2008 would refuse it); an ``xn--`` label must decode.
    """
    try:
        mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
        labels = []
        for label in mapped.split("."):
            if label.isascii():
                if label.startswith("xn--"):
                    idna.ulabel(label)
                labels.append(label)
            else:
                labels.append(idna.alabel(label).decode("ascii"))
    except (idna.IDNAError, UnicodeError, ValueError):
        raise InvalidParameter(
            "imageUrl", "the host name cannot be converted to an ASCII (punycode) name"
        ) from None
    return ".".join(labels)


def _normalize_host(host: str) -> str:
    if host.startswith("["):
        literal = host[1:-1] if host.endswith("]") else ""
        try:
            if "%" in literal:  # a zone id names an interface of *this* machine
                raise ValueError(literal)
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            raise InvalidParameter("imageUrl", "the IPv6 host in brackets is not valid") from None
        return f"[{address.compressed}]"
    lowered = host.lower()
    host = lowered if host.isascii() and "xn--" not in lowered else _idna_host(host)
    if not _HOST_RE.fullmatch(host):
        raise InvalidParameter("imageUrl", "the host name has characters a host cannot have")
    return _canonical_ipv4(host) or host


def _split_netloc(netloc: str) -> tuple[str, str, str]:
    """Split ``userinfo@host:port`` into its three parts (empty when absent)."""
    userinfo, _, hostport = netloc.rpartition("@")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise InvalidParameter("imageUrl", "the IPv6 host is missing its closing ']'")
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidParameter("imageUrl", "unexpected characters after the IPv6 host")
        port = rest[1:]
    else:
        host, _, port = hostport.partition(":")
    if port and not (port.isascii() and port.isdigit() and int(port) <= 65535):
        raise InvalidParameter("imageUrl", "the port must be a number from 0 to 65535")
    if hostport.endswith(":") and not port:
        raise InvalidParameter("imageUrl", "the port after ':' is empty")
    return userinfo, host, port


def _too_long(length: int, when: str) -> InvalidParameter:
    return InvalidParameter(
        "imageUrl",
        f"longer than {MAX_URL_CHARS} characters ({length}){when}; shorten it or pass the image "
        "through OSS (ossBucketName, ossObjectName, ossRegionId)",
    )


def _check_characters(url: str) -> None:
    for position, char in enumerate(url):
        if _is_forbidden_char(char):
            raise InvalidParameter(
                "imageUrl",
                f"contains a whitespace or control character (U+{ord(char):04X}) at position "
                f"{position}; percent-encode it (a space is %20)",
            )


def _split_scheme(url: str) -> tuple[str, str]:
    """``(scheme, rest after '//')`` of an absolute http(s) URL."""
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep or not _SCHEME_RE.fullmatch(scheme):
        raise InvalidParameter(
            "imageUrl", "is not an absolute URL; give one that starts with http:// or https://"
        )
    if scheme not in ("http", "https"):
        raise InvalidParameter(
            "imageUrl", f"scheme {scheme!r} is not supported; use an http:// or https:// URL"
        )
    if not rest.startswith("//"):
        raise InvalidParameter("imageUrl", f"has no host; write it as {scheme}://host/path")
    return scheme, rest[2:]


def _authority(scheme: str, netloc: str) -> str:
    if "\\" in netloc:
        raise InvalidParameter(
            "imageUrl",
            "has a '\\' before the path: browsers read it as '/' and would load another host "
            "than the one named; write '/' or percent-encode it as %5C",
        )
    userinfo, host, port = _split_netloc(netloc)
    if not host:
        raise InvalidParameter("imageUrl", f"has no host; write it as {scheme}://host/path")
    authority = _normalize_host(host)
    port = str(int(port)) if port else ""
    if port and port != _DEFAULT_PORTS[scheme]:
        authority = f"{authority}:{port}"
    if userinfo:
        authority = f"{_normalize_component(userinfo, _USERINFO_SAFE)}@{authority}"
    return authority


def normalize_url(url: str) -> str:
    """Return ``url`` as the service must receive it, or raise :class:`InvalidParameter`.

    Strips surrounding whitespace, requires an absolute http(s) URL with a host, and writes it
    the one way equivalent URLs share (see the module docstring), percent-encoding non-ASCII
    (NFC, then UTF-8) and other characters a URL cannot carry. The 2,048-character limit applies
    to the raw text first (so a huge value costs nothing) and to the result, because that is
    what the service counts.
    """
    url = url.strip()
    if not url:
        raise InvalidParameter("imageUrl", "is empty; give an absolute http:// or https:// URL")
    if len(url) > MAX_URL_CHARS:
        raise _too_long(len(url), "")
    _check_characters(url)
    scheme, rest = _split_scheme(unicodedata.normalize("NFC", url))
    rest = rest.partition("#")[0]  # a fragment never reaches the server
    end = min((i for i in (rest.find(c) for c in "/?") if i >= 0), default=len(rest))
    authority = _authority(scheme, rest[:end])
    path, question, query = rest[end:].partition("?")
    path = remove_dot_segments(_normalize_component(path, _SAFE)) if path else "/"
    normalized = f"{scheme}://{authority}{path}"
    if question:
        normalized += "?" + _normalize_component(query, _SAFE)
    if len(normalized) > MAX_URL_CHARS:
        raise _too_long(len(normalized), " after encoding")
    return normalized


def _present(value: str | None) -> str | None:
    """Treat missing, empty and blank values alike: not given."""
    if value is None or not value.strip():
        return None
    return value


def _validate_bucket(bucket: str) -> str:
    bucket = bucket.strip()
    if not _BUCKET_RE.fullmatch(bucket):
        raise InvalidParameter(
            "ossBucketName",
            f"{bucket!r} is not a valid OSS bucket name; use 3 to 63 lowercase letters, digits "
            "and hyphens, not starting or ending with a hyphen",
        )
    return bucket


def _validate_object(name: str) -> str:
    # Kept as is: the vendor says to pass Chinese characters and spaces unencoded.
    size = len(name.encode("utf-8", errors="surrogatepass"))
    if size > MAX_OSS_OBJECT_BYTES:
        raise InvalidParameter(
            "ossObjectName",
            f"longer than {MAX_OSS_OBJECT_BYTES} bytes in UTF-8 ({size}); OSS cannot hold it",
        )
    if name.startswith(("/", "\\")):
        raise InvalidParameter(
            "ossObjectName", "starts with '/' or '\\'; give the key inside the bucket without it"
        )
    return name


def _validate_region(region: str) -> str:
    region = region.strip()
    if region in OSS_REGIONS:
        return region
    hint = ""
    if region.startswith("oss-") and region[4:] in OSS_REGIONS:
        hint = f" (drop the 'oss-' prefix: {region[4:]})"
    elif region.lower() in OSS_REGIONS:
        hint = f" (region ids are lowercase: {region.lower()})"
    raise InvalidParameter(
        "ossRegionId",
        f"{region!r} is not an Alibaba Cloud region id{hint}; use the bucket's region, "
        "e.g. cn-beijing or ap-southeast-1",
    )


def _validate_data_id(data_id: str) -> str:
    data_id = data_id.strip()
    if len(data_id) > MAX_DATA_ID_CHARS:
        raise InvalidParameter(
            "dataId", f"longer than {MAX_DATA_ID_CHARS} characters ({len(data_id)}); shorten it"
        )
    if not _DATA_ID_RE.fullmatch(data_id):
        raise InvalidParameter(
            "dataId",
            "may only contain letters, digits, underscores (_), hyphens (-) and periods (.)",
        )
    return data_id


def _validate_referer(referer: str) -> str:
    referer = referer.strip()
    if len(referer) > MAX_REFERER_CHARS:
        raise InvalidParameter(
            "referer", f"longer than {MAX_REFERER_CHARS} characters ({len(referer)}); shorten it"
        )
    if any(unicodedata.category(char) == "Cc" for char in referer):
        raise InvalidParameter("referer", "contains a control character; it is sent as a header")
    return referer


def validate_ref(
    *,
    image_url: str | None = None,
    oss_bucket: str | None = None,
    oss_object: str | None = None,
    oss_region: str | None = None,
    data_id: str | None = None,
    referer: str | None = None,
) -> ImageRef:
    """Build a valid :class:`ImageRef` from raw values; empty strings count as not given.

    Exactly one way of passing the image is allowed: ``imageUrl``, or all three OSS fields.
    """
    image_url, data_id, referer = _present(image_url), _present(data_id), _present(referer)
    oss_bucket, oss_region = _present(oss_bucket), _present(oss_region)
    oss_object = oss_object if oss_object else None  # blanks are significant in an object key
    oss_given = [v is not None for v in (oss_bucket, oss_object, oss_region)]
    if image_url is not None and any(oss_given):
        raise InvalidParameter(
            "imageUrl",
            "give either imageUrl or ossBucketName/ossObjectName/ossRegionId, not both",
        )
    if image_url is None and not any(oss_given):
        raise InvalidParameter(
            "imageUrl",
            "missing; give imageUrl, or ossBucketName, ossObjectName and ossRegionId together",
        )
    checked_id = _validate_data_id(data_id) if data_id is not None else None
    checked_referer = _validate_referer(referer) if referer is not None else None
    if image_url is not None:
        return ImageRef(
            image_url=normalize_url(image_url), data_id=checked_id, referer=checked_referer
        )
    for name, given in zip(
        ("ossBucketName", "ossObjectName", "ossRegionId"), oss_given, strict=True
    ):
        if not given:
            raise InvalidParameter(
                name, "missing; an OSS image needs ossBucketName, ossObjectName and ossRegionId"
            )
    assert oss_bucket is not None and oss_object is not None and oss_region is not None
    return ImageRef(
        oss_bucket=_validate_bucket(oss_bucket),
        oss_object=_validate_object(oss_object),
        oss_region=_validate_region(oss_region),
        data_id=checked_id,
        referer=checked_referer,
    )


def _suggest(value: str, choices: tuple[str, ...]) -> str:
    for choice in choices:
        if choice.lower() == value.lower():
            return f" (did you mean {choice}?)"
    return ""


def validate_info_type(value: str) -> str:
    """Comma list of the documented ``infoType`` values, normalised: trimmed, blanks and repeats
    dropped, first-seen order kept. An empty value means no auxiliary information.
    """
    parts = [part.strip() for part in value.split(",") if part.strip()]
    for part in parts:
        if part not in INFO_TYPES:
            raise InvalidParameter(
                "infoType",
                f"{part!r} is not a valid value{_suggest(part, INFO_TYPES)}; "
                f"use a comma list of {', '.join(INFO_TYPES)}",
            )
    return ",".join(dict.fromkeys(parts))


def validate_service(value: str) -> str:
    service = value.strip()
    if service not in SERVICES:
        raise InvalidParameter(
            "Service",
            f"{service!r} is not a moderation service of Image Moderation 2.0"
            f"{_suggest(service, SERVICES)}; use {' or '.join(SERVICES)}",
        )
    return service


def service_parameters(ref: ImageRef, info_type: str) -> dict[str, str]:
    """The ServiceParameters object, with the API's own key names; empty optional keys omitted."""
    candidates = {
        "imageUrl": ref.image_url,
        "ossBucketName": ref.oss_bucket,
        "ossObjectName": ref.oss_object,
        "ossRegionId": ref.oss_region,
        "dataId": ref.data_id,
        "referer": ref.referer,
        "infoType": validate_info_type(info_type),
    }
    return {key: value for key, value in candidates.items() if value}


def request_fields(service: str, ref: ImageRef, info_type: str) -> dict[str, str]:
    """The form fields of one ImageModeration call: ``Service`` and ``ServiceParameters``.

    ``ServiceParameters`` is a compact JSON string; non-ASCII (an OSS object name) stays as is.
    """
    parameters = service_parameters(ref, info_type)
    return {
        "Service": validate_service(service),
        "ServiceParameters": json.dumps(parameters, ensure_ascii=False, separators=(",", ":")),
    }
