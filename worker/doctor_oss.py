"""``imgmod doctor --oss oss://BUCKET/PREFIX``: may these credentials list the prefix?

An OSS-prefix job starts by listing (``oss:ListObjects``); a key without that permission would
fail only once the job is under way. So doctor lists one page of one key (``max-keys`` 1: one
cheap request, nothing billed by the moderation service) with the same client, endpoint and
credentials ``imgmod run`` uses, and reports a refusal as the one line the run would print.

Listing proves imgmod's own access only. ``ImageModeration`` with an OSS triple is read by the
Content Moderation service itself, which must be authorised to read the bucket (the vendor's
page: the Cloud Resource Access Authorization page, role ``AliyunCIPScanOSSRole``); no request
from here can prove that grant, so every OSS check carries it as a note.

Kept apart from :mod:`worker.doctor` so the OSS SDK is imported only when ``--oss`` is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from worker.doctor import Check, check_credentials, check_settings
from worker.settings import Credentials, Settings

LIST_ATTEMPTS = 2  # doctor answers fast: one retry of a transient fault, then the finding
SERVICE_READ_NOTE = (
    "the Content Moderation service itself reads OSS images: authorise it to read bucket "
    "{bucket} (Cloud Resource Access Authorization, role AliyunCIPScanOSSRole); listing "
    "proves only this AccessKey's access"
)


def check_oss(settings: Settings, creds: Credentials, prefix_text: str, region: str) -> Check:
    """List one key of ``prefix_text`` in ``region``: pass, or the listing's own refusal."""
    from worker.oss import OssError, list_page, make_client
    from worker.sources.oss_prefix import BadOssPrefix, parse_prefix

    name = "oss"
    try:
        prefix = parse_prefix(prefix_text)
    except BadOssPrefix as exc:
        return Check(name, False, str(exc), "write --oss oss://BUCKET/PREFIX")
    note = (SERVICE_READ_NOTE.format(bucket=prefix.bucket),)
    where = f"{prefix} (region {region})"
    try:
        client = make_client(settings, creds, region)
        page = list_page(
            client,
            prefix.bucket,
            prefix.prefix,
            None,
            max_keys=1,
            attempts=LIST_ATTEMPTS,
            sleep=lambda _seconds: None,
        )
    except OssError as exc:
        return Check(name, False, str(exc), _fix(exc), notes=note)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return Check(
            name,
            False,
            f"{where}: {type(exc).__name__}",
            "check IMGMOD_OSS_ENDPOINT, --oss-region and the network path to OSS",
            notes=note,
        )
    found = "objects under it" if page.objects else "no object under it yet"
    return Check(name, True, f"{where}: listing allowed (oss:ListObjects), {found}", notes=note)


def _fix(exc: Exception) -> str:
    from worker.oss import OssBucketNotFound, OssEndpointInvalid, OssListDenied

    if isinstance(exc, OssListDenied):
        return "grant oss:ListObjects on the bucket to this AccessKey (RAM or bucket policy)"
    if isinstance(exc, OssBucketNotFound):
        return "check the bucket name and --oss-region"
    if isinstance(exc, OssEndpointInvalid):
        return "correct IMGMOD_OSS_ENDPOINT"
    return "check IMGMOD_OSS_ENDPOINT, --oss-region and the network path to OSS"


def run_oss_checks(
    prefixes: Sequence[str], region: str | None, env: Mapping[str, str] | None = None
) -> list[Check]:
    """One :func:`check_oss` per prefix (``region`` None: ``IMGMOD_REGION``); none when the
    settings or credentials do not load (their own checks already say why)."""
    _, settings = check_settings(env)
    _, creds = check_credentials(env)
    if settings is None or creds is None:
        return []
    return [check_oss(settings, creds, p, region or settings.region) for p in prefixes]
