"""Commands that put work in line and follow it: enqueue, run, wait, resume, retry.

Each checks what it needs (inputs, database, broker) before it writes anything, then calls
:mod:`worker.producer` or :mod:`worker.watch` and prints what they report.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from worker import store
from worker.cli import budget
from worker.cli.context import (
    CommandEnv,
    celery_app,
    check_broker,
    check_inputs,
    find_job,
    open_database,
    pass_env,
)
from worker.cli.errors import EXIT_BUDGET, CliError
from worker.cli.progress import progress_bar, render_follow

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.engine import Engine

    from worker.settings import Settings

# The API's field names, as the producer's validation reports them -> the options that set them.
_OPTION_OF_FIELD = {"Service": "--service", "infoType": "--info-type", "referer": "--referer"}

_input_options = [
    click.argument("inputs", nargs=-1, required=True),
    click.option("--job", "job_name", required=True, help="Job name; reusing it adds to the job."),
    click.option(
        "--service",
        default=None,
        help="baselineCheck_global, aigcDetector_global, or both comma separated: every image "
        "is asked each (a row, a call and a result per service). Default IMGMOD_SERVICE.",
    ),
    click.option(
        "--info-type",
        default=None,
        help="Ext data to ask for: comma list of customImage, textInImage, publicFigure, "
        'logoData (default IMGMOD_INFO_TYPE, customImage,textInImage; "" for none).',
    ),
    click.option("--referer", default=None, help="Referer sent for every image without its own."),
    click.option(
        "--oss-region",
        default=None,
        help="Region of the bucket for oss://BUCKET/PREFIX inputs and oss://bucket/key lines "
        "(default IMGMOD_REGION for prefixes).",
    ),
    click.option(
        "--include",
        multiple=True,
        help="OSS prefixes and folders: keep only keys (paths relative to the folder) matching "
        "this glob (repeatable; replaces the default of image extensions). A glob without / "
        "matches the last segment.",
    ),
    click.option(
        "--exclude", multiple=True, help="OSS prefixes and folders: skip keys matching this glob."
    ),
    click.option(
        "--modified-since",
        default=None,
        help="OSS prefixes: skip objects last modified before this ISO 8601 time (UTC if no "
        "zone), without recording them.",
    ),
    click.option(
        "--since-job",
        default=None,
        help="OSS prefixes: skip objects last modified before job SINCE_JOB was created.",
    ),
    click.option(
        "--rescan",
        is_flag=True,
        help="Call the API for every image, even one with a stored answer from an earlier job "
        "(e.g. after the vendor updated its models).",
    ),
    click.option(
        "--reuse-urls",
        is_flag=True,
        help="Reuse stored answers for URLs too (same normalised URL); off by default, since "
        "the content behind a URL can change.",
    ),
    *budget.OPTIONS,  # --max-calls, --dry-run, --json
]


def input_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_input_options):
        fn = option(fn)
    return fn


def _waiting_note(waiting: int, settings: Settings) -> None:
    if waiting:
        click.echo(
            f"{waiting} references wait in the database for room in the broker "
            f"(IMGMOD_QUEUE_WINDOW={settings.queue_window}): workers publish them as they go",
            err=True,
        )


def _enqueue(
    env: CommandEnv,
    inputs: tuple[str, ...],
    job_name: str,
    service: str | None,
    info_type: str | None,
    referer: str | None,
    oss_region: str | None,
    listing_args: dict[str, Any],
    *,
    rescan: bool = False,
    reuse_urls: bool = False,
    max_calls: int | None = None,
    dry_run: bool = False,
    as_json: bool = False,
) -> tuple[Engine, Celery, store.Job]:
    """Check inputs, database and broker (in that order: nothing is written when one fails),
    open the job and enqueue the inputs into it. ``dry_run``: print the estimate and exit 0."""
    if dry_run:
        from worker.cli.dryrun import dry_run as estimate_run

        estimate_run(
            env,
            inputs,
            job_name,
            service,
            info_type,
            referer,
            oss_region,
            listing_args,
            rescan=rescan,
            reuse_urls=reuse_urls,
            as_json=as_json,
            max_calls=max_calls,
        )
        sys.exit(0)
    if as_json:
        raise CliError("--json goes with --dry-run")
    from worker.cli.listing import folder_filters_for, listing_for, oss_errors
    from worker.producer import eager_top_up, enqueue_inputs, open_job, reuse_scope
    from worker.vendor import InvalidParameter

    settings = env.settings
    check_inputs(
        inputs, folder_filters_for(inputs, listing_args["include"], listing_args["exclude"])
    )
    engine = open_database(settings)
    app = celery_app(settings)
    check_broker(app, settings)
    listing = listing_for(settings, engine, inputs, oss_region, **listing_args)
    try:
        job = open_job(
            engine, settings, job_name, service=service, info_type=info_type, referer=referer
        )
    except InvalidParameter as exc:
        raise CliError(f"{_OPTION_OF_FIELD.get(exc.field, exc.field)}: {exc.reason}") from None
    except ValueError as exc:  # the name is taken by a job of another service
        raise CliError(str(exc)) from None
    if max_calls is not None:  # before any row exists: the first claim sees the cap
        from worker.store.budgets import set_max_calls

        set_max_calls(engine, job.id, max_calls)
    with progress_bar("enqueue") as update, oss_errors():
        done = enqueue_inputs(
            engine,
            job,
            inputs,
            eager_top_up(engine, app, settings.queue_window, settings.batch.ids_per_message),
            oss_region=oss_region,
            referer=referer,
            stdin=sys.stdin.buffer,
            on_batch=lambda s: update(
                f"{s.lines} lines, {s.accepted} accepted, "
                f"{s.duplicates} duplicate, {s.rejected} rejected"
            ),
            listing=listing,
            reuse=reuse_scope(job, rescan=rescan, reuse_urls=reuse_urls),
            folder_filters=folder_filters_for(
                inputs, listing_args["include"], listing_args["exclude"]
            ),
        )
    summary = done.summary
    click.echo(
        f"job {job.name}: {summary.accepted} accepted, {summary.duplicates} duplicate, "
        f"{summary.rejected} rejected ({summary.lines} lines)"
        + (f"; {summary.skipped} listed objects skipped by the filters" if summary.skipped else "")
    )
    if summary.reused:
        click.echo(
            f"{summary.reused} reused a stored answer from an earlier job (done, no call; "
            "--rescan to call again)"
        )
    for sample in summary.rejected_samples:
        click.echo(f"  rejected {sample}", err=True)
    _waiting_note(done.waiting, settings)
    return engine, app, job


def _follow(
    env: CommandEnv,
    engine: Engine,
    app: Celery,
    job: store.Job,
    stall: float,
    timeout: float | None,
) -> int:
    from worker.watch import follow_job

    code = render_follow(job.name, follow_job(engine, app, env.settings, job, stall, timeout))
    if code == EXIT_BUDGET:
        budget.paused_note(engine, job)
    return code


@click.command()
@input_options
@pass_env
def enqueue(
    env: CommandEnv,
    inputs: tuple[str, ...],
    job_name: str,
    service: str | None,
    info_type: str | None,
    referer: str | None,
    oss_region: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    modified_since: str | None,
    since_job: str | None,
    rescan: bool,
    reuse_urls: bool,
    max_calls: int | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Read INPUT files (.txt, .csv, .jsonl, or - for stdin) or OSS prefixes
    (oss://BUCKET/PREFIX) into a job and queue them."""
    listing_args = dict(
        include=include, exclude=exclude, modified_since=modified_since, since_job=since_job
    )
    _enqueue(
        env,
        inputs,
        job_name,
        service,
        info_type,
        referer,
        oss_region,
        listing_args,
        rescan=rescan,
        reuse_urls=reuse_urls,
        max_calls=max_calls,
        dry_run=dry_run,
        as_json=as_json,
    )


_stall_option = click.option(
    "--stall-seconds",
    default=120.0,
    show_default=True,
    help="Re-enqueue open rows when nothing progresses for this long.",
)
_timeout_option = click.option(
    "--timeout", default=None, type=float, help="Give up waiting after this long."
)


@click.command()
@input_options
@_stall_option
@_timeout_option
@pass_env
def run(
    env: CommandEnv,
    inputs: tuple[str, ...],
    job_name: str,
    service: str | None,
    info_type: str | None,
    referer: str | None,
    oss_region: str | None,
    stall_seconds: float,
    timeout: float | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    modified_since: str | None,
    since_job: str | None,
    rescan: bool,
    reuse_urls: bool,
    max_calls: int | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Enqueue INPUT files or OSS prefixes, then wait for the job with live progress."""
    listing_args = dict(
        include=include, exclude=exclude, modified_since=modified_since, since_job=since_job
    )
    engine, app, job = _enqueue(
        env,
        inputs,
        job_name,
        service,
        info_type,
        referer,
        oss_region,
        listing_args,
        rescan=rescan,
        reuse_urls=reuse_urls,
        max_calls=max_calls,
        dry_run=dry_run,
        as_json=as_json,
    )
    sys.exit(_follow(env, engine, app, job, stall_seconds, timeout))


@click.command()
@click.argument("job_name")
@_stall_option
@_timeout_option
@pass_env
def wait(env: CommandEnv, job_name: str, stall_seconds: float, timeout: float | None) -> None:
    """Wait until every reference of JOB is done, failed or rejected."""
    engine = open_database(env.settings)
    job = find_job(engine, job_name)
    sys.exit(_follow(env, engine, celery_app(env.settings), job, stall_seconds, timeout))


@click.command()
@click.argument("job_name")
@click.option("--code", default=None, help="Only rows whose last code is this (e.g. 405).")
@pass_env
def retry(env: CommandEnv, job_name: str, code: str | None) -> None:
    """Re-run JOB's failed rows."""
    from worker.producer import eager_top_up
    from worker.requeue import retry_failed

    settings = env.settings
    engine = open_database(settings)
    job = find_job(engine, job_name)
    app = celery_app(settings)
    check_broker(app, settings)  # before the reset: a dead broker leaves the rows failed
    retried = retry_failed(
        engine,
        job,
        eager_top_up(engine, app, settings.queue_window, settings.batch.ids_per_message),
        code,
    )
    click.echo(f"re-queued {retried.count} failed references")
    _waiting_note(retried.waiting, settings)


COMMANDS = (enqueue, run, wait, budget.resume, retry)
