"""``imgmod run|enqueue ... --dry-run [--json]``: what the run would read, bill, cost and take
(:mod:`worker.dryrun`), with nothing written, published or called.

The database is only read, and only when it exists at the current schema (a missing SQLite
file is not created); without it the estimate says that duplicates against the job and answers
from earlier jobs could not be counted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from worker import store
from worker.cli.context import CommandEnv, check_inputs
from worker.cli.errors import CliError
from worker.settings import Settings


def _read_only_engine(settings: Settings) -> tuple[Engine | None, str | None]:
    """The database if it exists at the current schema, else None and why."""
    parsed = sa.make_url(settings.database_url)
    file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if file and file != ":memory:" and not Path(file).exists():
        return None, "no database yet"
    try:
        engine = store.make_engine(settings.database_url)
        store.check_schema(engine)
    except (store.SchemaError, SQLAlchemyError) as exc:
        reason = str(exc) if isinstance(exc, store.SchemaError) else type(exc).__name__
        return None, f"database not readable ({reason})"
    return engine, None


def _checked_request(
    settings: Settings, service: str | None, info_type: str | None
) -> tuple[tuple[str, ...], str]:
    """The services and infoType the run would open its job with, checked as
    :func:`worker.producer.open_job` checks them (each service named once, each listed by the
    endpoint's region), before any input is read; a refusal is one line, exit 2."""
    from worker.vendor import (
        InvalidParameter,
        service_not_offered,
        validate_info_type,
        validate_services,
    )

    try:
        services = validate_services(service or settings.service)
        checked_info = validate_info_type(settings.info_type if info_type is None else info_type)
        for checked in services:
            if (refusal := service_not_offered(settings.endpoint, checked)) is not None:
                raise InvalidParameter("Service", refusal)
    except InvalidParameter as exc:
        option = {"Service": "--service", "infoType": "--info-type"}.get(exc.field, exc.field)
        raise CliError(f"{option}: {exc.reason}") from None
    return services, checked_info


def dry_run(
    env: CommandEnv,
    inputs: tuple[str, ...],
    job_name: str,
    service: str | None,
    info_type: str | None,
    referer: str | None,
    oss_region: str | None,
    listing_args: dict[str, Any],
    *,
    rescan: bool,
    reuse_urls: bool,
    as_json: bool,
    max_calls: int | None = None,
) -> None:
    """Estimate the run and print it (``--json``: one object); exits 0."""
    from worker.cli.listing import folder_filters_for, listing_for, oss_errors
    from worker.dryrun import Estimate, estimate, price, records_of
    from worker.sources.records import Defaults

    settings = env.settings
    checked_services, checked_info = _checked_request(settings, service, info_type)
    check_inputs(
        inputs, folder_filters_for(inputs, listing_args["include"], listing_args["exclude"])
    )
    engine, unknown = _read_only_engine(settings)
    job = store.get_job(engine, job_name) if engine is not None else None
    if job is not None and (job.services, job.info_type) != (checked_services, checked_info):
        raise CliError(
            f"job {job_name!r} already exists with service {job.service!r} and infoType "
            f"{job.info_type!r}; use another job name or the job's own settings"
        )
    if engine is None and listing_args.get("since_job"):
        raise CliError(f"--since-job needs the database, and there is none: {unknown}")
    listing = listing_for(settings, engine, inputs, oss_region, **listing_args)  # type: ignore[arg-type]
    # As worker.producer.reuse_scope decides for the job the run would open (per service).
    scope = store.ReuseScope(checked_services[0], checked_info, urls=reuse_urls, stored=not rescan)
    result = Estimate(job_name, checked_services, max_calls=max_calls)
    skipped = [0]
    with oss_errors():
        batches = records_of(
            inputs,
            Defaults(oss_region, referer or (job.referer if job else None)),
            sys.stdin.buffer,
            folder_filters_for(inputs, listing_args["include"], listing_args["exclude"]),
            listing,
            lambda n: skipped.__setitem__(0, skipped[0] + n),
        )
        estimate(result, batches, engine, job.id if job else None, scope)
    result.skipped = skipped[0]
    price(result, settings.billing.prices, settings.qps)
    if as_json:
        out = result.as_dict()
        out["database"] = unknown or "read"
        click.echo(json.dumps(out, indent=2))
    else:
        for line in result.lines_for_people():
            click.echo(line)
        if unknown:
            click.echo(
                f"note: {unknown}: duplicates already in the job and reusable answers of "
                "earlier jobs are not counted"
            )
    if engine is not None:
        engine.dispose()
