"""The vendor's tables: what Alibaba Cloud's page for Image Moderation 2.0 (``ImageModeration``,
Green 2022-03-02, "Synchronous moderation API for Image Moderation 2.0") says, in one place.

Each table cites the section of the page it copies; when the page changes, this is the file to
compare. Nothing here reads the environment or the network: the settings, the request's
parameter rules (:mod:`worker.params`, :mod:`worker.urls`) and ``imgmod doctor`` read these
tables, and the two membership checks every edge shares (``Service``, ``infoType``) live here
with :class:`InvalidParameter`, the error every broken vendor rule raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlsplit

# --------------------------------------------------------------------- Usage notes


@dataclass(frozen=True)
class Region:
    """One row of "Supported regions and endpoints".

    ``services`` is the row's "Supported services" column. Only Singapore and Virginia list any:
    London reuses Singapore's console configuration, Silicon Valley and Frankfurt reuse
    Virginia's, and their rows leave the column empty (doctor warns, it does not refuse).
    """

    id: str
    name: str
    public_endpoint: str
    vpc_endpoint: str | None
    services: tuple[str, ...] = ()


_GLOBAL = ("baselineCheck_global", "aigcDetector_global")

# Usage notes, "Supported regions and endpoints".
REGIONS: Mapping[str, Region] = MappingProxyType(
    {
        region.id: region
        for region in (
            Region(
                "ap-southeast-1",
                "Singapore",
                "green-cip.ap-southeast-1.aliyuncs.com",
                "green-cip-vpc.ap-southeast-1.aliyuncs.com",
                _GLOBAL,
            ),
            Region("eu-west-1", "UK (London)", "green-cip.eu-west-1.aliyuncs.com", None),
            Region(
                "us-east-1",
                "US (Virginia)",
                "green-cip.us-east-1.aliyuncs.com",
                "green-cip-vpc.us-east-1.aliyuncs.com",
                _GLOBAL,
            ),
            Region("us-west-1", "US (Silicon Valley)", "green-cip.us-west-1.aliyuncs.com", None),
            Region(
                "eu-central-1",
                "Germany (Frankfurt)",
                "green-cip.eu-central-1.aliyuncs.com",
                "green-cip-vpc.eu-central-1.aliyuncs.com",
            ),
        )
    }
)

# Usage notes, "Image requirements". The service enforces them (codes 406 and 407); imgmod
# quotes them in its advice and its emulator enforces the same numbers.
IMAGE_FORMATS = ("PNG", "JPG", "JPEG", "BMP", "WEBP", "TIFF", "SVG", "HEIF", "GIF", "ICO")
MAX_IMAGE_BYTES = 20 * 1024 * 1024
# The same formats as file-name extensions, lower-case (HEIF's files are also named .heic, TIFF's
# also .tif): what an OSS prefix or a folder keeps by default.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tiff", ".tif", ".svg", ".heif", ".heic")
    + (".gif", ".ico")
)
MAX_IMAGE_EDGE_PX = 16_384
MAX_HEIF_EDGE_PX = 8_192  # "the longest edge must be less than 8,192 px"
MAX_IMAGE_PIXELS = 167_000_000
DOWNLOAD_TIMEOUT_S = 3.0  # the service's own wait for the image; past it: Code 405

# "QPS limit": per account (a "single user"), every region and service together.
QPS_LIMIT = 100

# --------------------------------------------------------------------- Request parameters

# "Request parameters", Service: the international services.
SERVICES = _GLOBAL

# Table 1 (ServiceParameters), infoType: the auxiliary information that can be asked for.
# publicFigure and logoData need the advanced service.
INFO_TYPES = ("customImage", "textInImage", "publicFigure", "logoData")

# Table 1: "cannot exceed 2,048 characters" (imageUrl), "Maximum length: 64 characters"
# (dataId, letters, digits, "_", "-", "."), "Maximum length: 256 characters" (referer).
MAX_URL_CHARS = 2048
MAX_DATA_ID_CHARS = 64
MAX_REFERER_CHARS = 256

# Not on the page: OSS's own limit on an object key (1,023 bytes of UTF-8), and the public
# region ids an OSS bucket can live in (the values ``ossRegionId`` can take, e.g. cn-beijing).
MAX_OSS_OBJECT_BYTES = 1023
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


class InvalidParameter(ValueError):
    """A request parameter breaks a documented rule; ``field`` is the API's own name for it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _suggest(value: str, choices: tuple[str, ...]) -> str:
    for choice in choices:
        if choice.lower() == value.lower():
            return f" (did you mean {choice}?)"
    return ""


def validate_info_type(value: str) -> str:
    """Comma list of the documented ``infoType`` values, normalised: trimmed, blanks and repeats
    dropped, first-seen order kept. An empty value means no auxiliary information.

    Checked where a value enters (the settings, a job's ``--info-type``); a job's rows carry the
    checked value, so the call path sends it as stored.
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
    """One of :data:`SERVICES`, trimmed; checked where a value enters, like the infoType."""
    service = value.strip()
    if service not in SERVICES:
        raise InvalidParameter(
            "Service",
            f"{service!r} is not a moderation service of Image Moderation 2.0"
            f"{_suggest(service, SERVICES)}; use {' or '.join(SERVICES)}",
        )
    return service


def validate_services(value: str) -> tuple[str, ...]:
    """``"baselineCheck_global,aigcDetector_global"`` -> each checked by
    :func:`validate_service`, in the order given; one job asks them all of every image. A
    name given twice, or no name, is refused (each would be called and billed again)."""
    services = tuple(validate_service(part) for part in value.split(",") if part.strip())
    if not services:
        raise InvalidParameter("Service", "no service given; name one or more, comma separated")
    twice = sorted({s for s in services if services.count(s) > 1})
    if twice:
        raise InvalidParameter("Service", f"{', '.join(twice)} given twice; name each once")
    return services


def region_of_endpoint(endpoint: str) -> str | None:
    """The region whose public or VPC endpoint ``endpoint`` names; None for any other host (an
    emulator, a proxy): then no region's table applies."""
    host = (urlsplit(endpoint).hostname or "").lower()
    for region in REGIONS.values():
        if host in (region.public_endpoint, region.vpc_endpoint):
            return region.id
    return None


def service_not_offered(endpoint: str, service: str) -> str | None:
    """The region table's answer when the endpoint's region does not list ``service`` ("Usage
    notes", "Supported regions and endpoints"), else None: a job is refused at enqueue rather
    than failing call by call. Rows that list no service (London, Silicon Valley, Frankfurt)
    count as not listing it; the page's note that they reuse another region's console
    configuration is quoted so the user can choose."""
    region = region_of_endpoint(endpoint)
    if region is None or service in REGIONS[region].services:
        return None
    listed = ", ".join(r.id for r in REGIONS.values() if service in r.services)
    row = ", ".join(REGIONS[region].services) or (
        "no service; the page notes it reuses the console configuration of Singapore or Virginia"
    )
    return (
        f"the vendor's region table lists {service} for {listed} only, not for {region} "
        f"({REGIONS[region].name}: {row}); set IMGMOD_REGION to one of the listed regions"
    )


# A retry code in IMGMOD_RETRY_PER_CODE: "403", "transport", "InvalidAction.NotFound"...
_CODE_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def parse_per_code(spec: str) -> dict[str, int]:
    """``"403=20,405=3"`` -> ``{"403": 20, "405": 3}``; blanks around parts are ignored.

    Raises ValueError naming the offending part and the expected form.
    """
    result: dict[str, int] = {}
    for raw in spec.split(","):
        part = raw.strip()
        if not part:
            continue
        code, sep, count = (s.strip() for s in part.partition("="))
        if not sep:
            raise ValueError(
                f"retry spec part {part!r} has no '=': write CODE=ATTEMPTS, e.g. 403=20"
            )
        if not _CODE_KEY.fullmatch(code):
            raise ValueError(
                f"retry spec part {part!r}: {code!r} is not a retry code (e.g. 403, transport)"
            )
        try:
            attempts = int(count)
        except ValueError:
            raise ValueError(
                f"retry spec part {part!r}: {count!r} is not a whole number of attempts"
            ) from None
        if attempts < 1:
            raise ValueError(f"retry spec part {part!r}: attempts must be at least 1")
        if code in result:
            raise ValueError(f"retry spec part {part!r}: code {code} is given twice")
        result[code] = attempts
    return result
