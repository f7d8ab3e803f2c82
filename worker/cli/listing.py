"""The OSS-prefix options of ``run``/``enqueue``: filters parsed (``--include``/``--exclude``
also for folders), a client factory, errors.

Parsing only: the listing itself is :func:`worker.producer.enqueue_prefix`. Nothing here is
built unless an input is an ``oss://`` prefix, so file jobs need no OSS credentials.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from worker.cli.context import find_job
from worker.cli.errors import CliError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from worker.producer import Listing
    from worker.settings import Settings
    from worker.sources.oss_prefix import Filters


def parse_moment(text: str, option: str = "--modified-since") -> datetime:
    """An ISO 8601 date or time; UTC when it names no zone. One line naming the option when
    it is not one."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"{option} {text!r}: not an ISO 8601 time; write e.g. 2025-12-01 or "
            "2025-12-01T02:00:00+08:00"
        ) from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def listing_for(
    settings: Settings,
    engine: Engine,
    inputs: Sequence[str],
    oss_region: str | None,
    *,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    modified_since: str | None = None,
    since_job: str | None = None,
) -> Listing | None:
    """What :func:`worker.producer.enqueue_inputs` needs to list the prefixes among
    ``inputs`` (None when there are none)."""
    from worker.producer import Listing
    from worker.sources.kinds import kind_of
    from worker.sources.oss_prefix import Filters

    if not any(kind_of(path).paged for path in inputs):
        if modified_since or since_job:
            raise CliError(
                "--modified-since and --since-job apply to OSS prefixes (oss://BUCKET/PREFIX); "
                "no input is one"
            )
        if (include or exclude) and folder_filters_for(inputs, include, exclude) is None:
            raise CliError(
                "--include and --exclude apply to OSS prefixes (oss://BUCKET/PREFIX) and "
                "folders; no input is one"
            )
        return None
    if modified_since and since_job:
        raise CliError("give --modified-since or --since-job, not both")
    since = parse_moment(modified_since) if modified_since else None
    if since_job:
        since = find_job(engine, since_job).created_at
    return Listing(
        client_for=lambda region: _client(settings, region),
        region=oss_region or settings.region,
        filters=Filters(tuple(include), tuple(exclude), since),
    )


def folder_filters_for(
    inputs: Sequence[str], include: tuple[str, ...], exclude: tuple[str, ...]
) -> Filters | None:
    """The ``--include``/``--exclude`` globs for the folders among ``inputs``, matched against
    a file's path relative to its folder (None: no globs given, or no input is a folder)."""
    from worker.sources.kinds import kind_of
    from worker.sources.oss_prefix import Filters

    if not (include or exclude) or not any(kind_of(p).name == "folder" for p in inputs):
        return None
    return Filters(tuple(include), tuple(exclude))


def _client(settings: Settings, region: str) -> Any:
    from worker.oss import make_client
    from worker.settings import ConfigError, load_credentials

    try:
        return make_client(settings, load_credentials(), region)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


@contextmanager
def oss_errors() -> Iterator[None]:
    """An OSS refusal (no list permission, no such bucket, OSS away through the retries) as
    one line and exit 2; the pages recorded before it stay, and the same command continues."""
    from worker.oss import OssError

    try:
        yield
    except OssError as exc:
        raise CliError(str(exc)) from None
